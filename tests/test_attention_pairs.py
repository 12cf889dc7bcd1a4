"""Attention weights as pair features (Clark et al. 2019): word-level attention (sum over the subwords a word is
attended as, mean over the subwords it attends from), the candidate features, the attention-only head probe and the
relations runner's `features: [hidden, attention]`."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import MINI_CONLLU

from probekit.activations.attention import WordAttention, word_attention, word_level
from probekit.activations.extract import Extractor
from probekit.activations.models import load_model
from probekit.config import ExperimentConfig
from probekit.errors import ConfigError
from probekit.probing.attention_pairs import arc_candidates, attention_pair_features, fit_attention_arcs
from probekit.probing.pairs import ArcTargets
from probekit.runner import data as rd
from probekit.runner import relations as rel
from probekit.tasks.base import RelationItems

pytestmark = pytest.mark.usefixtures("one_thread")


def test_word_level_by_hand():
    # tokens t0 t1 | t2: word 0 is split in two subwords, word 1 is one
    A = np.array([[0.5, 0.2, 0.3],
                  [0.1, 0.1, 0.8],
                  [0.4, 0.4, 0.2]], dtype=np.float32)
    W = word_level(A, [[0, 1], [2]])
    # from word 0: mean of rows t0, t1; to word 0: sum of columns t0, t1
    expected = np.array([[(0.7 + 0.2) / 2, (0.3 + 0.8) / 2],
                         [0.8, 0.2]])
    np.testing.assert_allclose(W, expected, rtol=1e-6)
    np.testing.assert_allclose(W.sum(-1), 1.0, rtol=1e-6)  # rows still sum to one


def _manual(folder, lm, ex, sentence):
    """The word-level attention of one sentence computed by hand from the attention output of the HF model loaded
    on its own with the eager attention (one sentence, no batching, loops over words and subwords)."""
    import torch
    from transformers import AutoModel

    from probekit.activations.align import align_batch

    a = align_batch(lm.tokenizer, [sentence])[0]
    ids = ex.prefix + a.token_ids + ex.suffix
    model = AutoModel.from_pretrained(folder, attn_implementation="eager").eval()
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), output_attentions=True)
    att = torch.stack(out.attentions, 1)[0].numpy()  # [L, H, len, len]
    p, T = len(ex.prefix), a.n_tokens
    in_word = {t for toks in a.word_tokens for t in toks}
    # the other tokens: the special ones and the subwords of no word (a lone space token of a byte-level BPE)
    special = list(range(p)) + [p + t for t in range(T) if t not in in_word] + list(range(p + T, len(ids)))
    n = len(a.word_tokens)
    L, H = att.shape[:2]
    maps = np.zeros((L, H, n, n))
    to_sp = np.zeros((L, H, n))
    from_sp = np.zeros((L, H, n))
    for i, ti in enumerate(a.word_tokens):
        for j, tj in enumerate(a.word_tokens):
            # from word i: mean over its subwords' rows; to word j: sum over its subwords' columns
            maps[:, :, i, j] = np.mean([sum(att[:, :, p + t, p + u] for u in tj) for t in ti], axis=0)
        to_sp[:, :, i] = np.mean([att[:, :, p + t][:, :, special].sum(-1) for t in ti], axis=0)
        from_sp[:, :, i] = np.mean([sum(att[:, :, s, p + u] for u in ti) for s in special], axis=0)
    return a, maps, to_sp, from_sp


@pytest.mark.parametrize("which", ["tiny_bert_dir", "tiny_llama_dir"])
def test_word_attention_equals_the_manual_sum_and_mean(request, which, mini_sents):
    folder = request.getfixturevalue(which)
    lm = load_model(str(folder), device="cpu")
    ex = Extractor(lm)
    sent = next(s for s in mini_sents if s.sent_id == "mini-01")  # I don't think they're gonna win.
    got = word_attention(ex, mini_sents)  # batched with the other sentences (padding masked)
    a, maps, to_sp, from_sp = _manual(folder, lm, ex, sent)
    assert sum(len(t) > 1 for t in a.word_tokens) >= 3  # split words: the sum and the mean do something
    w = got[mini_sents.index(sent)]
    assert w.maps.shape == (lm.num_layers, lm.model.config.num_attention_heads, len(sent), len(sent))
    np.testing.assert_allclose(w.maps, maps, atol=2e-5)
    np.testing.assert_allclose(w.to_other, to_sp, atol=2e-5)
    np.testing.assert_allclose(w.from_other, from_sp, atol=2e-5)
    for w in got:  # attention from each word, to the words and the other tokens, sums to one
        np.testing.assert_allclose(w.maps.sum(-1) + w.to_other, 1.0, atol=1e-5)
    if lm.kind == "decoder":  # left context only: no attention to a later word; BOS sees no word
        assert np.abs(np.triu(w.maps, 1)).max() == 0 and np.abs(w.from_other).max() == 0


def test_long_sentence_windows(tiny_bert_dir, mini_sents):
    lm = load_model(str(tiny_bert_dir), device="cpu")
    ex = Extractor(lm, max_length=8)  # 6 content subwords per window
    sent = next(s for s in mini_sents if s.sent_id == "mini-16")  # 19 subwords: several windows
    (w,) = word_attention(ex, [sent])
    np.testing.assert_allclose(w.maps.sum(-1) + w.to_other, 1.0, atol=1e-5)
    # the first and last words never share a window: the model computed no attention between them
    assert w.maps[:, :, 0, -1].max() == 0 and w.maps[:, :, -1, 0].max() == 0


def _toy_attention(n_words=(3, 2)):
    rng = np.random.default_rng(0)
    out = []
    for n in n_words:
        m = rng.random((2, 3, n, n)).astype(np.float32)  # 2 blocks, 3 heads
        out.append(WordAttention(maps=m, to_other=rng.random((2, 3, n)).astype(np.float32),
                                 from_other=rng.random((2, 3, n)).astype(np.float32)))
    return out


def test_candidate_and_pair_features_by_hand():
    att = _toy_attention()
    targets = ArcTargets(offsets=np.array([0, 3, 5]), heads=[np.array([1, 1, -1]), np.array([1, 1])])
    c = arc_candidates(att, targets)
    assert len(c.X) == 9 + 4 and c.n_words == 5
    # word 0 of sentence 0, candidate 2: attention 0 -> 2 and 2 -> 0 in every block and head
    k = 0 * 3 + 2
    np.testing.assert_array_equal(c.X[k, :, :, 0], att[0].maps[:, :, 0, 2])
    np.testing.assert_array_equal(c.X[k, :, :, 1], att[0].maps[:, :, 2, 0])
    # the self candidate (the root's choice) reads the other tokens
    k = 9 + 1 * 2 + 1  # sentence 1, word 1, candidate 1
    np.testing.assert_array_equal(c.X[k, :, :, 0], att[1].to_other[:, :, 1])
    np.testing.assert_array_equal(c.X[k, :, :, 1], att[1].from_other[:, :, 1])
    assert c.gold.tolist() == [1, 4, -1, 9 + 1, 9 + 3] and c.word[c.gold[c.gold >= 0]].tolist() == [0, 1, 3, 4]
    items = RelationItems("pair", np.array([1]), np.array([0]), np.array([1]), np.array([0]), np.array([0, 3, 5]))
    F = attention_pair_features(att, items, [1])
    np.testing.assert_array_equal(F.reshape(1, 3, 2)[0, :, 0], att[1].maps[1, :, 0, 1])
    np.testing.assert_array_equal(F.reshape(1, 3, 2)[0, :, 1], att[1].maps[1, :, 1, 0])


def _oracle(n_sent, seed):
    """Sentences whose head 2 of block 2 attends from every word to its gold head (the root: to the other tokens)."""
    rng = np.random.default_rng(seed)
    att, heads = [], []
    for _ in range(n_sent):
        n = int(rng.integers(3, 8))
        h = rng.integers(0, n, n)
        m = rng.dirichlet(np.ones(n + 1), size=(2, 3, n)).astype(np.float32)
        to_sp = m[..., -1].copy()
        m = m[..., :n].copy()
        for i in range(n):
            m[1, 2, i] = 0.0
            if h[i] == i:
                to_sp[1, 2, i] = 1.0
            else:
                m[1, 2, i, h[i]], to_sp[1, 2, i] = 1.0, 0.0
        att.append(WordAttention(m, to_sp, rng.random((2, 3, n)).astype(np.float32)))
        heads.append(h)
    return att, ArcTargets(offsets=np.concatenate([[0], np.cumsum([len(h) for h in heads])]), heads=heads)


def test_attention_probe_finds_the_oracle_head():
    (tr, ttr), (dv, tdv), (te, tte) = _oracle(60, 1), _oracle(20, 2), _oracle(20, 3)
    res = fit_attention_arcs(arc_candidates(tr, ttr), arc_candidates(dv, tdv), arc_candidates(te, tte),
                             layer_sets=[[0], [1], [0, 1]], Cs=(0.1, 10.0))
    gold = np.concatenate(tte.heads)
    uas = [float((r["pred"] == gold).mean()) for r in res]
    assert uas[1] == 1.0 and uas[2] == 1.0 and uas[0] < 0.6, uas  # block 1 holds no oracle head
    assert [r["n_params"] for r in res] == [6, 6, 12]


def _cfg(tmp_path, model_dir, **kw):
    base = dict(name="t", models=[str(model_dir)], dataset="conllu",
                files={r: str(MINI_CONLLU) for r in ("train", "dev", "test")}, tasks=["subject"], seeds=[0],
                mdl=False, random_baseline=False, store_dir=str(tmp_path / "stores"),
                results_dir=str(tmp_path / "results"), device="cpu", Cs=[0.1, 1.0])
    base.update(kw)
    return ExperimentConfig(**base)


@pytest.mark.parametrize("which", ["tiny_bert_dir", "tiny_llama_dir"])
def test_runner_attention_rows_end_to_end(request, which, tmp_path, monkeypatch):
    cfg = _cfg(tmp_path, request.getfixturevalue(which))
    hidden = rel.RelationsConfig(tasks=["dep_arc", "dep_label"], epochs=2, bootstrap=100)
    before = rel.run_relations(cfg, hidden, progress=False).table()
    both = rel.RelationsConfig.from_dict({"tasks": ["dep_arc", "dep_label"], "features": ["hidden", "attention"],
                                          "epochs": 2, "bootstrap": 100})

    def no_stores(*a, **k):
        raise AssertionError("the hidden-state units keep their keys: they are reused, no store is read")

    monkeypatch.setattr(rd, "extract_site_stores", no_stores)
    df = rel.run_relations(cfg, both, progress=False).table()
    att = df[df.site == rel.ATTENTION_SITE]
    assert set(att.probe) == {"linear"} and set(att.pooling) == {rel.ATTENTION_POOLING}
    assert set(att.method) == {"probe"}
    # one row set per block (1, 2) and one for all blocks together (no layer)
    assert sorted(att.layer.astype(object).where(att.layer.notna(), -1).unique()) == [-1, 1, 2]
    uas = att[att.metric == "uas"]
    assert len(uas) == 3 and uas.value.between(0, 1).all()
    assert (att[att.metric == "uas_ci_low"].value.values <= uas.value.values + 1e-12).all()
    assert set(att[att.task == "dep_label"].metric) >= {"accuracy", "macro_f1"}
    # the hidden-state rows are the ones of the run without attention
    cols = ["task", "probe", "pooling", "site", "layer", "metric", "value"]
    old = before[before.method == "probe"][cols].reset_index(drop=True)
    new = df[(df.method == "probe") & (df.site != rel.ATTENTION_SITE)][cols].reset_index(drop=True)
    pd.testing.assert_frame_equal(new.astype(str), old.astype(str))
    # the figure draws the attention curves beside the hidden-state ones
    from matplotlib.figure import Figure
    ax = Figure().subplots()
    rel.relations_by_layer(df, ax=ax)
    assert any("attention" in line.get_label() for line in ax.lines)


def test_features_are_checked():
    with pytest.raises(ConfigError, match="relations.features.*hidden, attention"):
        rel.RelationsConfig.from_dict({"features": ["attn"]})
    assert rel.RelationsConfig.from_dict({"features": "attention"}).features == ["attention"]
    assert rel.RelationsConfig.from_dict({}).features == ["hidden"]


def test_probekit_run_carries_the_attention_rows(tmp_path, tiny_bert_dir):
    from probekit.runner.experiment import run_experiment

    cfg = _cfg(tmp_path, tiny_bert_dir, control_tasks=False,
               relations={"tasks": ["dep_arc"], "features": "attention", "bootstrap": 100})
    res = run_experiment(cfg, progress=False)
    att = res.table[res.table.site == rel.ATTENTION_SITE]
    assert set(att.task) == {"dep_arc"} and att.layer.isna().any() and len(att[att.metric == "uas"]) == 3
    # the summary keeps the all-blocks row (no layer) beside the per-block ones
    s = res.summary[(res.summary.site == rel.ATTENTION_SITE) & (res.summary.metric == "uas")]
    assert sorted(s.layer.astype(str)) == ["", "1", "2"]
    assert not (res.table.level == "choice")[res.table.site == "resid_post"].any()  # features: attention only
