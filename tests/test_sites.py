"""Sub-layer sites (issue 20): what the hooks record is what the block computes.

The check does not trust the hooks' placement: it rebuilds each block's output from the recorded sites with the
block's own arithmetic (pre-LN: ``resid_mid = h + attn_out``, ``h' = resid_mid + mlp_out``; post-LN BERT:
``resid_mid = LN1(h + attn_out)``, ``h' = LN2(resid_mid + mlp_out)``; GPT-NeoX parallel: ``h' = h + attn_out +
mlp_out``) and compares it with the model's own ``hidden_states``; the heads, put through the output projection,
must give ``attn_out``.
"""
from __future__ import annotations

import pytest
import torch

from probekit.activations.sites import SITES, check_sites, layout_for, record_sites
from probekit.errors import ConfigError, ModelError

import archs

pytestmark = pytest.mark.usefixtures("one_thread")

FAMILIES = ["bert", "roberta", "deberta-v2", "gpt2", "gpt-neox", "opt", "llama", "qwen2", "gemma"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from transformers import AutoModel

    root = tmp_path_factory.mktemp("sites")
    out = {}
    for f in archs.FAMILIES:
        if f.name in FAMILIES:
            m = AutoModel.from_pretrained(f.build(root / f.name))
            m.eval()
            m.requires_grad_(False)
            out[f.name] = m
    return out


def _run(model, sites):
    ids = torch.tensor([[5, 17, 42, 8, 99, 23, 11]])
    with torch.inference_mode(), record_sites(model, sites) as got:
        hs = model(input_ids=ids, output_hidden_states=True).hidden_states
    return hs, got


@pytest.mark.parametrize("name", FAMILIES)
def test_sites_rebuild_each_block(name, models):
    model = models[name]
    parallel = getattr(model.config, "use_parallel_residual", False)  # Pythia's default: no resid_mid
    sites = [s for s in SITES if not (parallel and s == "resid_mid")]
    hs, got = _run(model, sites)
    layout = layout_for(model, sites)
    blocks = list(model.get_submodule(layout.blocks))
    n = len(blocks)
    assert set(got) == set(sites) - {"resid_post"} and all(len(v) == n for v in got.values())
    mt = model.config.model_type
    # decoders put a final norm on their last hidden state: compare the blocks before the last one there
    last = n if mt in ("bert", "roberta", "deberta-v2") else n - 1
    for i in range(n):
        h, a, m = hs[i], got["attn_out"][i], got["mlp_out"][i]
        mid = None if parallel else got["resid_mid"][i]
        if parallel:
            nxt = h + a + m
        elif mt in ("bert", "roberta", "deberta-v2"):
            torch.testing.assert_close(mid, blocks[i].attention.output.LayerNorm(h + a))
            nxt = blocks[i].output.LayerNorm(mid + m)
        else:
            torch.testing.assert_close(mid, h + a)
            nxt = mid + m
        if i < last:
            torch.testing.assert_close(nxt, hs[i + 1], msg=f"{name} block {i}")
        proj = blocks[i].get_submodule(getattr(layout, "heads")[0])
        torch.testing.assert_close(proj(got["heads"][i]), a, msg=f"{name} heads {i}")


def test_parallel_residual_neox_has_no_resid_mid(models):
    model = models["gpt-neox"]
    assert model.config.use_parallel_residual  # the tiny Pythia keeps its family's default
    with pytest.raises(ModelError, match="parallel residuals"):
        layout_for(model, ["attn_out", "resid_mid"])


def test_a_manual_hook_sees_the_same_attn_out(models):
    model = models["llama"]
    seen = {}
    def hook(mod, inp, out):
        seen["a"] = out[0].clone()

    h = model.layers[1].self_attn.register_forward_hook(hook)
    try:
        _, got = _run(model, ["attn_out"])
    finally:
        h.remove()
    torch.testing.assert_close(got["attn_out"][1], seen["a"])


def test_hooks_are_removed_and_bad_sites_refused(models):
    model = models["gpt2"]
    _run(model, ["mlp_out"])
    assert not model.h[0].mlp._forward_hooks
    with pytest.raises(ConfigError, match="Did you mean 'attn_out'"):
        check_sites(["attn_outt"])
    assert check_sites(["mlp_out", "resid_post"]) == ["resid_post", "mlp_out"]
