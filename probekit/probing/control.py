"""Control tasks and selectivity (Hewitt & Liang 2019).

Hewitt & Liang, "Designing and Interpreting Probes with Control Tasks" (EMNLP 2019) ask whether a
probe's accuracy reflects what the *representation* encodes or what the *probe* can memorise. A
control task keeps the inputs and the output space of the real task but replaces the labels by
ones that only a memorising probe can predict:

* word level (:func:`control_word_labels`): every word **type** gets one random label, drawn from
  the task's empirical label distribution in train. The label is a function of the word's
  identity only, so a probe can reach high control accuracy only by memorising types.
* sentence level (:func:`control_sentence_labels`): the labels are randomly permuted across
  sentences (there is no "type" to memorise).

**Selectivity** = task accuracy - control accuracy (:func:`selectivity`), per layer. A good probe
is *selective*: high on the task, low on the control.

Everything here is a deterministic function of the seed; nothing depends on corpus order.
"""
from __future__ import annotations

import hashlib
from typing import Mapping, Sequence

import numpy as np

from probekit.errors import ConfigError, DataError, TaskError

__all__ = ["control_word_labels", "control_sentence_labels", "control_parents", "selectivity", "type_uniform"]

_TWO_POW_53 = float(2 ** 53)


def type_uniform(word_type: str, seed: int) -> float:
    """Return a uniform number in [0, 1) that depends only on ``(seed, word_type)``.

    The draw hashes the seed and the UTF-8 bytes of the type with BLAKE2b (stable across runs,
    machines and Python processes, unlike ``hash()``) and keeps the top 53 bits.
    """
    digest = hashlib.blake2b(word_type.encode("utf-8"), digest_size=8,
                             key=str(int(seed)).encode("ascii")).digest()
    return (int.from_bytes(digest, "big") >> 11) / _TWO_POW_53


def _check_split(name: str, words: Sequence[str], y: np.ndarray) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise DataError(f"Labels of split {name!r} must be a 1-D array [word], got shape {y.shape}.")
    if len(words) != len(y):
        raise DataError(
            f"Split {name!r} has {len(words)} words but {len(y)} labels; pass the flattened words of "
            f"every sentence in the same order as task.encode(sentences).")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"Labels of split {name!r} must be integer class ids (-1 = left out), got dtype {y.dtype}.")
    return y.astype(np.int64, copy=False)


def control_word_labels(words_by_split: Mapping[str, Sequence[str]],
                        y_by_split: Mapping[str, np.ndarray], *,
                        n_classes: int, seed: int, lowercase: bool = False,
                        train_split: str = "train") -> dict[str, np.ndarray]:
    """Word-type control labels (Hewitt & Liang 2019).

    Each word type ``w`` gets the label ``F^{-1}(u(seed, w))`` where ``F`` is the cumulative
    empirical label distribution of the real task in the train split (entries with y == -1 are
    not counted) and ``u`` is :func:`type_uniform`. The draw does not depend on corpus order or
    on which split a type first occurs in, so a type seen only in dev/test gets the same label
    it would get anywhere else, and two runs with the same seed give identical labels.

    Args:
        words_by_split: ``{split: [word, ...]}`` flattened word forms, shape ``[n_words]``, aligned
            with ``y_by_split[split]``.
        y_by_split: ``{split: np.int64[n_words]}`` real task labels; -1 = left out (stays -1).
        n_classes: number of classes K of the task; labels must lie in ``[0, K)``.
        seed: control seed; different seeds give independent control tasks.
        lowercase: map words to lower case before typing them (``The`` and ``the`` one type).
        train_split: the split whose label distribution is used.

    Returns:
        ``{split: np.int64[n_words]}`` control labels with -1 exactly where the task had -1.
    """
    if n_classes < 2:
        raise ConfigError(f"n_classes must be >= 2 for a control task, got {n_classes}.")
    if set(words_by_split) != set(y_by_split):
        raise DataError(f"words_by_split has splits {sorted(words_by_split)} but y_by_split has "
                        f"{sorted(y_by_split)}; pass the same splits to both.")
    if train_split not in y_by_split:
        raise DataError(f"No {train_split!r} split given (splits: {sorted(y_by_split)}); the control label "
                        f"distribution is taken from the train split.")
    ys = {s: _check_split(s, words_by_split[s], y_by_split[s]) for s in y_by_split}
    for s, y in ys.items():
        bad = y[(y < -1) | (y >= n_classes)]
        if bad.size:
            raise DataError(f"Split {s!r} has label {int(bad[0])} outside [-1, {n_classes}); "
                            f"check n_classes (= {n_classes}).")
    y_train = ys[train_split]
    counts = np.bincount(y_train[y_train >= 0], minlength=n_classes).astype(np.float64)
    if counts.sum() == 0:
        raise TaskError(f"The {train_split!r} split has no labelled word (all -1); cannot build a control task.")
    cdf = np.cumsum(counts / counts.sum())
    cdf[-1] = 1.0  # guard against rounding: every u in [0, 1) maps to a class
    cache: dict[str, int] = {}

    def label_of(word: str) -> int:
        key = word.lower() if lowercase else word
        lab = cache.get(key)
        if lab is None:
            lab = int(np.searchsorted(cdf, type_uniform(key, seed), side="right"))
            cache[key] = lab
        return lab

    out: dict[str, np.ndarray] = {}
    for s, y in ys.items():
        words = words_by_split[s]
        ctrl = np.full(len(y), -1, dtype=np.int64)
        for i in np.flatnonzero(y >= 0):
            ctrl[i] = label_of(words[int(i)])
        out[s] = ctrl
    return out


def control_sentence_labels(y: np.ndarray, *, seed: int) -> np.ndarray:
    """Sentence-level control: the labelled entries of ``y`` permuted at random (seeded).

    Args:
        y: ``np.int64[n_sentences]`` class ids; -1 = undefined, kept in place.
        seed: seed of the permutation (``np.random.default_rng(seed)``).

    Returns:
        ``np.int64[n_sentences]``: same multiset of labels, -1 entries unchanged.
    """
    y = np.asarray(y)
    if y.ndim != 1:
        raise DataError(f"Sentence labels must be a 1-D array [sentence], got shape {y.shape}.")
    y = y.astype(np.int64, copy=True)
    idx = np.flatnonzero(y >= 0)
    y[idx] = y[idx][np.random.default_rng(seed).permutation(len(idx))]
    return y


def selectivity(task_acc, control_acc) -> np.ndarray:
    """Selectivity = task accuracy - control accuracy, elementwise (e.g. per layer ``[layer]``).

    Both inputs must have the same shape (scalars are fine). Positive = the probe does better on
    the linguistic task than on memorising random type labels.
    """
    a = np.asarray(task_acc, dtype=np.float64)
    c = np.asarray(control_acc, dtype=np.float64)
    if a.shape != c.shape:
        raise DataError(f"task_acc has shape {a.shape} but control_acc has shape {c.shape}; "
                        f"pass one score per layer for both.")
    return a - c


#: Attachment behaviours of the control structure, one per word type (Hewitt & Liang 2019, section 3.3).
CONTROL_BEHAVIOURS = ("previous", "first", "last")


def control_parents(words: Sequence[str], seed: int) -> np.ndarray:
    """0-based parents of Hewitt & Liang's control structure for one sentence (a tree, rooted at the first word).

    Hewitt & Liang give each word *type* a fixed random behaviour: attach to itself, to the first word or to the
    last word of the sentence. A self-loop has no tree distance, so here it becomes "attach to the previous word"
    (the nearest word that keeps a tree): the first word is the root, the last word attaches to the first, and every
    other word attaches by its type to the previous, the first or the last word. Only the word's type (its lower-cased
    form) and the seed decide; the structure says nothing about syntax, so a probe that fits it well memorises.
    """
    n = len(words)
    parent = np.full(n, -1, dtype=np.int64)
    for i in range(1, n):
        if i == n - 1:
            parent[i] = 0
            continue
        behaviour = CONTROL_BEHAVIOURS[int(type_uniform(words[i].lower(), seed) * len(CONTROL_BEHAVIOURS))]
        parent[i] = {"previous": i - 1, "first": 0, "last": n - 1}[behaviour]
    return parent
