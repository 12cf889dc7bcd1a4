"""Sub-layer sites, layer selection and the bfloat16 store through extraction (issue 20), and the disk guard.

The sites' stored vectors are checked against forward hooks placed by hand on the HF model (module paths written
out here, not read from probekit's layouts), one sentence at a time, without batching.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from probekit.activations.align import align_batch
from probekit.activations.budget import check_disk, extraction_bytes, npy_bytes
from probekit.activations.extract import Extractor, extract, extract_sites
from probekit.activations.models import load_model
from probekit.activations.store import store_key
from probekit.errors import ConfigError, ModelError, StoreError

pytestmark = pytest.mark.usefixtures("one_thread")

SITES = ["resid_post", "resid_mid", "attn_out", "mlp_out", "heads"]


def _manual_hooks(model, kind):
    """{site: [per block: tensor]} filled by hooks on the modules named here by hand."""
    got = {s: {} for s in SITES[1:]}
    handles = []

    def out_hook(site, i):
        def fn(_m, _inp, out):
            got[site][i] = (out[0] if isinstance(out, tuple) else out).detach().clone()
        return fn

    def in_hook(site, i):
        def fn(_m, inp):
            got[site][i] = inp[0].detach().clone()
        return fn

    if kind == "bert":
        for i, blk in enumerate(model.encoder.layer):
            handles += [blk.attention.output.dense.register_forward_hook(out_hook("attn_out", i)),
                        blk.output.dense.register_forward_hook(out_hook("mlp_out", i)),
                        blk.attention.register_forward_hook(out_hook("resid_mid", i)),
                        blk.attention.output.dense.register_forward_pre_hook(in_hook("heads", i))]
    else:
        for i, blk in enumerate(model.layers):
            handles += [blk.self_attn.register_forward_hook(out_hook("attn_out", i)),
                        blk.mlp.register_forward_hook(out_hook("mlp_out", i)),
                        blk.post_attention_layernorm.register_forward_pre_hook(in_hook("resid_mid", i)),
                        blk.self_attn.o_proj.register_forward_pre_hook(in_hook("heads", i))]
    return got, handles


def _reference(lm, ex, sentences, site, layer):
    """Mean-pooled word vectors of ``site`` at ``layer``, each sentence alone through the model."""
    kind = "bert" if lm.model.config.model_type == "bert" else "llama"
    got, handles = _manual_hooks(lm.model, kind)
    out = []
    try:
        for a in align_batch(lm.tokenizer, sentences):
            ids = torch.tensor([ex.prefix + a.token_ids + ex.suffix])
            with torch.inference_mode():
                hs = lm.model(input_ids=ids, output_hidden_states=True).hidden_states
            vec = hs[layer][0] if site == "resid_post" else got[site][layer - 1][0]
            p = len(ex.prefix)
            out += [vec[[p + t for t in toks]].float().mean(0).numpy() for toks in a.word_tokens]
    finally:
        for h in handles:
            h.remove()
    return np.stack(out)


@pytest.mark.parametrize("which", ["bert", "llama"])
def test_site_stores_match_manual_hooks(which, tiny_bert_dir, tiny_llama_dir, mini_sents, tmp_path):
    lm = load_model(str(tiny_bert_dir if which == "bert" else tiny_llama_dir), device="cpu")
    sents = mini_sents[:8]
    stores = extract_sites(lm, sents, sites=SITES, word_pooling="mean", dtype="float32", store_root=tmp_path,
                           progress=False)
    assert set(stores) == set(SITES)
    ex = Extractor(lm, word_pooling="mean")
    L = lm.num_layers
    for site, st in stores.items():
        assert st.site == site
        assert st.layer_ids == (list(range(L + 1)) if site == "resid_post" else list(range(1, L + 1)))
        for layer in st.layer_ids:
            np.testing.assert_allclose(st.layer(layer), _reference(lm, ex, sents, site, layer), atol=2e-5,
                                       err_msg=f"{which} {site} layer {layer}")
    with pytest.raises(ConfigError, match="not in this store"):
        stores["attn_out"].layer(0)  # sub-layer sites have no embedding layer


def test_resid_post_key_is_the_key_before_sites(tiny_bert_dir, mini_sents, tmp_path):
    """A resid_post store's key is computed from exactly the spec extraction used before sites and layer selection
    existed, whatever other sites are extracted beside it: existing caches stay valid."""
    lm = load_model(str(tiny_bert_dir), device="cpu")
    sents = mini_sents[:5]
    ex = Extractor(lm)
    from probekit.activations.extract import corpus_checksum

    old_spec = {"model": lm.identity, "data": {"dataset": "custom", "split": "custom",
                                               "checksum": corpus_checksum(sents), "n_sentences": len(sents)},
                "extraction": ex.settings(), "dtype": "float16"}
    alone = extract(lm, sents, store_root=tmp_path, progress=False)
    beside = extract_sites(lm, sents, sites=["resid_post", "attn_out"], store_root=tmp_path, progress=False)
    assert alone.manifest["key"] == store_key(old_spec) == beside["resid_post"].manifest["key"]
    assert alone.path == beside["resid_post"].path and beside["resid_post"].computed_shards == 0
    assert "site" not in alone.manifest and "layers" not in alone.manifest
    assert beside["attn_out"].manifest["key"] != alone.manifest["key"]


def test_layer_selection_stores_only_those_layers(tiny_bert_dir, mini_sents, tmp_path):
    lm = load_model(str(tiny_bert_dir), device="cpu")
    sents = mini_sents[:6]
    full = extract_sites(lm, sents, sites=["resid_post", "mlp_out"], dtype="float32", store_root=tmp_path,
                         progress=False)
    part = extract_sites(lm, sents, sites=["resid_post", "mlp_out"], layers=[0, 2], dtype="float32",
                         store_root=tmp_path, progress=False)
    assert part["resid_post"].layer_ids == [0, 2] and part["mlp_out"].layer_ids == [2]
    assert part["resid_post"].path != full["resid_post"].path  # the layers are in the key when chosen
    for site, layers in (("resid_post", [0, 2]), ("mlp_out", [2])):
        for layer in layers:
            np.testing.assert_array_equal(part[site].layer(layer), full[site].layer(layer))
    assert part["resid_post"].nbytes() < full["resid_post"].nbytes()
    with pytest.raises(ConfigError, match="not in this store"):
        part["resid_post"].layer(1)
    with pytest.raises(ConfigError, match="no layer for site attn_out"):
        extract_sites(lm, sents, sites=["attn_out"], layers=[0], store_root=tmp_path, progress=False)
    with pytest.raises(ConfigError, match="out of range"):
        extract_sites(lm, sents, layers=[7], store_root=tmp_path, progress=False)


def test_bfloat16_store_holds_the_rounded_vectors(tiny_llama_dir, mini_sents, tmp_path):
    lm = load_model(str(tiny_llama_dir), device="cpu")
    sents = mini_sents[:6]
    f32 = extract(lm, sents, dtype="float32", store_root=tmp_path, progress=False)
    bf = extract(lm, sents, dtype="bfloat16", store_root=tmp_path, progress=False)
    assert bf.manifest["dtype"] == "bfloat16" and bf.path != f32.path
    for layer in range(f32.n_layers):
        want = torch.from_numpy(f32.layer(layer)).to(torch.bfloat16).float().numpy()
        got = bf.layer(layer)
        assert got.dtype == np.float32 and np.array_equal(got, want), layer
        sv = torch.from_numpy(f32.sentence_vectors("mean", layer)).to(torch.bfloat16).float().numpy()
        assert np.array_equal(bf.sentence_vectors("mean", layer), sv)
    ratio = bf.nbytes() / f32.nbytes()
    assert 0.5 <= ratio < 0.56  # half the data, same headers


@pytest.mark.parametrize("kw", [dict(), dict(sites=SITES), dict(sites=["attn_out", "heads"], layers=[1, 2]),
                                dict(dtype="float32", layers=[0]), dict(dtype="bfloat16", shard_words=40)])
def test_predicted_size_is_the_written_size(kw, tiny_bert_dir, mini_sents, tmp_path, monkeypatch):
    import probekit.activations.budget as budget

    lm = load_model(str(tiny_bert_dir), device="cpu")
    kw = dict(kw)
    shard_words = kw.pop("shard_words", None)
    if shard_words:  # several shards: every file's header counted
        monkeypatch.setattr(budget, "default_shard_words", lambda model: shard_words)
    predicted = extraction_bytes(lm, mini_sents, store_root=tmp_path, **kw)
    stores = extract_sites(lm, mini_sents, store_root=tmp_path, progress=False, shard_words=shard_words, **kw)
    assert not shard_words or len(stores[next(iter(stores))].manifest["shards"]) > 1
    written = sum(st.nbytes() for st in stores.values())
    assert predicted == written  # within 5% is the bar; the .npy files are computed exactly
    assert extraction_bytes(lm, mini_sents, store_root=tmp_path, **kw) == 0  # complete stores are reused


def test_npy_bytes_is_what_np_save_writes(tmp_path):
    for shape, dt in (((3, 17, 32), np.float16), ((1, 0, 5), np.float32), ((2, 1000, 384), np.uint16)):
        np.save(tmp_path / "a.npy", np.zeros(shape, dtype=dt))
        assert npy_bytes(shape, dt) == (tmp_path / "a.npy").stat().st_size


def test_disk_guard_refuses_with_the_keys_that_shrink_it(tmp_path, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="probekit"):
        check_disk({"train": 3 * 10**9, "dev": 10**8, "test": 10**8}, tmp_path, free=10 * 10**9, describe="x")
    assert "train 3.00 GB, dev 0.10 GB, test 0.10 GB" in caplog.text
    with pytest.raises(StoreError) as e:
        check_disk({"train": 3 * 10**9, "dev": 10**8, "test": 10**8}, tmp_path, free=3 * 10**9, describe="x")
    msg = str(e.value)
    assert "\n" not in msg and "3.20 GB to write" in msg and "3.00 GB free" in msg
    for key in ("layers", "sites", "train_sentences", "bfloat16"):
        assert key in msg
    check_disk({"train": 0, "dev": 0, "test": 0}, tmp_path, free=0)  # all reused: nothing to check


def test_gpu_loading_needs_cuda(tiny_llama_dir):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    for kw in (dict(device_map="auto"), dict(quantization="8bit"), dict(quantization="4bit")):
        with pytest.raises(ModelError, match="needs a CUDA GPU"):
            load_model(str(tiny_llama_dir), device="cpu", **kw)


def test_half_precision_weights_extract_on_cpu(tiny_llama_dir, mini_sents, tmp_path):
    """weights_dtype bfloat16 on the CPU: sites read, stored, and near the float32 model's vectors."""
    sents = mini_sents[:4]
    full = extract_sites(load_model(str(tiny_llama_dir), device="cpu"), sents, sites=["resid_post", "mlp_out"],
                         dtype="float32", store_root=tmp_path, progress=False)
    half = extract_sites(load_model(str(tiny_llama_dir), device="cpu", dtype="bfloat16"), sents,
                         sites=["resid_post", "mlp_out"], dtype="float32", store_root=tmp_path, progress=False)
    for site in full:
        assert half[site].path != full[site].path  # the weights dtype is in the key
        a, b = full[site].layer(2), half[site].layer(2)
        assert np.abs(a - b).max() / np.abs(a).max() < 0.05
