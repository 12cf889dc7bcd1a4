"""Tests for probekit.probing.control: word-type and sentence control tasks, selectivity."""
from __future__ import annotations

import numpy as np
import pytest

from probekit.errors import ConfigError, DataError, ProbekitError, TaskError
from probekit.probing.control import control_sentence_labels, control_word_labels, selectivity, type_uniform


def _corpus(seed=0, n=4000, vocab=300, k=5):
    rng = np.random.default_rng(seed)
    words = [f"w{int(i)}" for i in rng.zipf(1.3, size=n) % vocab]
    y = rng.choice(k, size=n, p=[0.5, 0.2, 0.15, 0.1, 0.05])
    y[rng.random(n) < 0.1] = -1
    return words, y


def test_one_label_per_type_and_minus_one_kept():
    words, y = _corpus()
    out = control_word_labels({"train": words}, {"train": y}, n_classes=5, seed=3)["train"]
    assert out.dtype == np.int64 and out.shape == y.shape
    np.testing.assert_array_equal(out == -1, y == -1)
    by_type: dict[str, set] = {}
    for w, c in zip(words, out):
        if c >= 0:
            by_type.setdefault(w, set()).add(int(c))
    assert all(len(v) == 1 for v in by_type.values())
    assert len(set().union(*by_type.values())) > 1  # not a constant labelling


def test_consistent_across_splits_and_independent_of_order():
    words, y = _corpus()
    dev_words = ["w1", "w2", "unseen_in_train", "w1", "unseen_in_train"]
    dev_y = np.array([0, 1, 2, -1, 3])
    a = control_word_labels({"train": words, "dev": dev_words}, {"train": y, "dev": dev_y}, n_classes=5, seed=7)
    tr = dict(zip(words, a["train"]))
    # types seen in train get the same label in dev
    for w, c in zip(dev_words, a["dev"]):
        if c >= 0 and w in tr and tr[w] >= 0:
            assert c == tr[w]
    assert a["dev"][3] == -1
    assert a["dev"][2] == a["dev"][4] >= 0  # a dev-only type is labelled consistently
    # reversing the corpus (same label distribution) does not change any type's label
    b = control_word_labels({"train": words[::-1], "dev": dev_words[::-1]},
                            {"train": y[::-1], "dev": dev_y[::-1]}, n_classes=5, seed=7)
    np.testing.assert_array_equal(b["train"][::-1], a["train"])
    np.testing.assert_array_equal(b["dev"][::-1], a["dev"])


def test_seed_changes_labels_and_is_reproducible():
    words, y = _corpus()
    a = control_word_labels({"train": words}, {"train": y}, n_classes=5, seed=1)["train"]
    b = control_word_labels({"train": words}, {"train": y}, n_classes=5, seed=1)["train"]
    c = control_word_labels({"train": words}, {"train": y}, n_classes=5, seed=2)["train"]
    np.testing.assert_array_equal(a, b)
    assert (a != c).mean() > 0.2


def test_type_labels_follow_train_label_distribution():
    # many distinct types: the per-type draws should match the empirical distribution of y in train
    n = 20000
    words = [f"t{i}" for i in range(n)]
    y = np.repeat([0, 1, 2], [12000, 6000, 2000])
    out = control_word_labels({"train": words}, {"train": y}, n_classes=4, seed=0)["train"]
    freq = np.bincount(out, minlength=4) / n
    np.testing.assert_allclose(freq, [0.6, 0.3, 0.1, 0.0], atol=0.015)


def test_lowercase_merges_case_variants():
    words = ["The", "the", "THE", "dog"] * 50
    y = np.zeros(len(words), dtype=np.int64)
    y[::2] = 1
    found = False
    for seed in range(20):
        out = control_word_labels({"train": words}, {"train": y}, n_classes=2, seed=seed, lowercase=True)["train"]
        assert out[0] == out[1] == out[2]
        cased = control_word_labels({"train": words}, {"train": y}, n_classes=2, seed=seed)["train"]
        found |= len({cased[0], cased[1], cased[2]}) > 1
    assert found  # without lowercase the variants are separate types


def test_type_uniform_is_stable():
    u = type_uniform("word", 0)
    assert 0 <= u < 1 and u == type_uniform("word", 0)
    assert u != type_uniform("word", 1) and u != type_uniform("Word", 0)


def test_word_control_errors():
    with pytest.raises(DataError):
        control_word_labels({"train": ["a", "b"]}, {"train": np.array([0])}, n_classes=2, seed=0)
    with pytest.raises(DataError):
        control_word_labels({"train": ["a"]}, {"train": np.array([5])}, n_classes=2, seed=0)
    with pytest.raises(DataError):
        control_word_labels({"dev": ["a"]}, {"dev": np.array([0])}, n_classes=2, seed=0)
    with pytest.raises(TaskError):
        control_word_labels({"train": ["a"]}, {"train": np.array([-1])}, n_classes=2, seed=0)
    with pytest.raises(ConfigError):
        control_word_labels({"train": ["a"]}, {"train": np.array([0])}, n_classes=1, seed=0)
    assert issubclass(TaskError, ProbekitError)


def test_sentence_control_is_seeded_permutation_keeping_minus_one():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=200)
    y[::7] = -1
    a = control_sentence_labels(y, seed=5)
    np.testing.assert_array_equal(a, control_sentence_labels(y, seed=5))
    np.testing.assert_array_equal(a == -1, y == -1)
    np.testing.assert_array_equal(np.sort(a), np.sort(y))
    assert (a != y).mean() > 0.3
    assert (a != control_sentence_labels(y, seed=6)).any()
    assert y[0] == -1  # input not modified in place
    with pytest.raises(DataError):
        control_sentence_labels(np.zeros((2, 2), dtype=int), seed=0)


def test_selectivity():
    np.testing.assert_allclose(selectivity([0.9, 0.8], [0.6, 0.7]), [0.3, 0.1])
    assert float(selectivity(0.5, 0.25)) == 0.25
    with pytest.raises(DataError):
        selectivity([0.9, 0.8], [0.6])
