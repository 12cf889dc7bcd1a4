"""Extraction precision and weights dtype: what ``auto`` resolves to, the forced bf16 path on any CPU (autocast on a
CPU without bf16 units is correct, only slow), the keys that record what ran, and the config, CLI and API ways in."""
from __future__ import annotations

import numpy as np
import pytest

from probekit.errors import ConfigError, ModelError

pytestmark = pytest.mark.usefixtures("one_thread")


def _extract(lm, sents, root, **kw):
    from probekit.activations.extract import extract

    return extract(lm, sents, store_root=root, progress=False, dtype="float32", **kw)


def test_bf16_autocast_on_the_cpu_has_its_own_key_and_close_vectors(tiny_bert_dir, mini_sents, tmp_path):
    from probekit.activations.models import load_model

    lm = load_model(str(tiny_bert_dir), device="cpu")
    sents = mini_sents[:12]
    fp32 = _extract(lm, sents, tmp_path, precision="fp32")
    bf16 = _extract(lm, sents, tmp_path, precision="bf16")
    assert bf16.path != fp32.path
    assert fp32.manifest["extraction"]["amp"] is None and bf16.manifest["extraction"]["amp"] == "bf16"
    a, b = fp32.layers(list(range(fp32.n_layers))), bf16.layers(list(range(bf16.n_layers)))
    assert not np.array_equal(a[1:], b[1:])  # the bf16 path really ran ...
    rel = np.linalg.norm(a - b, axis=2) / np.linalg.norm(a, axis=2)
    assert np.median(rel) < 0.02 and rel.max() < 0.1  # ... and is close (bf16 keeps 8 bits of mantissa)
    for k in fp32.sentence_poolings:
        np.testing.assert_allclose(bf16.sentence_vectors(k, 2), fp32.sentence_vectors(k, 2), rtol=0.05, atol=0.05)


def test_auto_is_fp32_with_fp32_keys_unless_chosen(tiny_bert_dir, mini_sents, tmp_path, monkeypatch):
    """``auto`` resolves on the machine that runs; while AUTO_BF16 is off it is fp32 everywhere, with the key an fp32
    store has always had (``amp: null``); switched on, it follows the bf16 units torch reports."""
    from probekit.activations import precision as P
    from probekit.activations.models import load_model

    lm = load_model(str(tiny_bert_dir), device="cpu")
    sents = mini_sents[:3]
    assert _extract(lm, sents, tmp_path, precision="auto").path == _extract(lm, sents, tmp_path).path \
        == _extract(lm, sents, tmp_path, precision="fp32").path
    for units in (True, False):
        monkeypatch.setattr(P, "bf16_matrix_units", lambda device, u=units: u)
        monkeypatch.setattr(P, "AUTO_BF16", False)
        assert P.resolve_precision("cpu", "auto") == "fp32"
        monkeypatch.setattr(P, "AUTO_BF16", True)
        assert P.resolve_precision("cpu", "auto") == ("bf16" if units else "fp32")
        assert P.resolve_precision("cpu", None) == P.resolve_precision("cpu", "auto")
        assert P.resolve_precision("cpu", "fp32") == "fp32" and P.resolve_precision("cpu", "bf16") == "bf16"


def test_bf16_units_come_from_what_torch_reports(monkeypatch):
    import torch

    from probekit.activations.precision import bf16_matrix_units

    for amx, avx in ((False, False), (True, False), (False, True)):
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda a=amx: a, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda a=avx: a, raising=False)
        assert bf16_matrix_units("cpu") is (amx or avx)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert not bf16_matrix_units("cuda:0") and not bf16_matrix_units("mps")


def test_emulated_precisions_warn_once_per_extractor(tiny_bert_dir, monkeypatch, caplog):
    """bf16 on a CPU without bf16 units and fp16 without AMX-FP16 run correctly but ~100x slower: the extractor says
    so in one line; fp32, and bf16 where the units are, say nothing."""
    import logging

    import torch

    from probekit.activations import precision as P
    from probekit.activations.extract import Extractor
    from probekit.activations.models import load_model

    lm = load_model(str(tiny_bert_dir))
    for units, amx_fp16, precision, warned in ((False, False, "bf16", "no bf16 matrix units"),
                                               (True, False, "bf16", None), (False, False, "fp32", None),
                                               (True, False, "fp16", "fp16 matmuls are emulated"),
                                               (True, True, "fp16", None)):
        monkeypatch.setattr(P, "bf16_matrix_units", lambda device, u=units: u)
        monkeypatch.setattr(torch.cpu, "_is_amx_fp16_supported", lambda a=amx_fp16: a, raising=False)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="probekit"):
            Extractor(lm, precision=precision)
        said = [r.getMessage() for r in caplog.records if "emulated" in r.getMessage()]
        assert (said == []) if warned is None else (len(said) == 1 and warned in said[0]), (precision, units, said)
    assert P.emulation_warning("cuda:0", "bf16") is None


def test_gpu_precision_is_what_was_asked_or_an_error(monkeypatch):
    """No silent bf16 on a GPU (auto is fp32 unless chosen) and no silent fp16 for a bf16 request."""
    import torch

    from probekit.activations import precision as P

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert P.resolve_precision("cuda:0", "auto") == ("bf16" if P.AUTO_BF16 else "fp32")
    assert P.resolve_precision("cuda", "bf16") == "bf16" and P.resolve_precision("cuda", "fp16") == "fp16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert P.resolve_precision("cuda", "auto") == "fp32"
    with pytest.raises(ConfigError, match="no bf16: use fp16 or fp32"):
        P.resolve_precision("cuda", "bf16")
    with pytest.raises(ConfigError, match="'fp8'"):
        P.resolve_precision("cuda", "fp8")
    with pytest.raises(ConfigError, match="not on mps"):
        P.resolve_precision("mps", "bf16")


def test_config_cli_and_unit_keys_carry_precision_and_weights_dtype(data_dir):
    from probekit.cli import _overrides, build_parser
    from probekit.config import ExperimentConfig
    from probekit.runner.experiment import load_data, plan_units

    with pytest.raises(ConfigError, match="precision.*'fp64'"):
        ExperimentConfig(precision="fp64")
    with pytest.raises(ConfigError, match="weights dtype.*'int8'"):
        ExperimentConfig(weights_dtype="int8")
    args = build_parser().parse_args(["run", "x.yaml", "--precision", "bf16", "--weights-dtype", "bfloat16"])
    assert _overrides(args) == {"precision": "bf16", "weights_dtype": "bfloat16"}
    with pytest.raises(SystemExit):
        build_parser().parse_args(["extract", "minilm", "--precision", "fp64"])
    cfg = ExperimentConfig(tasks=["upos"], data_dir=str(data_dir), limit={"train": 5, "dev": 5, "test": 5})
    _, data_fp = load_data(cfg)
    fp = {"name": "m", "weights_hash": "h"}

    def key(**kw):
        return plan_units(cfg.replace(**kw), "m", fp, data_fp, kind_hint="encoder")[0].key

    # fp32 / float32 keep the keys units always had; anything else gets its own
    assert key() == key(precision="fp32") == key(precision="auto", weights_dtype="float32")
    assert len({key(), key(precision="bf16"), key(precision="fp16"), key(weights_dtype="bfloat16")}) == 4


def test_weights_dtype_by_name_and_gguf_dequantised_to_it(tiny_bert_dir, tmp_path, monkeypatch):
    from pathlib import Path

    import torch
    import transformers

    from probekit.activations.models import convert_gguf, load_model

    assert next(load_model(str(tiny_bert_dir), device="cpu", dtype="bfloat16").model.parameters()).dtype \
        == torch.bfloat16
    with pytest.raises(ModelError, match="weights dtype.*'half'"):
        load_model(str(tiny_bert_dir), device="cpu", dtype="half")
    asked = []

    class Fake:
        def save_pretrained(self, d):
            (Path(d) / "config.json").write_text("{}")

    def fake_model(*a, **k):
        asked.append(k.get("dtype"))
        return Fake()

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", fake_model)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: Fake())
    src = tmp_path / "src"
    src.mkdir()
    (src / "m.gguf").write_bytes(b"GGUF fake")
    f32 = convert_gguf(src, "m.gguf", cache_dir=tmp_path / "c")
    b16 = convert_gguf(src, "m.gguf", cache_dir=tmp_path / "c", dtype="bfloat16")
    assert asked == [torch.float32, torch.bfloat16]
    assert b16 != f32 and b16.name == f32.name + "-bfloat16"  # float32 conversions keep their cache name


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
def test_weights_cast_once_give_bitwise_the_autocast_outputs(family, request):
    """Linear weights held in bf16 for the block (nn.Linear; GPT-2's Conv1D) give the very hidden states of plain
    bf16 autocast, and every parameter is float32 again afterwards."""
    import torch

    from probekit.activations.models import load_model
    from probekit.activations.precision import autocast, matmul_weights_cast

    lm = load_model(str(request.getfixturevalue(f"tiny_{family}_dir")), device="cpu")
    before = {n: p.detach().clone() for n, p in lm.model.named_parameters()}
    ids = torch.tensor([[5, 17, 33, 8, 21, 40], [9, 4, 12, 30, 7, 2]])
    with torch.inference_mode(), autocast("cpu", "bf16"):
        plain = lm.model(input_ids=ids, output_hidden_states=True).hidden_states
    with matmul_weights_cast(lm.model, "bf16"), torch.inference_mode(), autocast("cpu", "bf16"):
        assert any(p.dtype == torch.bfloat16 for p in lm.model.parameters())  # the cast really happened
        cast = lm.model(input_ids=ids, output_hidden_states=True).hidden_states
    for a, b in zip(plain, cast):
        assert torch.equal(a, b)
    for n, p in lm.model.named_parameters():
        assert p.dtype == torch.float32 and torch.equal(p, before[n]), n


def test_weights_cast_leaves_shared_parameters_alone():
    """A weight tied to an embedding is read outside the matmuls too: it stays float32 inside the block."""
    import torch

    from probekit.activations.precision import matmul_weights_cast

    emb, head, other = torch.nn.Embedding(10, 4), torch.nn.Linear(4, 10, bias=False), torch.nn.Linear(4, 4)
    head.weight = emb.weight
    model = torch.nn.ModuleDict({"emb": emb, "head": head, "other": other})
    with matmul_weights_cast(model, "bf16"):
        assert emb.weight.dtype == torch.float32 and head.weight.dtype == torch.float32
        assert other.weight.dtype == torch.bfloat16 and other.bias.dtype == torch.bfloat16
    assert other.weight.dtype == torch.float32
    with matmul_weights_cast(model, "fp32"):
        assert other.weight.dtype == torch.float32
