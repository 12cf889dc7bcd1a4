"""Decoder (causal LM) pipeline end to end: GPT-2 / Llama-style models through extraction and the runner.

* the runner on tiny GPT-2 and tiny Llama: rows for every layer, default word pooling ``last``,
  sentence poolings ``mean`` and ``last`` but never ``cls``;
* causal masking: a decoder's word vector depends on its left context only; an encoder's does not;
* the real packaged ``smollm2-135m`` on a small EWT slice (slow).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

DECODERS = ["gpt2", "llama"]


def _model_dir(request, which: str) -> Path:
    return request.getfixturevalue(f"tiny_{which}_dir")


def _config(model: str, data_dir: Path, tmp: Path, tasks: list[str], **kw):
    from probekit.config import ExperimentConfig

    base = dict(name="decoder", models=[model], dataset="ud_ewt", data_dir=str(data_dir),
                limit={"train": 60, "dev": 20, "test": 20}, tasks=tasks, seeds=[0], mdl=False,
                random_baseline=False, store_dir=str(tmp / "stores"), results_dir=str(tmp / "results"),
                figures=["png"])
    base.update(kw)
    return ExperimentConfig(**base)


def _probe_rows(df, **kw):
    m = ((df["probe"] == "linear") & (df["metric"] == "accuracy") & (df["split"] == "test")
         & (~df["control"].astype(bool)))
    for k, v in kw.items():
        m &= df[k] == v
    return df[m]


@pytest.mark.parametrize("which", DECODERS)
def test_runner_end_to_end_on_tiny_decoder(which, request, data_dir, tmp_path):
    from probekit.activations.models import load_model
    from probekit.runner.experiment import run_experiment

    folder = _model_dir(request, which)
    lm = load_model(str(folder), device="cpu")
    assert lm.kind == "decoder" and lm.default_word_pooling == "last"
    cfg = _config(str(folder), data_dir, tmp_path, ["aux_verb", "upos", "sentence_length"],
                  sentence_poolings=["mean", "last"])
    res = run_experiment(cfg, progress=False)
    df = res.table
    assert set(df["model_kind"]) == {"decoder"}
    layers = set(range(lm.num_layers + 1))
    for task in ("aux_verb", "upos"):
        rows = _probe_rows(df, task=task)
        assert set(rows["layer"].astype(int)) == layers, task
        assert set(rows["pooling"]) == {"last"}, task  # the decoder default word pooling
        assert rows["value"].between(0, 1).all()
        assert (rows["n_layers"] == lm.num_layers).all()
    sent = _probe_rows(df, task="sentence_length")
    assert set(sent["pooling"]) == {"mean", "last"}
    for pooling in ("mean", "last"):
        assert set(sent[sent["pooling"] == pooling]["layer"].astype(int)) == layers
    assert (res.folder / "summary.csv").is_file() and (res.folder / "results.csv").is_file()
    # a rerun is pure reuse: no forward pass, same table
    again = run_experiment(cfg, progress=False)
    assert again.forward_passes == 0
    assert len(again.table) == len(df)


def test_default_sentence_poolings_skip_cls_for_decoders(tiny_gpt2_dir, data_dir, tmp_path):
    """With the default sentence_poolings [cls, mean, last], a decoder gets mean and last rows, no cls."""
    from probekit.runner.experiment import run_experiment

    cfg = _config(str(tiny_gpt2_dir), data_dir, tmp_path, ["sentence_length"], control_tasks=False)
    assert "cls" in cfg.sentence_poolings
    df = run_experiment(cfg, progress=False).table
    assert set(_probe_rows(df, task="sentence_length")["pooling"]) == {"mean", "last"}


# ----------------------------------------------------------------------------------------------- causality

def _pair():
    """Two sentences with the same first three words and different words to their right."""
    from probekit.data.conllu_io import Sentence

    a = Sentence.from_words(["The", "old", "fisherman", "sat", "on", "the", "mat", "."])
    b = Sentence.from_words(["The", "old", "fisherman", "painted", "a", "very", "large", "red", "boat", "!"])
    return a, b, 3


@pytest.mark.parametrize("which", DECODERS)
@pytest.mark.parametrize("pooling", ["last", "first", "mean"])
def test_decoder_vectors_ignore_right_context(which, pooling, request):
    from probekit.activations.extract import Extractor
    from probekit.activations.models import load_model

    lm = load_model(str(_model_dir(request, which)), device="cpu")
    a, b, shared = _pair()
    ex = Extractor(lm, word_pooling=pooling)
    assert ex.causal and ex.prefix  # BOS first
    # both sentences in one padded batch, and each alone: padding must not leak either
    words, _ = ex.encode_shard([a, b])
    wa, wb = words[:, :len(a)], words[:, len(a):]
    alone_b, _ = ex.encode_shard([b])
    np.testing.assert_allclose(wb, alone_b, atol=1e-5)
    np.testing.assert_allclose(wa[:, :shared], wb[:, :shared], atol=1e-5)
    # the first differing word and everything after it sees other left context: vectors differ
    top = wa.shape[0] - 1
    assert not np.allclose(wa[top, shared], wb[top, shared], atol=1e-3)


def test_encoder_vectors_change_with_right_context(tiny_bert_dir):
    from probekit.activations.extract import Extractor
    from probekit.activations.models import load_model

    lm = load_model(str(tiny_bert_dir), device="cpu")
    a, b, shared = _pair()
    ex = Extractor(lm)
    assert not ex.causal and ex.word_pooling == "first"
    words, sents = ex.encode_shard([a, b])
    wa, wb = words[:, :len(a)], words[:, len(a):]
    assert "cls" in sents
    # layer 0 (embeddings) only sees the token and its position; every attention layer sees the whole sentence
    np.testing.assert_allclose(wa[0, :shared], wb[0, :shared], atol=1e-6)
    for layer in range(1, wa.shape[0]):
        for w in range(shared):
            assert not np.allclose(wa[layer, w], wb[layer, w], atol=1e-4), (layer, w)


def test_decoder_sentence_poolings_have_no_cls(tiny_llama_dir):
    from probekit.activations.extract import Extractor
    from probekit.activations.models import load_model
    from probekit.data.conllu_io import Sentence

    lm = load_model(str(tiny_llama_dir), device="cpu")
    ex = Extractor(lm)
    assert ex.sentence_poolings == ["mean", "last"]
    s = Sentence.from_words(["Dogs", "bark", "."])
    words, sents = ex.encode_shard([s])
    assert set(sents) == {"mean", "last"}
    # with 'last' word pooling, the last word's vector is the sentence's last-token vector
    np.testing.assert_allclose(sents["last"][:, 0], words[:, -1], atol=1e-6)


# ----------------------------------------------------------------------------------------------- real model

@pytest.mark.slow
def test_smollm2_end_to_end_small_slice(data_dir, tmp_path):
    """The packaged SmolLM2-135M (Llama, 30 layers) through the runner on 40 train sentences, 2 tasks."""
    from probekit.runner.experiment import run_experiment

    cfg = _config("smollm2-135m", data_dir, tmp_path, ["aux_verb", "upos"],
                  limit={"train": 40, "dev": 20, "test": 20}, control_tasks=False)
    df = run_experiment(cfg, progress=False).table
    assert set(df["model_kind"]) == {"decoder"}
    for task in ("aux_verb", "upos"):
        rows = _probe_rows(df, task=task)
        assert set(rows["layer"].astype(int)) == set(range(31)), task
        assert set(rows["pooling"]) == {"last"}
        assert (rows["n_layers"] == 30).all()
    # a real LM knows auxiliaries and parts of speech far above the majority baseline, in its middle layers
    for task in ("aux_verb", "upos"):
        best = _probe_rows(df, task=task)["value"].max()
        maj = df[(df.task == task) & (df.probe == "majority") & (df.metric == "accuracy")]["value"].iloc[0]
        assert 1 - best < 0.5 * (1 - maj), (task, best, maj)  # at least halves the majority error
