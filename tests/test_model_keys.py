"""What a store or a result is keyed on, and the model-side checks: weights dtype, config and tokenizer files,
devices, the GGUF conversion cache, shard size changes, and bad extraction arguments (precision: tests/test_precision.py)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from probekit.errors import ConfigError, DataError, ModelError

pytestmark = pytest.mark.usefixtures("one_thread")


def _extract(lm, sents, root, **kw):
    from probekit.activations.extract import extract

    return extract(lm, sents, store_root=root, progress=False, **kw)


def test_weights_dtype_is_part_of_the_store_key(tiny_bert_dir, mini_sents, tmp_path):
    import torch

    from probekit.activations.models import load_model

    sents = mini_sents[:5]
    fp32 = _extract(load_model(str(tiny_bert_dir), device="cpu"), sents, tmp_path)
    bf16 = _extract(load_model(str(tiny_bert_dir), device="cpu", dtype=torch.bfloat16), sents, tmp_path)
    assert bf16.path != fp32.path and bf16.manifest["model"]["dtype"] == "torch.bfloat16"
    assert "dtype" not in fp32.manifest["model"]  # float32 keys are what they were


def test_config_and_tokenizer_files_are_part_of_the_keys(tiny_bert_dir, mini_sents, tmp_path):
    from probekit.activations.models import fingerprint, load_model

    folder = tmp_path / "model"
    shutil.copytree(tiny_bert_dir, folder)
    sents = mini_sents[:5]
    before = (fingerprint(str(folder)), _extract(load_model(str(folder), device="cpu"), sents, tmp_path / "s").path)
    for name, edit in (("config.json", ("hidden_act", "relu")), ("tokenizer_config.json", ("do_lower_case", False))):
        cfg = json.loads((folder / name).read_text())
        cfg[edit[0]] = edit[1]
        (folder / name).write_text(json.dumps(cfg))
        after = (fingerprint(str(folder)), _extract(load_model(str(folder), device="cpu"), sents, tmp_path / "s").path)
        assert after[0]["weights_hash"] == before[0]["weights_hash"]  # same weights ...
        assert after[0] != before[0] and after[1] != before[1], name  # ... but other vectors: other keys
        before = after


@pytest.mark.parametrize("device, needle", [("gpu", "Unknown device 'gpu'"), ("xpu", "not supported"),
                                            ("cuda:99", "cuda")])
def test_bad_device_is_a_model_error_before_loading(device, needle, monkeypatch):
    import torch

    from probekit.activations.models import check_device, load_model

    if device == "cuda:99" and not torch.cuda.is_available():
        needle = "no CUDA GPU"
    monkeypatch.setattr("probekit.activations.models.resolve", lambda name: pytest.fail("the model was resolved first"))
    with pytest.raises(ModelError, match=needle):
        load_model("minilm", device=device)
    assert check_device("cpu") == "cpu"
    assert check_device(None) == ("cuda" if torch.cuda.is_available() else "cpu")


def test_gguf_conversion_removes_a_killed_conversion_and_runs_once(tmp_path, monkeypatch):
    pytest.importorskip("gguf")  # the [gguf] extra
    import transformers

    from probekit.activations.models import convert_gguf

    src = tmp_path / "src"
    src.mkdir()
    (src / "m.gguf").write_bytes(b"GGUF fake")
    calls = []

    class Fake:
        def save_pretrained(self, d):
            calls.append(d)
            (Path(d) / "config.json").write_text("{}")

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", lambda *a, **k: Fake())
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: Fake())
    cache = tmp_path / "cache"
    cache.mkdir()
    # what a conversion killed by SIGKILL leaves: its temporary folder (the name of the finished one with a suffix)
    first = convert_gguf(src, "m.gguf", cache_dir=cache)
    shutil.rmtree(first)
    stale = cache / f".{first.name}.abc123"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"x" * 1000)
    dest = convert_gguf(src, "m.gguf", cache_dir=cache)
    assert dest == first and (dest / "config.json").is_file() and not stale.exists()
    assert not [p for p in cache.iterdir() if p.is_dir() and p != dest]
    n = len(calls)
    assert convert_gguf(src, "m.gguf", cache_dir=cache) == dest and len(calls) == n  # cached: no conversion


def test_layer_arrays_are_writable_copies_for_one_shard_or_many(tiny_bert_dir, mini_sents, tmp_path):
    from probekit.activations.models import load_model

    lm = load_model(str(tiny_bert_dir), device="cpu")
    for shard_words in (100_000, 50):
        st = _extract(lm, mini_sents[:20], tmp_path / str(shard_words), dtype="float32", shard_words=shard_words)
        a = st.layer(1)
        a -= a.mean(0)  # in-place work in a notebook
        assert np.abs(st.layer(1) - a).max() > 0, "the store itself must not change"


def test_another_shard_size_reshards_without_calling_it_damage(tiny_bert_dir, mini_sents, tmp_path, caplog):
    from probekit.activations.models import load_model

    lm = load_model(str(tiny_bert_dir), device="cpu")
    sents = mini_sents[:40]
    a = _extract(lm, sents, tmp_path, shard_words=60)
    ref = a.layer(2)
    n_a = len(list(a.path.glob("shard-*")))
    b = _extract(lm, sents, tmp_path, shard_words=400, strict=True)
    assert b.path == a.path and "damaged" not in caplog.text
    shards = sorted(p.name for p in b.path.glob("shard-*"))
    assert len(shards) == b.manifest["n_shards"] < n_a
    np.testing.assert_array_equal(b.layer(2), ref)


def test_bad_extraction_arguments(tiny_bert_dir, mini_sents, tmp_path):
    from probekit.activations.models import load_model
    from probekit.data.conllu_io import Sentence

    lm = load_model(str(tiny_bert_dir), device="cpu")
    with pytest.raises(DataError, match="'nothing' .* has no words"):
        _extract(lm, [mini_sents[0], Sentence.from_words([], sent_id="nothing")], tmp_path)
    for n in (0, 3):
        with pytest.raises(ConfigError, match=f"max_length {n} leaves"):
            _extract(lm, mini_sents[:2], tmp_path, max_length=n)
    assert _extract(lm, mini_sents[:2], tmp_path, max_length=4).n_words == sum(len(s) for s in mini_sents[:2])


def test_decoder_without_bos_starts_with_eos(tiny_gpt2_dir):
    from transformers import AutoTokenizer

    from probekit.activations.align import special_layout

    tok = AutoTokenizer.from_pretrained(tiny_gpt2_dir)
    assert special_layout(tok, prepend_bos=True)[0] == [tok.bos_token_id]
    tok.bos_token = None
    assert tok.bos_token_id is None and special_layout(tok, prepend_bos=True)[0] == [tok.eos_token_id]
    assert special_layout(tok, prepend_bos=False)[0] == []


def test_study_unit_keys_follow_the_vectors_they_read():
    """A study's unit (structural, relations, scalar mix, neurons) is not reused for vectors extracted otherwise."""
    from probekit.config import ExperimentConfig
    from probekit.runner.units import study_unit_key

    def key(version=1, **over):
        cfg = ExperimentConfig(name="k", models=["minilm"], tasks=["upos"], device="cpu", **over)
        return study_unit_key(cfg, {"model": "m"}, {"test": {"sha256": "x", "file": "/a/b"}}, version=version, task="t")

    base = key()
    assert key() == base
    assert len({base, key(precision="bf16"), key(layers=[0, 1]), key(weights_dtype="bfloat16"), key(dtype="float32"),
                key(word_pooling="mean"), key(version=2)}) == 7
