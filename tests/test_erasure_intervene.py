"""The hidden-state edit (probekit.causal.intervene) on tiny BERT, GPT-2 and Llama: the hook sits where
``output_hidden_states[l]`` is made, a no-op edit changes nothing, an edit at a word changes a decoder only from
that word on, and runs agree with extraction."""
from __future__ import annotations

import numpy as np
import pytest

from probekit.causal.intervene import LayerEdit, check_layer, forward
from probekit.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", params=["bert", "gpt2", "llama"])
def lm(request, tiny_bert_dir, tiny_gpt2_dir, tiny_llama_dir):
    from probekit.activations.models import load_model

    folder = {"bert": tiny_bert_dir, "gpt2": tiny_gpt2_dir, "llama": tiny_llama_dir}[request.param]
    return load_model(str(folder), device="cpu")


def test_hook_sees_exactly_the_reported_hidden_state(lm):
    import torch

    ids = torch.as_tensor(lm.tokenizer(["The cat sat on the mat .", "Dogs bark"], padding=True)["input_ids"])
    for layer in range(lm.num_layers + 1):
        seen: list = []
        with LayerEdit(lm, layer, lambda h, seen=seen: seen.append(h.clone()) or h) as hook:
            hook.index = torch.arange(ids.numel())
            out = lm.model(input_ids=ids, output_hidden_states=True)
        ref = out.hidden_states[layer].reshape(-1, lm.hidden_size)
        assert torch.allclose(seen[0], ref, atol=1e-6), layer


def test_identity_edit_changes_nothing_and_matches_extraction(lm, mini_sents, tmp_path):
    from probekit.activations.extract import extract

    sents = [s for s in mini_sents if len(s) <= 14][:6]  # one window of the tiny models (64 positions)
    store = extract(lm, sents, store_root=tmp_path, dtype="float32", progress=False)
    every = [np.arange(len(s)) for s in sents]
    clean = list(forward(lm, sents, keep_layers=[1, 2]))
    same = list(forward(lm, sents, layer=1, edit=lambda h: h, edit_words=every, keep_layers=[2]))
    assert [r.index for r in clean] == list(range(6))
    for a, b in zip(clean, same):
        assert np.allclose(a.words[2], b.words[2], atol=1e-5)
    words = np.concatenate([r.words[2] for r in clean])
    assert np.allclose(words, store.layer(2), atol=1e-4)  # the vectors the eraser is fitted on


def test_edit_at_one_word_changes_a_decoder_from_that_word_on(lm, mini_sents):
    import torch

    sent = next(s for s in mini_sents if 6 <= len(s) <= 14)
    w = 3
    clean = next(forward(lm, [sent], keep_layers=[lm.num_layers]))
    hit = next(forward(lm, [sent], layer=1, edit=lambda h: h + torch.linspace(-5, 5, h.shape[-1]), edit_words=[np.array([w])],
                       keep_layers=[lm.num_layers]))
    diff = np.abs(clean.words[lm.num_layers] - hit.words[lm.num_layers]).max(1)
    assert diff[w] > 1e-3
    if lm.kind == "decoder":
        assert diff[:w].max() < 1e-5  # causal: nothing before the edited word moves
    else:
        assert diff[:w].max() > 1e-4  # bidirectional: the words before see it too
    # the next-token loss with the tied input embedding as head (the tiny models have none of their own)
    head = lm.model.get_input_embeddings().weight
    if lm.kind == "decoder":
        r = next(forward(lm, [sent], head=head))
        assert r.nll.shape == (max(t for ws in r.word_tokens for t in ws) + 1,)
        assert np.isfinite(r.nll).all()  # a BOS (or EOS) precedes the first word: every subword is predicted
        assert torch.is_tensor(head)


def test_layer_out_of_range(lm):
    with pytest.raises(ConfigError, match="out of range"):
        check_layer(lm, lm.num_layers + 1)
    with pytest.raises(ConfigError, match="out of range"):
        LayerEdit(lm, -(lm.num_layers + 2))
    assert check_layer(lm, -1) == lm.num_layers


def test_edit_free_run_gives_the_stores_vectors_in_the_same_batches(lm, mini_sents, tmp_path):
    """The intervention batches, pads and pools as extraction does (activations/batching.py, align.pool_words): with
    no edit, every layer's word vectors equal the fp32 store's to 1e-5 (in fact to the bit), over several batches (a
    small token budget), and the sentence embedding is the store's mean pooling of the last layer."""
    from probekit.activations.extract import extract

    sents = [s for s in mini_sents if len(s) <= 14]  # one window of the tiny models (64 positions)
    assert len(sents) >= 8
    store = extract(lm, sents, store_root=tmp_path, dtype="float32", precision="fp32", batch_tokens=96,
                    progress=False)
    layers = list(range(lm.num_layers + 1))
    runs = list(forward(lm, sents, keep_layers=layers, batch_tokens=96, precision="fp32"))
    assert [r.index for r in runs] == list(range(len(sents)))
    for k in layers:
        got = np.concatenate([r.words[k] for r in runs])
        assert np.abs(got - store.layer(k)).max() <= 1e-5, k
        # same batches, same kernels: the same bits (the intervention's own batching, without the padding cap,
        # put the tiny BERT's sentences in other batches and differed in the last bits)
        assert np.array_equal(got, store.layer(k)), k
    sent_mean = np.stack([r.sent_mean for r in runs])
    assert np.abs(sent_mean - store.sentence_vectors("mean", lm.num_layers)).max() <= 1e-5
