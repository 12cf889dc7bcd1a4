"""The architecture matrix (issue 20): every family a researcher probes, each with a tokenizer of its real family.

For each family (``tests/archs.py``): the model loads through ``load_model`` with the right kind; probekit's input ids
equal the tokenizer's own ids for the plain sentence; every alignment guarantee holds for every word
(``tiny.check_alignment``: each word's subwords cover its own characters, none shared, repairs are spaces only);
the extractor's batched (packed where the model takes it), pooled vectors equal a one-window-at-a-time forward pass; the store holds every layer; and a
linear probe fits on the stored vectors.
"""
from __future__ import annotations

import numpy as np
import pytest

from probekit.activations.align import align_batch
from probekit.activations.extract import Extractor, extract
from probekit.activations.models import load_model
from probekit.data.conllu_io import Sentence
from probekit.probing.linear import fit_layers

import archs
import tiny
from test_extract import _reference
from test_tokenizer_fidelity import _check_same_ids, odd_sentences

pytestmark = pytest.mark.usefixtures("one_thread")

#: Plain English with what breaks word alignment: contractions, numbers, hyphens, quotes, punctuation runs.
PLAIN = [
    (["I", "do", "n't", "think", "they", "'re", "gonna", "win", "."], [True, False, True, True, False, True, True,
                                                                      False, False]),
    (["Prices", "rose", "4.5", "%", "in", "2023", ",", "while", "wages", "fell", "."],
     [True, True, False, True, True, False, True, True, True, False, False]),
    (["She", "said", ":", "\"", "It", "'s", "a", "well-known", "fact", ".", "\""],
     [True, False, True, False, False, True, True, True, False, False, False]),
    (["We", "cannot", "go", "there", ";", "e-mail", "me", "at", "a.b@example.org", "!!!"],
     [True, True, True, False, True, True, True, True, False, False]),
]


def _sentences() -> list[Sentence]:
    plain = [Sentence.from_words(w, space_after=sp, sent_id=f"plain-{i}") for i, (w, sp) in enumerate(PLAIN)]
    return plain + odd_sentences()


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("archs")
    return {f.name: f.build(root / f.name) for f in archs.FAMILIES}


@pytest.fixture(scope="module")
def loaded(family_dirs):
    return {name: load_model(str(folder), device="cpu") for name, folder in family_dirs.items()}


FAMILY_IDS = [f.name for f in archs.FAMILIES]


def _family(name: str) -> archs.Family:
    return next(f for f in archs.FAMILIES if f.name == name)


@pytest.mark.parametrize("name", FAMILY_IDS)
def test_loads_with_its_kind_and_tokenizer_family(name, loaded):
    lm = loaded[name]
    fam = _family(name)
    assert lm.kind == fam.kind
    assert lm.num_layers == tiny.LAYERS and lm.hidden_size == tiny.HIDDEN
    assert lm.tokenizer.is_fast


@pytest.mark.parametrize("name", FAMILY_IDS)
def test_alignment_holds_for_every_word(name, loaded):
    tok = loaded[name].tokenizer
    sents = _sentences()
    for s, a in zip(sents, align_batch(tok, sents)):
        tiny.check_alignment(tok, s, a)
    # the model sees the tokenizer's own ids for the plain sentence (or for the repaired text, counted)
    assert _check_same_ids(tok, sents) < len(sents) // 2


@pytest.mark.parametrize("name", FAMILY_IDS)
def test_extracted_vectors_equal_a_plain_forward_pass(name, loaded):
    lm = loaded[name]
    ex = Extractor(lm, max_length=24, batch_tokens=120)  # short windows: long sentences are cut into several
    # several windows share a packed row (block mask, restarting positions) in every family but DeBERTa-v2, whose
    # relative-position code takes neither mask form: it runs padded rows
    assert (ex.packing is not None) == (name != "deberta-v2"), ex.packing
    sents = _sentences()
    words, pooled = ex.encode_shard(sents)
    ref_words, ref_pooled = _reference(lm, ex, sents)
    assert words.shape == (tiny.LAYERS + 1, sum(len(s) for s in sents), tiny.HIDDEN)
    np.testing.assert_allclose(words, ref_words, atol=5e-5)
    for k in pooled:
        np.testing.assert_allclose(pooled[k], ref_pooled[k], atol=5e-5, err_msg=k)


@pytest.mark.parametrize("name", FAMILY_IDS)
def test_store_and_probe(name, loaded, tmp_path):
    lm = loaded[name]
    sents = _sentences()
    store = extract(lm, sents, store_root=tmp_path, progress=False)
    n = sum(len(s) for s in sents)
    assert store.n_layers == tiny.LAYERS + 1
    X = store.layers(list(range(store.n_layers)))
    assert X.shape == (tiny.LAYERS + 1, n, tiny.HIDDEN) and np.isfinite(X).all()
    # label: is the word punctuation-only; a probe on 32 random-model features fits its own training words
    words = [w for s in sents for w in s.words]
    y = np.array([int(not any(c.isalnum() for c in w)) for w in words])
    fits = fit_layers(X.astype(np.float32), y, n_classes=2, fixed_C=[1.0] * X.shape[0], device="cpu")
    majority = max(y.mean(), 1 - y.mean())
    train_acc = [float((f.predict(X[i].astype(np.float32)) == y).mean()) for i, f in enumerate(fits)]
    assert max(train_acc) > majority, (train_acc, majority)
