"""Tests of the tuning baselines (probekit.baselines) on tiny random models and synthetic sentences."""
from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
adapters = pytest.importorskip("adapters")

from probekit.activations.models import LoadedModel  # noqa: E402
from probekit.baselines import METHODS, BaselineConfig, run_baseline, run_baselines  # noqa: E402
from probekit.baselines import train as btrain  # noqa: E402
from probekit.baselines.encode import IGNORE, collate, drop_virtual, encode_split, insert_virtual, length_batches  # noqa: E402
from probekit.baselines.methods import ADAPTER_NAME, SoftPrompt, build_method  # noqa: E402
from probekit.baselines.train import ROW_KEYS, fit, word_metrics  # noqa: E402
from probekit.data.conllu_io import Sentence  # noqa: E402
from probekit.errors import ConfigError, ProbekitError  # noqa: E402
from probekit.tasks.base import get_task  # noqa: E402

torch.set_num_threads(1)

# ------------------------------------------------------------------------------------------ fixtures

_TEMPLATES = [
    (["The", "unbelievably", "tired", "dog", "has", "slept", "."], ["DET", "ADV", "ADJ", "NOUN", "AUX", "VERB", "PUNCT"]),
    (["She", "will", "reconsider", "everything", "tomorrow", "."], ["PRON", "AUX", "VERB", "PRON", "NOUN", "PUNCT"]),
    (["Cats", "chase", "mice", "."], ["NOUN", "VERB", "NOUN", "PUNCT"]),
    (["They", "were", "being", "watched", "carefully", "."], ["PRON", "AUX", "AUX", "VERB", "ADV", "PUNCT"]),
    (["Nobody", "knows", "why", "it", "is", "broken", "."], ["PRON", "VERB", "ADV", "PRON", "AUX", "ADJ", "PUNCT"]),
    (["Extraordinary", "weather", "can", "surprise", "anyone", "."], ["ADJ", "NOUN", "AUX", "VERB", "PRON", "PUNCT"]),
]


def make_sentences(n: int, offset: int = 0) -> list[Sentence]:
    out = []
    for i in range(n):
        words, upos = _TEMPLATES[(i + offset) % len(_TEMPLATES)]
        out.append(Sentence.from_words(list(words), upos=list(upos), sent_id=f"s{i + offset}"))
    return out


def n_aux_words(sents) -> int:
    return int((get_task("aux_verb").encode(sents) >= 0).sum())


def _load(folder):
    from probekit.activations.models import load_model

    return load_model(str(folder), device="cpu")


@pytest.fixture(scope="module")
def tiny_bert(tiny_bert_dir) -> LoadedModel:
    """Tiny random BERT (32 wide, 2 layers, 64 positions) with the real minilm WordPiece tokenizer (conftest)."""
    return _load(tiny_bert_dir)


@pytest.fixture(scope="module")
def tiny_llama(tiny_llama_dir) -> LoadedModel:
    """Tiny random Llama with a byte-level BPE tokenizer (conftest)."""
    return _load(tiny_llama_dir)


@pytest.fixture(scope="module")
def tiny_gpt2(tiny_gpt2_dir) -> LoadedModel:
    return _load(tiny_gpt2_dir)


QUICK = dict(epochs=1, batch_size=4, eval_batch_size=8, prompt_length=3, prefix_length=3, prefix_bottleneck=16,
             lora_r=4, adapter_reduction_factor=4)


def quick_config(**kw) -> BaselineConfig:
    return BaselineConfig(**{**QUICK, **kw})


def _run(method, loaded, *, task="aux_verb", n_train=8, **kw):
    info: dict = {}
    train, dev, test = make_sentences(n_train), make_sentences(4, 1), make_sentences(5, 2)
    rows = run_baseline(method=method, model_name=loaded.name, task=task, train=train, dev=dev, test=test, seed=0,
                        config=quick_config(**kw), device="cpu", experiment="t", loaded=loaded, info=info)
    return rows, info, (train, dev, test)


# ------------------------------------------------------------------------------------------ config

def test_config_defaults_and_precedence():
    cfg = BaselineConfig(lr=2e-4, per_method={"lora": {"lr": 1e-3, "epochs": 7}})
    assert cfg.resolved("lora").lr == 1e-3 and cfg.resolved("lora").epochs == 7
    assert cfg.resolved("adapter").lr == 2e-4  # global beats the method default
    plain = BaselineConfig()
    for m, spec in METHODS.items():
        assert plain.resolved(m).lr == spec.defaults["lr"]
    # prompt/prefix tuning need far larger learning rates than full fine-tuning
    assert plain.resolved("prompt_tuning").lr > plain.resolved("lora").lr > plain.resolved("finetune").lr
    assert plain.resolved("prefix_tuning").lr > plain.resolved("adapter").lr
    assert cfg.fingerprint("lora") != plain.fingerprint("lora")
    # a per-method override changes only that method's fingerprint
    assert BaselineConfig(per_method={"lora": {"lr": 1e-3}}).fingerprint("finetune") == plain.fingerprint("finetune")
    assert cfg.fingerprint("lora") == BaselineConfig(lr=2e-4, per_method={"lora": {"lr": 1e-3, "epochs": 7}}
                                                     ).fingerprint("lora")


def test_config_from_dict_rejects_unknown_keys_with_suggestion():
    cfg = BaselineConfig.from_dict({"methods": ["lora", "finetune"], "train_sentences": 50,
                                    "per_method": {"lora": {"lr": 1e-3}}})
    assert cfg.methods == ["lora", "finetune"] and cfg.train_sentences == 50
    with pytest.raises(ConfigError, match="Did you mean 'train_sentences'"):
        BaselineConfig.from_dict({"train_sentence": 10})
    with pytest.raises(ConfigError, match="Did you mean 'lora'"):
        BaselineConfig.from_dict({"methods": ["loraa"]})
    with pytest.raises(ConfigError, match="Did you mean 'prompt_tuning'"):
        BaselineConfig(per_method={"prompt_tunning": {"lr": 1.0}})
    with pytest.raises(ConfigError, match="Did you mean 'lr'"):
        BaselineConfig(per_method={"lora": {"lrr": 1.0}})


@pytest.mark.parametrize("bad", [{"lr": -1.0}, {"epochs": 0}, {"batch_size": 2.5}, {"patience": -1},
                                 {"select_metric": "f1"}, {"lora_matrices": ["q", "x"]}, {"word_pooling": "mean"},
                                 {"adapter_reduction_factor": 0.5}, {"per_method": {"lora": {"epochs": 0}}},
                                 {"methods": []}, {"train_sentences": 0}])
def test_config_validation(bad):
    with pytest.raises(ConfigError):
        BaselineConfig(**bad)


def test_help_lists_every_field():
    text = BaselineConfig.help()
    for name in ("train_sentences", "lora_r", "per_method", "prompt_length"):
        assert name in text


# ------------------------------------------------------------------------------------------ encoding

def test_labels_on_first_subword_for_encoders(tiny_bert):
    from probekit.activations.align import align_batch

    bert_tokenizer = tiny_bert.tokenizer
    sents = make_sentences(6)
    task = get_task("aux_verb")
    enc = encode_split(sents, task, bert_tokenizer, pooling="first", max_length=64)
    aligned = align_batch(bert_tokenizer, sents)
    assert enc.n_words == n_aux_words(sents) and enc.n_windowed == 0
    labels = task.encode(sents)
    offs = np.cumsum([0] + [len(s) for s in sents])
    multi = 0
    for seg in enc.segments:
        assert seg.input_ids[0] == bert_tokenizer.cls_token_id and seg.input_ids[-1] == bert_tokenizer.sep_token_id
        positions = [i for i, lab in enumerate(seg.labels) if lab != IGNORE]
        assert len(positions) == len(seg.words)
        for p, (si, wi) in zip(positions, seg.words):
            toks = aligned[si].word_tokens[wi]
            multi += len(toks) > 1
            assert p == 1 + toks[0]  # [CLS] + first subword
            assert seg.labels[p] == labels[offs[si] + wi]
    assert multi > 0  # the test sentences do contain multi-subword words


def test_labels_on_last_subword_for_decoders(tiny_llama):
    from probekit.activations.align import align_batch, special_layout

    bpe_tokenizer = tiny_llama.tokenizer
    sents = make_sentences(6)
    enc = encode_split(sents, get_task("aux_verb"), bpe_tokenizer, pooling="last", max_length=64, prepend_bos=True,
                       causal=True)
    assert special_layout(bpe_tokenizer, prepend_bos=True)[0] == [bpe_tokenizer.bos_token_id]
    aligned = align_batch(bpe_tokenizer, sents)
    multi = 0
    for seg in enc.segments:
        assert seg.input_ids[0] == bpe_tokenizer.bos_token_id
        positions = [i for i, lab in enumerate(seg.labels) if lab != IGNORE]
        for p, (si, wi) in zip(positions, seg.words):
            toks = aligned[si].word_tokens[wi]
            multi += len(toks) > 1
            assert p == 1 + toks[-1]
    assert multi > 0


@pytest.mark.parametrize("causal", [False, True])
def test_long_sentences_are_windowed_not_truncated(tiny_bert, causal):
    from probekit.activations.align import align_batch

    bert_tokenizer = tiny_bert.tokenizer
    long = Sentence.from_words(["word"] * 3 + ["extraordinarily", "has", "been", "seen"] * 6 + ["."],
                               upos=["NOUN"] * 3 + ["ADV", "AUX", "AUX", "VERB"] * 6 + ["PUNCT"])
    sents = [long] + make_sentences(2)
    task = get_task("aux_verb")
    enc = encode_split(sents, task, bert_tokenizer, pooling="first", max_length=12, reserve=2, causal=causal)
    aligned = align_batch(bert_tokenizer, sents)
    assert aligned[0].n_tokens > 30
    assert enc.n_windowed == sum(a.n_tokens > 12 - 2 - 2 for a in aligned) >= 1
    assert all(len(s) <= 12 - 2 for s in enc.segments)
    seen = [w for s in enc.segments for w in s.words]
    assert len(seen) == len(set(seen)) == n_aux_words(sents)  # each labelled word once
    labels = task.encode(sents)
    offs = np.cumsum([0] + [len(s) for s in sents])
    for seg in enc.segments:
        positions = [i for i, lab in enumerate(seg.labels) if lab != IGNORE]
        for p, (si, wi) in zip(positions, seg.words):
            assert seg.input_ids[p] == aligned[si].token_ids[aligned[si].word_tokens[wi][0]]
            assert seg.labels[p] == labels[offs[si] + wi]


def test_length_batches_cover_everything_once():
    lengths = [5, 3, 9, 3, 7, 1, 2]
    rng = np.random.default_rng(0)
    for r in (None, rng):
        b = length_batches(lengths, 3, rng=r)
        assert sorted(i for x in b for i in x) == list(range(len(lengths)))
        assert all(len(x) <= 3 for x in b)
    ordered = length_batches(lengths, 3)
    assert [lengths[i] for x in ordered for i in x] == sorted(lengths)


def test_word_metrics():
    gold = np.array([0, 0, 1, 1, 0, 1])
    pred = np.array([0, 1, 1, 0, 0, 1])
    m = word_metrics(gold, pred, 2)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["pos_f1"] == pytest.approx(2 / 3)  # precision 2/3, recall 2/3
    assert m["macro_f1"] == pytest.approx(2 / 3)
    assert "pos_f1" not in word_metrics(np.array([0, 1, 2]), np.array([0, 1, 1]), 3)


# ------------------------------------------------------------------------------------------ the prompt-tuning shift

def test_insert_and_drop_virtual_round_trip():
    labels = torch.tensor([[-100, 1, 0, -100], [-100, 0, -100, -100]])
    ext = insert_virtual(labels, 3, 1, -100)
    assert ext.shape == (2, 7)
    assert (ext[:, 1:4] == -100).all()
    assert torch.equal(ext[:, :1], labels[:, :1]) and torch.equal(ext[:, 4:], labels[:, 1:])
    assert torch.equal(drop_virtual(ext, 3, 1), labels)
    x = torch.randn(2, 4, 5)
    assert torch.equal(drop_virtual(insert_virtual(x, 2, 0, 0.0), 2, 0), x)


def test_adapters_prompt_tuning_shift_is_fixed(tiny_bert):
    """adapters' prompt tuning returns more positions than inputs: plain token-classification loss fails
    with a batch-size mismatch; with the virtual positions labelled -100 it works and the predictions
    that remain line up with the real tokens."""
    cfg = quick_config().resolved("prompt_tuning")
    model = copy.deepcopy(tiny_bert.model)
    built = build_method("prompt_tuning", model, hidden_size=32, n_labels=2, cfg=cfg, n_prefix_specials=1)
    tagger = built.tagger
    assert built.backend.startswith("adapters") and tagger.n_virtual == 3 and tagger.virtual_at == 1
    enc = encode_split(make_sentences(3), get_task("aux_verb"), tiny_bert.tokenizer, pooling="first", max_length=64)
    ids, mask, labels = collate(enc.segments, 0)
    logits = tagger(ids, mask)
    assert logits.shape[1] == ids.shape[1] + 3
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=-100)
    with pytest.raises(ValueError, match="Expected input batch_size"):
        loss_fn(logits.reshape(-1, 2), labels.reshape(-1))  # the known bug, reproduced
    ext = insert_virtual(labels, 3, 1, -100)
    loss = loss_fn(logits.reshape(-1, 2), ext.reshape(-1))
    assert torch.isfinite(loss)
    kept = drop_virtual(logits, 3, 1)
    assert kept.shape[:2] == ids.shape
    assert torch.equal(kept[labels != -100], logits[ext != -100])
    # the bookkeeping matches where adapters really puts the prompt: feed marker vectors through its layer
    layer = model.base_model.prompt_tuning.prompt_tunings[ADAPTER_NAME]
    markers = torch.arange(2 * 6 * 32, dtype=torch.float32).reshape(2, 6, 32)
    out, n = layer(markers)
    assert n == 3 and torch.equal(drop_virtual(out, 3, 1), markers)
    assert torch.equal(out[0, 1:4], layer.prompt_embedding.weight)


def test_hand_written_soft_prompt_positions():
    """SoftPrompt puts its vectors at `at` and the real tokens' embeddings, in order, around them."""

    class Echo(torch.nn.Module):  # a "model" whose output is its input embeddings
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(50, 8)

        def get_input_embeddings(self):
            return self.emb

        def forward(self, inputs_embeds, attention_mask):
            assert attention_mask.shape == inputs_embeds.shape[:2]
            self.mask = attention_mask
            return type("O", (), {"last_hidden_state": inputs_embeds})

    echo = Echo()
    sp = SoftPrompt(echo, 4, 1)
    ids = torch.tensor([[1, 5, 6, 0], [1, 7, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    out = sp(ids, mask)
    assert out.shape == (2, 8, 8)
    assert torch.equal(drop_virtual(out, 4, 1), echo.emb(ids))
    assert torch.equal(out[1, 1:5], sp.prompt)
    assert torch.equal(echo.mask, insert_virtual(mask, 4, 1, 1))


# ------------------------------------------------------------------------------------------ parameter counts

def test_parameter_counts_match_the_library(tiny_bert):
    counts = {}
    for method in METHODS:
        cfg = quick_config().resolved(method)
        built = build_method(method, copy.deepcopy(tiny_bert.model), hidden_size=32, n_labels=2, cfg=cfg,
                             n_prefix_specials=1)
        head = 32 * 2 + 2
        counts[method] = built
        assert built.trainable_params == sum(p.numel() for p in built.tagger.parameters() if p.requires_grad)
        if method == "finetune":  # every weight but BERT's pooler, which the head does not read
            pooler = sum(p.numel() for p in built.tagger.encoder.pooler.parameters())
            assert pooler > 0 and built.trainable_params == built.total_params - pooler
            assert built.library_params is None
        else:
            assert built.library_params is not None
            assert built.trainable_params - head == built.library_params, method
            assert 0 < built.trainable_fraction < 1
    # LoRA: r * (d_in + d_out) per adapted matrix (q and v) per layer
    assert counts["lora"].library_params == 2 * 2 * 4 * (32 + 32)
    # flat prefix tuning: a key and a value vector per prefix position per layer
    assert counts["prefix_tuning"].library_params == 3 * 2 * 2 * 32
    # prompt tuning: one d_model vector per virtual token
    assert counts["prompt_tuning"].library_params == 3 * 32
    # Houlsby adapters: two bottleneck adapters per layer (down d->d/4 and up d/4->d, with biases)
    bottleneck = 32 // 4
    assert counts["adapter"].library_params == 2 * 2 * (32 * bottleneck + bottleneck + bottleneck * 32 + 32)
    assert counts["prompt_tuning"].trainable_params < counts["lora"].trainable_params


# ------------------------------------------------------------------------------------------ training runs

def _check_rows(rows, *, method, pooling, n_train_words, binary=True):
    assert rows, "no rows"
    for r in rows:
        assert tuple(r) == ROW_KEYS
        assert r["method"] == method and r["probe"] == "" and r["layer"] == -1 and r["control"] is False
        assert r["pooling"] == pooling and r["level"] == "word" and r["task"] == "aux_verb"
        assert 0.0 <= r["value"] <= 1.0
        assert 0 < r["trainable_fraction"] <= 1.0 and r["trainable_params"] > 0
        assert r["train_size"] == n_train_words and r["train_seconds"] > 0
    metrics = {(r["split"], r["metric"]) for r in rows}
    expected = {"accuracy", "macro_f1"} | ({"pos_f1"} if binary else set())
    assert metrics == {(s, m) for s in ("test", "dev") for m in expected}


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_trains_on_tiny_bert(tiny_bert, method):
    rows, info, (train, _dev, test) = _run(method, tiny_bert)
    _check_rows(rows, method=method, pooling="first", n_train_words=n_aux_words(train))
    assert info["test_words"] == n_aux_words(test)  # every labelled test word scored, none from virtual tokens
    assert info["epochs_run"] == 1 and math.isfinite(info["history"][0]["loss"])
    if method == "finetune":
        assert 0.99 < rows[0]["trainable_fraction"] < 1.0  # all but the pooler


def test_train_subsample_and_non_binary_task(tiny_bert):
    rows, info, (train, *_rest) = _run("lora", tiny_bert, task="upos", n_train=12, train_sentences=5)
    assert info["train_sentences"] == 5
    assert rows[0]["train_size"] < sum(len(s) for s in train)
    assert {r["metric"] for r in rows} == {"accuracy", "macro_f1"}  # no pos_f1 for 17 classes


def test_one_sampling_rule_for_the_experiment_and_the_baselines(tmp_path, data_dir):
    """train_sentences is drawn by data.sampling.sample_sentences for both: the experiment's fixed sample (seed
    TRAIN_SAMPLE_SEED) and the baselines' per-seed sample are the very samples the two older copies drew."""
    from probekit.config import ExperimentConfig
    from probekit.data.sampling import sample_sentences
    from probekit.runner.data import TRAIN_SAMPLE_SEED, load_data

    def old_draw(n_total, n, seed):  # the formula both copies used before they were merged
        return list(np.sort(np.random.default_rng(seed).choice(n_total, n, replace=False)))

    cfg = ExperimentConfig(name="s", models=["minilm"], tasks=["aux_verb"], data_dir=str(data_dir),
                           limit={"train": 60, "dev": 5, "test": 5}, results_dir=str(tmp_path))
    full = load_data(cfg)[0]["train"]
    sampled = load_data(cfg.replace(train_sentences=25))[0]["train"]
    assert sampled == sample_sentences(full, 25, TRAIN_SAMPLE_SEED)
    assert [s.sent_id for s in sampled] == [full[i].sent_id for i in old_draw(len(full), 25, TRAIN_SAMPLE_SEED)]
    for seed in (0, 3):
        assert btrain.subsample(full, 25, seed) == [full[i] for i in old_draw(len(full), 25, [seed, 7919])]
    assert sample_sentences(full, None, 0) == full and sample_sentences(full, 60, 0) == full


def test_lightweight_training_changes_only_the_method_weights(tiny_bert):
    cfg = quick_config(epochs=2, lr=5e-2).resolved("lora")
    model = copy.deepcopy(tiny_bert.model)
    built = build_method("lora", model, hidden_size=32, n_labels=2, cfg=cfg, n_prefix_specials=1)
    before = {n: p.detach().clone() for n, p in built.tagger.named_parameters()}
    task = get_task("aux_verb")
    kw = dict(pooling="first", max_length=64)
    tr = encode_split(make_sentences(8), task, tiny_bert.tokenizer, **kw)
    dv = encode_split(make_sentences(3, 1), task, tiny_bert.tokenizer, **kw)
    res = fit(built.tagger, tr, dv, cfg=cfg, n_labels=2, pad_id=0, device="cpu", seed=0)
    assert res["epochs_run"] >= 1
    changed = {n for n, p in built.tagger.named_parameters() if not torch.equal(p, before[n])}
    assert changed, "nothing was trained"
    assert all("lora" in n or n.startswith("head.") for n in changed), changed
    assert any("lora" in n for n in changed)


def test_early_stopping_restores_best_epoch(tiny_bert):
    torch.manual_seed(3)  # the adapter's initial weights: with this seed the last epoch (4) is worse than epoch 3
    calls = []
    cfg = quick_config(epochs=6, patience=1, lr=1e-1).resolved("adapter")
    built = build_method("adapter", copy.deepcopy(tiny_bert.model), hidden_size=32, n_labels=2, cfg=cfg,
                         n_prefix_specials=1)
    task = get_task("aux_verb")
    tr = encode_split(make_sentences(8), task, tiny_bert.tokenizer, pooling="first", max_length=64)
    dv = encode_split(make_sentences(4, 1), task, tiny_bert.tokenizer, pooling="first", max_length=64)
    res = fit(built.tagger, tr, dv, cfg=cfg, n_labels=2, pad_id=0, device="cpu", seed=0,
              on_epoch=lambda e, loss, dev: calls.append(dev["macro_f1"]))
    best = int(np.argmax(calls)) + 1
    assert res["best_epoch"] == best and res["dev"]["macro_f1"] == max(calls)
    if res["epochs_run"] < 6:
        assert res["epochs_run"] == best + 1  # stopped after one bad epoch
    gold, pred, _ = btrain.predict(built.tagger, dv, batch_size=8, pad_id=0, device="cpu")
    assert word_metrics(gold, pred, 2)["macro_f1"] == pytest.approx(max(calls))  # best weights restored
    assert calls[-1] < max(calls), "the restore path was not exercised: pick another seed"


@pytest.mark.parametrize("method", ["lora", "prompt_tuning", "prefix_tuning", "adapter"])
def test_decoder_methods(tiny_llama, method):
    rows, info, (train, _dev, test) = _run(method, tiny_llama)
    _check_rows(rows, method=method, pooling="last", n_train_words=n_aux_words(train))
    assert info["test_words"] == n_aux_words(test)
    if method == "prompt_tuning":
        assert info["backend"] == "hand-written soft prompt"  # adapters 1.3.0 has no prompt tuning for Llama
    else:
        assert info["backend"].startswith("adapters")
        assert info["trainable_params"] - (32 * 2 + 2) == info["library_params"]


@pytest.mark.parametrize("which", ["tiny_llama", "tiny_gpt2", "tiny_bert"])
def test_prefix_tuning_is_active_and_decoders_stay_causal(request, which):
    """adapters 1.3.0 masks its prefixes out under SDPA for Llama/GPT-2 (gradients all zero); the baseline
    switches those models to eager attention. The prefixes must change the output and get gradients, and a
    decoder must still not look ahead."""
    loaded = request.getfixturevalue(which)
    cfg = quick_config().resolved("prefix_tuning")
    built = build_method("prefix_tuning", copy.deepcopy(loaded.model), hidden_size=32, n_labels=2, cfg=cfg,
                         n_prefix_specials=1)
    tagger = built.tagger.eval()
    ids = torch.tensor([[5, 50, 60, 70, 80]])
    mask = torch.ones_like(ids)
    hidden = tagger.hidden(ids, mask)
    hidden.pow(2).sum().backward()
    grads = [p.grad for n, p in tagger.named_parameters() if "prefix" in n and p.requires_grad]
    assert grads and any(g is not None and g.abs().sum() > 0 for g in grads)
    tagger.encoder.set_active_adapters(None)
    with torch.no_grad():
        plain = tagger.hidden(ids, mask)
    assert not torch.allclose(plain, hidden)  # the prefixes change the output
    tagger.encoder.set_active_adapters(ADAPTER_NAME)
    if loaded.kind == "decoder":
        assert built.notes.get("attention", "").startswith("eager")
        changed = ids.clone()
        changed[0, 3] = 99
        with torch.no_grad():
            h1, h2 = tagger.hidden(ids, mask), tagger.hidden(changed, mask)
        assert torch.allclose(h1[0, :3], h2[0, :3], atol=1e-6) and not torch.allclose(h1[0, 3], h2[0, 3])


def test_inactive_method_is_detected(tiny_bert):
    from probekit.baselines.methods import check_reaches_output
    from probekit.errors import ModelError

    cfg = quick_config().resolved("lora")
    built = build_method("lora", copy.deepcopy(tiny_bert.model), hidden_size=32, n_labels=2, cfg=cfg,
                         n_prefix_specials=1)
    check_reaches_output(built.tagger, "lora")
    built.tagger.encoder.set_active_adapters(None)  # LoRA weights exist but are not used
    with pytest.raises(ModelError, match="no effect"):
        check_reaches_output(built.tagger, "lora")


def test_gpt2_prompt_tuning_and_lora(tiny_gpt2):
    loaded = tiny_gpt2
    for method in ("prompt_tuning", "lora"):
        rows, info, (train, _d, test) = _run(method, loaded)
        _check_rows(rows, method=method, pooling="last", n_train_words=n_aux_words(train))
        assert info["test_words"] == n_aux_words(test)


# ------------------------------------------------------------------------------------------ resume

def test_run_baselines_resumes_per_run(tmp_path, monkeypatch, tiny_bert):
    calls = []

    def fake_run(**kw):
        calls.append((kw["method"], kw["task"].name, kw["seed"]))
        return [{k: None for k in ROW_KEYS} | {"method": kw["method"], "seed": kw["seed"], "value": 0.5}]

    monkeypatch.setattr(btrain, "run_baseline", fake_run)
    monkeypatch.setattr(btrain, "load_model", lambda name, device=None: tiny_bert)
    weights = {"hash": "a"}
    monkeypatch.setattr(btrain, "fingerprint", lambda name: {"name": name, "weights_hash": weights["hash"]})
    sents = make_sentences(3)
    kw = dict(models=["tiny"], tasks=["aux_verb"], seeds=[0, 1], train=sents, dev=sents, test=sents,
              results_dir=tmp_path, device="cpu")
    cfg = BaselineConfig(methods=["lora", "adapter"])
    rows = run_baselines(config=cfg, **kw)
    assert len(calls) == 4 and len(rows) == 4
    files = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert files == sorted(f"baseline-tiny-{m}-aux_verb-seed{s}.json" for m in ("lora", "adapter") for s in (0, 1))
    stored = json.loads((tmp_path / "runs" / "baseline-tiny-lora-aux_verb-seed1.json").read_text())
    assert stored["rows"][0]["seed"] == 1
    # second call: nothing is run again, rows come back from the files
    rows2 = run_baselines(config=cfg, **kw)
    assert len(calls) == 4 and rows2 == rows
    # a lost file is redone; changed LoRA settings redo only the LoRA runs
    (tmp_path / "runs" / "baseline-tiny-adapter-aux_verb-seed0.json").unlink()
    run_baselines(config=BaselineConfig(methods=["lora", "adapter"], lora_r=2), **kw)
    assert sorted(calls[4:]) == [("adapter", "aux_verb", 0), ("lora", "aux_verb", 0), ("lora", "aux_verb", 1)]
    # an explicit done set skips
    run_baselines(config=BaselineConfig(methods=["lora"], lora_r=3), done={("tiny", "lora", "aux_verb", 0)}, **kw)
    assert calls[-1] == ("lora", "aux_verb", 1) and len(calls) == 8
    # other weights, or other sentences of the same count, redo every run; the task version too
    run_baselines(config=BaselineConfig(methods=["lora"], lora_r=3), **kw)  # seed 0 was skipped by `done`
    del calls[:]
    run_baselines(config=BaselineConfig(methods=["lora"], lora_r=3), **kw)
    assert calls == []
    weights["hash"] = "b"
    run_baselines(config=BaselineConfig(methods=["lora"], lora_r=3), **kw)
    assert len(calls) == 2
    other = make_sentences(3, offset=1)
    assert len(other) == len(sents) and other != sents
    run_baselines(config=BaselineConfig(methods=["lora"], lora_r=3), **{**kw, "test": other})
    assert len(calls) == 4
    task = copy.copy(get_task("aux_verb"))
    task.version += 1
    monkeypatch.setattr(btrain, "get_task", lambda name: task)
    run_baselines(config=BaselineConfig(methods=["lora"], lora_r=3), **{**kw, "test": other})
    assert len(calls) == 6


def test_unknown_method_is_a_probekit_error(tiny_bert):
    with pytest.raises(ProbekitError, match="Did you mean 'finetune'"):
        run_baseline(method="fine_tune", model_name="x", task="aux_verb", train=[], dev=[], test=[], seed=0,
                     loaded=tiny_bert)


def test_sentence_task_rejected(tiny_bert):
    class SentTask:
        name, level, labels = "s", "sentence", ["a", "b"]

    with pytest.raises(ProbekitError, match="word-level"):
        encode_split(make_sentences(2), SentTask(), tiny_bert.tokenizer, pooling="first", max_length=64)


# ------------------------------------------------------------------------------------------ real packaged models

@pytest.mark.slow
def test_minilm_lora_learns_aux_verb():
    from probekit.activations.models import load_model

    loaded = load_model("minilm", device="cpu")
    train, dev = make_sentences(24), make_sentences(6, 3)
    rows = run_baseline(method="lora", model_name="minilm", task="aux_verb", train=train, dev=dev, test=dev, seed=0,
                        config=BaselineConfig(epochs=4, batch_size=8, lr=3e-3), device="cpu", loaded=loaded)
    test = {r["metric"]: r["value"] for r in rows if r["split"] == "test"}
    majority = 1 - n_aux_words(dev) / sum(len(s) for s in dev)
    assert test["accuracy"] > majority  # learned more than "never aux"
    frac = rows[0]["trainable_fraction"]
    assert 0.003 < frac < 0.02


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lora", "adapter", "prefix_tuning", "prompt_tuning"])
def test_smollm2_supported(method):
    from probekit.activations.models import load_model

    loaded = load_model("smollm2-135m", device="cpu")
    cfg = BaselineConfig(prompt_length=2, prefix_length=2).resolved(method)
    built = build_method(method, copy.deepcopy(loaded.model), hidden_size=loaded.hidden_size, n_labels=2, cfg=cfg,
                         n_prefix_specials=1)
    enc = encode_split(make_sentences(2), get_task("aux_verb"), loaded.tokenizer, pooling="last", max_length=64,
                       prepend_bos=True, causal=True, reserve=built.tagger.n_virtual)
    ids, mask, labels = collate(enc.segments, loaded.tokenizer.pad_token_id)
    logits = built.tagger(ids, mask)
    ext = insert_virtual(labels, built.tagger.n_virtual, built.tagger.virtual_at, -100)
    torch.nn.functional.cross_entropy(logits.reshape(-1, 2), ext.reshape(-1), ignore_index=-100).backward()
    grads = [p.grad for n, p in built.tagger.named_parameters() if p.requires_grad and not n.startswith("head.")]
    assert grads and all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    assert built.trainable_fraction < 0.05


# ------------------------------------------------------------------------------------------ configs and runner

@pytest.mark.parametrize("name", ["baselines.yaml", "baselines_decoder.yaml"])
def test_shipped_configs_are_valid(name):
    from pathlib import Path

    from probekit.config import ExperimentConfig

    exp = ExperimentConfig.from_yaml(Path(__file__).resolve().parents[1] / "configs" / name)
    cfg = BaselineConfig.from_dict(exp.baselines)
    assert set(cfg.methods) == set(METHODS)
    assert set(exp.tasks) == {"aux_verb", "subject"}
    for m in cfg.methods:
        assert cfg.resolved(m).lr > 0


def test_baselines_section_runs_with_the_experiment(tmp_path, tiny_bert_dir, monkeypatch):
    """`probekit run` on a config with a baselines section: every method x seed is run once, kept as a run record,
    and its rows join results.csv; a rerun trains nothing."""
    from probekit.config import ExperimentConfig
    from probekit.data.conllu_io import write_conllu
    from probekit.runner.experiment import run_experiment

    files = {}
    for role, (n, off) in {"train": (8, 0), "dev": (4, 1), "test": (5, 2)}.items():
        files[role] = str(tmp_path / f"{role}.conllu")
        write_conllu(make_sentences(n, off), files[role])
    cfg = ExperimentConfig.from_dict(
        {"name": "tiny", "models": [str(tiny_bert_dir)], "dataset": "conllu", "files": files,
         "tasks": ["aux_verb"], "seeds": [0, 1], "device": "cpu", "results_dir": str(tmp_path / "res"),
         "store_dir": str(tmp_path / "stores"), "baselines": {**QUICK, "methods": ["lora", "prompt_tuning"]}})
    table = run_experiment(cfg, progress=False).table
    base = table[table.method.isin(["lora", "prompt_tuning"])] if "method" in table else table.iloc[:0]
    assert len({(m, s) for m, s in zip(base.method, base.seed)}) == 4
    runs = tmp_path / "res" / "tiny" / "baselines" / "runs"
    assert len(list(runs.glob("*.json"))) == 4
    calls = []
    orig = btrain.fit
    monkeypatch.setattr(btrain, "fit", lambda *a, **k: calls.append(1) or orig(*a, **k))
    run_experiment(cfg, progress=False)
    assert calls == []


def test_probe_reference_uses_the_same_training_subset(tmp_path, tiny_bert):
    from probekit.baselines.compare import probe_reference
    from probekit.baselines.train import subsample

    train, dev, test = make_sentences(10), make_sentences(4, 1), make_sentences(5, 2)
    ref = probe_reference(model_name=tiny_bert.name, task="aux_verb", train=train, dev=dev, test=test, seed=3,
                          train_sentences=4, device="cpu", store_root=tmp_path, loaded=tiny_bert)
    assert ref["train_sentences"] == 4
    assert ref["train_words"] == n_aux_words(subsample(train, 4, 3))
    assert [r["layer"] for r in ref["layers"]] == list(range(tiny_bert.num_layers + 1))
    assert ref["best"]["dev_accuracy"] == max(r["dev_accuracy"] for r in ref["layers"])
    assert set(ref["best"]["test"]) == {"accuracy", "macro_f1", "pos_f1"}


def test_words_that_share_a_subword_are_each_scored(tiny_bert):
    # a zero-width space is a word of its own that the tokenizer drops: it borrows a neighbour's subword, as the
    # probes read it, and both words must be scored (this crashed with an IndexError)
    s = Sentence.from_words(["She", "\u200b", "has", "left", "."], upos=["PRON", "X", "AUX", "VERB", "PUNCT"],
                            sent_id="zw")
    task = get_task("aux_verb")
    enc = encode_split([s] + make_sentences(2), task, tiny_bert.tokenizer, pooling="first", max_length=64)
    seg = enc.segments[0]
    assert seg.words == [(0, i) for i in range(5)] and len(set(seg.positions)) == 4
    assert seg.word_labels == task.encode([s]).tolist()
    cfg = quick_config().resolved("adapter")
    built = build_method("adapter", copy.deepcopy(tiny_bert.model), hidden_size=32, n_labels=2, cfg=cfg,
                         n_prefix_specials=1)
    gold, pred, where = btrain.predict(built.tagger, enc, batch_size=8, pad_id=0, device="cpu")
    assert len(gold) == len(pred) == len(where) == enc.n_words == int((task.encode(enc_sents := [s] + make_sentences(2)) >= 0).sum())
    assert where == sorted(where) and gold.tolist() == task.encode(enc_sents).tolist()
    shared = [i for i in range(5) if seg.positions.count(seg.positions[i]) > 1]
    assert len(shared) == 2 and pred[shared[0]] == pred[shared[1]]
