"""Same inputs, same numbers (issue 7).

* Reproducibility: the same config and seeds run twice, into two results folders and two store
  roots (so everything is recomputed), give a byte-identical ``results.csv`` and
  ``summary.csv``; ``provenance.json`` records the config, package versions, git commit, data
  checksums and model weight hashes.
* No silent truncation: a 3,000-word sentence on models with 64 positions gets a vector for
  every word, and each stored vector is the model's own hidden state for that word, read from
  the window the planner chose (context on both sides for an encoder, the most left context
  for a decoder), not from a window where the word sits at the edge.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

N_LONG = 3000


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def no_figures(monkeypatch):
    """Figures are not under test here and cost seconds per run (matplotlib layout)."""
    import probekit.report.figures as figures

    monkeypatch.setattr(figures, "experiment_figures", lambda *a, **k: [])


# ------------------------------------------------------------------------------------------- reproducibility

def test_same_config_and_seed_give_byte_identical_results(tiny_bert_dir, ewt_dev, tmp_path, no_figures):
    from probekit._io import sha256_file
    from probekit.activations.models import load_model
    from probekit.config import ExperimentConfig
    from probekit.data.conllu_io import write_conllu
    from probekit.runner.experiment import run_experiment

    cuts = {"train": ewt_dev[:30], "dev": ewt_dev[30:40], "test": ewt_dev[40:50]}
    files = {}
    for role, sents in cuts.items():
        files[role] = str(tmp_path / f"{role}.conllu")
        write_conllu(sents, files[role])
    results = []
    for run in ("a", "b"):
        cfg = ExperimentConfig(name="repro", models=[str(tiny_bert_dir)], dataset="conllu", files=files,
                               tasks=["aux_verb"], probes=["linear", "mlp1"], seeds=[0, 1], Cs=[0.1, 1.0],
                               control_tasks=True, mdl=True, mdl_max_examples=300, random_baseline=True,
                               mlp={"hidden_size": 16, "max_epochs": 3}, figures=[], device="cpu",
                               store_dir=str(tmp_path / f"stores-{run}"), results_dir=str(tmp_path / f"results-{run}"))
        res = run_experiment(cfg, progress=False)
        assert res.forward_passes > 0, "each run computes its own stores"
        results.append(res)
    a, b = (r.folder for r in results)
    table = results[0].table
    # the run covers what has randomness in it: seeds, controls, MDL, MLP training, random weights
    assert set(table["seed"]) == {0, 1} and set(table["probe"]) >= {"linear", "mlp1"}
    assert table["control"].astype(str).eq("True").any()
    assert table["metric"].str.startswith("mdl_").any()
    assert table["model"].str.endswith("@random").any()
    # the majority-class rows come once per model, task and seed, not once per probe
    maj = table[(table["probe"] == "majority") & (table["metric"] == "accuracy")]
    assert len(maj) == 2 * 2 and not maj.duplicated(["model", "task", "pooling", "seed", "split"]).any()
    for name in ("results.csv", "summary.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), f"{name} differs between identical runs"
    assert "seconds" not in (a / "results.csv").read_text().splitlines()[0], "wall times belong in timings.csv"

    prov = json.loads((a / "provenance.json").read_text())
    assert prov["config"] == results[0].config.to_dict()
    for pkg in ("probekit", "torch", "transformers", "numpy", "scikit-learn"):
        assert prov["packages"].get(pkg), pkg
    assert prov["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", prov["git_commit"])
    for role, path in files.items():
        assert prov["data"][role]["sha256"] == sha256_file(path)
        assert prov["data"][role]["n_sentences"] == len(cuts[role])
    whash = load_model(str(tiny_bert_dir), device="cpu").weights_hash
    assert re.fullmatch(r"[0-9a-f]{64}", whash)
    for m in (str(tiny_bert_dir), f"{tiny_bert_dir}@random"):
        assert prov["models"][m]["fingerprint"]["weights_hash"] == whash
    assert prov["models"][f"{tiny_bert_dir}@random"]["fingerprint"]["random_seed"] == 0


# ------------------------------------------------------------------------------------------- no truncation

def long_sentence(ewt_dev, n: int = N_LONG):
    """One sentence of ``n`` words: EWT dev words in corpus order (mixed lengths, punctuation, numbers)."""
    from probekit.data.conllu_io import Sentence

    words = [w for s in ewt_dev for w in s.words if w.strip() and " " not in w][:n]
    assert len(words) == n
    return Sentence.from_words(words, sent_id="long")


def hidden_states(lm, ids: list[int]) -> np.ndarray:
    """The model's hidden states run directly on one sequence: ``[layer, token, d_model]``."""
    import torch

    with torch.inference_mode():
        out = lm.model(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                       output_hidden_states=True)
    return torch.stack([h[0] for h in out.hidden_states]).float().numpy()


@pytest.mark.parametrize("which", ["bert", "gpt2"])
def test_long_sentence_every_word_from_a_window_with_context(which, request, ewt_dev, tmp_path):
    from probekit.activations.align import align_batch, plan_windows
    from probekit.activations.extract import Extractor, extract
    from probekit.activations.models import load_model

    lm = load_model(str(request.getfixturevalue(f"tiny_{which}_dir")), device="cpu")
    assert lm.max_length == 64
    sent = long_sentence(ewt_dev)
    st = extract(lm, [sent], store_root=tmp_path, dtype="float32", progress=False)
    assert st.n_words == N_LONG and st.n_sentences == 1
    stored = st.layers(list(range(st.n_layers)))  # [layer, word, d_model]
    assert np.isfinite(stored).all()
    # a word no window wrote to would keep the zero vector at every layer
    assert (np.abs(stored).sum(axis=(0, 2)) > 0).all(), "some words got no vector"

    ex = Extractor(lm)
    (aligned,) = align_batch(lm.tokenizer, [sent])
    assert aligned.n_tokens > 10 * ex.max_content, "the sentence must need many windows"
    windows, owner = plan_windows(aligned.n_tokens, ex.max_content, causal=ex.causal)
    pool = 0 if ex.word_pooling == "first" else -1
    assert ex.word_pooling == ("first" if which == "bert" else "last")
    rng = np.random.default_rng(0)
    checked = 0
    for w in [N_LONG // 2, *rng.choice(np.arange(200, N_LONG - 200), 4, replace=False)]:
        t = aligned.word_tokens[w][pool]
        k = int(owner[t])
        s, e = windows[k]
        assert s <= t < e
        left, right = t - s, e - 1 - t
        if ex.causal:
            assert left >= ex.max_content // 2 - 1, "a decoder reads each token with maximal left context"
        else:
            assert min(left, right) >= ex.max_content // 4 - 1, "an encoder reads each token near its window's centre"
        seq = ex.prefix + aligned.token_ids[s:e] + ex.suffix
        direct = hidden_states(lm, seq)[:, len(ex.prefix) + left]  # [layer, d_model]
        np.testing.assert_allclose(stored[:, w], direct, rtol=1e-4, atol=1e-4)
        # the check can fail: the same token read from another window containing it (less context) differs
        others = [j for j, (a, b) in enumerate(windows) if a <= t < b and j != k]
        if others:
            a, b = windows[others[0]]
            edge = hidden_states(lm, ex.prefix + aligned.token_ids[a:b] + ex.suffix)[:, len(ex.prefix) + t - a]
            assert np.abs(edge[1:] - direct[1:]).max() > 1e-3
            checked += 1
    assert checked, "no word lay in two windows: the check above never ran"


def test_store_key_depends_on_what_changes_vectors(tiny_bert_dir, mini_sents, tmp_path):
    """A different pooling, dtype or data is a different store (never a reused, wrong one)."""
    from probekit.activations.extract import extract
    from probekit.activations.models import load_model

    lm = load_model(str(tiny_bert_dir), device="cpu")
    sents = mini_sents[:6]
    base = extract(lm, sents, store_root=tmp_path, progress=False)
    same = extract(lm, sents, store_root=tmp_path, progress=False)
    assert same.path == base.path and same.computed_shards == 0
    variants = [extract(lm, sents, store_root=tmp_path, progress=False, word_pooling="mean"),
                extract(lm, sents, store_root=tmp_path, progress=False, dtype="float32"),
                extract(lm, sents[:5], store_root=tmp_path, progress=False)]
    paths = {base.path, *(v.path for v in variants)}
    assert len(paths) == 4 and all(v.computed_shards > 0 for v in variants)
    digest = {p: hashlib.sha256(b"".join(f.read_bytes() for f in sorted(Path(p).glob("shard-*/words.npy"))))
              .hexdigest() for p in paths}
    assert len(set(digest.values())) == 4


def test_damaged_weights_hash_memo_is_not_trusted(tiny_bert_dir, tmp_path, monkeypatch):
    from probekit.activations.models import weights_hash

    monkeypatch.setenv("PROBEKIT_CACHE_DIR", str(tmp_path / "cache"))
    true = weights_hash(Path(tiny_bert_dir))
    (memo,) = (tmp_path / "cache" / "weights_hash").iterdir()
    memo.write_text(true[:20])  # a write cut short by a kill
    assert weights_hash(Path(tiny_bert_dir)) == true
