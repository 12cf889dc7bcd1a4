"""The extractor's batched, pooled-as-it-goes output against a plain one-window-at-a-time reference."""
from __future__ import annotations

import numpy as np
import pytest


def _reference(lm, ex, sentences):
    """Each window of each sentence alone through the model (no batching, no padding), tokens read from their owner
    window into a float32 buffer, then pooled with `pool_words`: the semantics `encode_shard` must keep."""
    import torch

    from probekit.activations.align import align_batch, plan_windows, pool_words

    words, sents = [], {k: [] for k in ex.sentence_poolings}
    p = len(ex.prefix)
    for a in align_batch(lm.tokenizer, sentences):
        windows, owner = plan_windows(a.n_tokens, ex.max_content, causal=ex.causal)
        buf = None
        for wi, (s, e) in enumerate(windows):
            ids = torch.tensor([ex.prefix + a.token_ids[s:e] + ex.suffix])
            with torch.inference_mode():
                hs = torch.stack(lm.model(input_ids=ids, output_hidden_states=True).hidden_states)[:, 0].numpy()
            if buf is None:
                buf = np.zeros((hs.shape[0], a.n_tokens, hs.shape[2]), dtype=np.float32)
            own = owner[s:e] == wi
            buf[:, s:e][:, own] = hs[:, p:p + e - s][:, own]
            if wi == 0 and "cls" in sents:
                sents["cls"].append(hs[:, 0])
        words.append(pool_words(buf, a.word_tokens, ex.word_pooling, a.heads))
        if "mean" in sents:
            sents["mean"].append(buf.mean(axis=1))
        if "last" in sents:
            sents["last"].append(buf[:, -1])
    return np.concatenate(words, axis=1), {k: np.stack(v, axis=1) for k, v in sents.items()}


@pytest.mark.parametrize("pooling", ["first", "last", "mean"])
def test_batched_windows_match_one_window_at_a_time(tiny_bert_dir, mini_sents, pooling):
    from probekit.activations.extract import Extractor
    from probekit.activations.models import load_model

    lm = load_model(str(tiny_bert_dir), device="cpu")
    # 16 positions leave 14 content tokens: many dev sentences are cut into 2-4 windows, whose windows land in
    # different batches (batches are sorted by length), mixed with sentences that fit one window
    ex = Extractor(lm, word_pooling=pooling, max_length=16, batch_tokens=160)
    sents = mini_sents[:30]
    words, pooled = ex.encode_shard(sents)
    assert 0 < ex.stats["windowed_sentences"] < len(sents)
    ref_words, ref_pooled = _reference(lm, ex, sents)
    assert words.shape == ref_words.shape == (lm.num_layers + 1, sum(len(s) for s in sents), lm.hidden_size)
    np.testing.assert_allclose(words, ref_words, atol=2e-5)
    assert set(pooled) == set(ref_pooled) == {"cls", "mean", "last"}
    for k in pooled:
        np.testing.assert_allclose(pooled[k], ref_pooled[k], atol=2e-5, err_msg=k)


def test_store_dtype_output_is_the_float32_output_rounded(tiny_gpt2_dir, mini_sents):
    """`extract` asks `encode_shard` for float16 directly (no float32 copy of the shard is held): the values must be
    exactly the float32 result rounded, for word and sentence vectors."""
    from probekit.activations.extract import Extractor
    from probekit.activations.models import load_model

    lm = load_model(str(tiny_gpt2_dir), device="cpu")
    ex = Extractor(lm, word_pooling="mean", max_length=24)
    w32, s32 = ex.encode_shard(mini_sents[:20])
    w16, s16 = ex.encode_shard(mini_sents[:20], out_dtype=np.float16)
    assert w16.dtype == np.float16 and np.array_equal(w16, w32.astype(np.float16))
    assert set(s16) == set(s32) == {"mean", "last"}
    for k in s16:
        assert s16[k].dtype == np.float16 and np.array_equal(s16[k], s32[k].astype(np.float16)), k


def test_batches_carry_at_most_max_padding_and_attention_is_sdpa(tiny_bert_dir, tiny_llama_dir, ewt_dev):
    """Every batch is padded by at most MAX_PADDING of its real tokens (so the whole is too), and the models run
    PyTorch's fused attention (SDPA), not the eager softmax(QK^T)V."""
    from probekit.activations.extract import MAX_PADDING, Extractor
    from probekit.activations.models import load_model

    for folder in (tiny_bert_dir, tiny_llama_dir):
        lm = load_model(str(folder), device="cpu")
        assert lm.model.config._attn_implementation == "sdpa"
        ex = Extractor(lm, batch_tokens=2048)
        ex.encode_shard(ewt_dev[:150])
        real, computed = ex.stats["tokens"], ex.stats["padded_tokens"]
        assert real < computed <= (1 + MAX_PADDING) * real  # some padding (lengths vary), never more than the cap
