"""Uncertainty over test sentences and paired significance between scores on the same test words.

The words of one sentence are not independent (one bad parse misleads several of them), so every resampling here is
*clustered by sentence*: a resample draws whole test sentences with replacement. Each score is a function of
per-sentence count vectors (:func:`sentence_counts`), so a resample is one matrix product ``W @ counts`` with ``W``
the ``[resample, sentence]`` multiplicity matrix, drawn once (:func:`resample_weights`) and shared by every score of
the same test set: the intervals of two layers are then *paired* (the same resampled sentences), and a difference's
interval is read off the same resamples.

* :func:`resample_indices`: the one sentence draw behind every bootstrap of probekit (these intervals, the structural
  probes' metrics, which are recomputed on each resample of the sentences, and the causal effects' ratios).
* :func:`bootstrap_interval`: percentile interval of a score (accuracy, macro-F1, positive-class F1).
* :func:`bootstrap_ratio`: a pooled ratio ``sum(num) / sum(den)`` over sentences (loss change per token) and its
  percentile interval.
* :func:`paired_test`: two-sided p-value of "A and B score the same" by a paired permutation test: each sentence's
  counts are swapped between A and B with probability 1/2 (the null: the two systems are exchangeable on every
  sentence), with scipy's definition of the randomised two-sided p-value.
* :func:`holm`: Holm's step-down adjustment of a family of p-values (controls the family-wise error rate).

Counts layout (``[sentence, k]``): accuracy ``[correct, n]``; binary F1 ``[tp, fp, fn]`` of class 1; macro-F1
``[tp_0, fp_0, fn_0, tp_1, ...]`` (``3 * n_classes`` columns; a class counts in the macro average when it occurs in
gold or prediction, as :func:`sklearn.metrics.f1_score` does).
"""
from __future__ import annotations

import numpy as np

from probekit.errors import ConfigError, DataError

__all__ = ["METRICS", "MIN_RESAMPLES", "sentence_counts", "score", "resample_indices", "resample_weights",
           "percentile_interval", "bootstrap_interval", "bootstrap_ratio", "swap_matrix", "paired_test", "Products", "paired_from_products", "holm"]

METRICS = ("accuracy", "macro_f1", "pos_f1")
#: Fewer resamples give percentile intervals whose ends move by more than their own width between seeds.
MIN_RESAMPLES = 100


def sentence_counts(metric: str, gold: np.ndarray, pred: np.ndarray, sentence: np.ndarray, n_sentences: int,
                    n_classes: int) -> np.ndarray:
    """Per-sentence count vectors of one prediction set: ``[n_sentences, k]`` float64 (layout in the module doc).

    Args:
        gold, pred: ``[item]`` class ids.
        sentence: ``[item]`` index of each item's test sentence in ``0 .. n_sentences - 1``.
    """
    gold, pred, sentence = (np.asarray(a, dtype=np.int64) for a in (gold, pred, sentence))
    if not (gold.shape == pred.shape == sentence.shape):
        raise DataError(f"gold, pred and sentence must have one entry per item, got shapes {gold.shape}, "
                        f"{pred.shape}, {sentence.shape}.")
    if metric == "accuracy":
        cols = [(gold == pred).astype(np.float64), np.ones(gold.size)]
    elif metric == "pos_f1":
        cols = [((gold == 1) & (pred == 1)) * 1.0, ((gold != 1) & (pred == 1)) * 1.0, ((gold == 1) & (pred != 1)) * 1.0]
    elif metric == "macro_f1":
        cols = []
        for c in range(n_classes):
            cols += [((gold == c) & (pred == c)) * 1.0, ((gold != c) & (pred == c)) * 1.0,
                     ((gold == c) & (pred != c)) * 1.0]
    else:
        raise ConfigError(f"No sentence-level statistic for metric {metric!r}; choose one of {list(METRICS)}.")
    out = np.zeros((n_sentences, len(cols)))
    for j, c in enumerate(cols):
        out[:, j] = np.bincount(sentence, weights=c, minlength=n_sentences)
    return out


def score(metric: str, totals: np.ndarray) -> np.ndarray:
    """The metric from summed counts ``[..., k]`` (any leading shape) -> ``[...]``."""
    t = np.asarray(totals, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        if metric == "accuracy":
            return t[..., 0] / t[..., 1]
        if metric == "pos_f1":
            den = 2 * t[..., 0] + t[..., 1] + t[..., 2]
            return np.where(den > 0, 2 * t[..., 0] / np.where(den > 0, den, 1), 0.0)
        if metric == "macro_f1":
            t = t.reshape(t.shape[:-1] + (-1, 3))
            den = 2 * t[..., 0] + t[..., 1] + t[..., 2]
            present = den > 0
            f1 = np.where(present, 2 * t[..., 0] / np.where(present, den, 1), 0.0)
            return f1.sum(-1) / np.maximum(present.sum(-1), 1)
    raise ConfigError(f"No sentence-level statistic for metric {metric!r}; choose one of {list(METRICS)}.")


def _check_resamples(n_resamples: int) -> int:
    n = int(n_resamples)
    if n < MIN_RESAMPLES:
        raise ConfigError(f"The number of bootstrap resamples is {n_resamples}; use at least {MIN_RESAMPLES} "
                          f"(1000 is the default).")
    return n


def resample_indices(n_sentences: int, n_resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """``[n_resamples, n_sentences]`` sentence indices drawn with replacement: row r is bootstrap resample r."""
    n_resamples = _check_resamples(n_resamples)
    if n_sentences < 1:
        raise DataError("No test sentences to resample: the task has no test words.")
    return np.random.default_rng(seed).integers(0, n_sentences, size=(n_resamples, n_sentences))


def resample_weights(n_sentences: int, n_resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """``[n_resamples, n_sentences]`` multiplicities of :func:`resample_indices` (each row sums to ``n_sentences``)."""
    idx = resample_indices(n_sentences, n_resamples, seed)
    idx += np.arange(len(idx))[:, None] * n_sentences
    return np.bincount(idx.ravel(), minlength=len(idx) * n_sentences).reshape(-1, n_sentences).astype(np.float64)


def _check_confidence(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence}.")
    return confidence


def percentile_interval(replicates, confidence: float = 0.95) -> tuple[float, float]:
    """The percentile interval of bootstrap replicates (NaN replicates, a metric undefined on a resample, left out)."""
    a = (1 - _check_confidence(confidence)) / 2
    reps = np.asarray(replicates, dtype=np.float64)
    reps = reps[np.isfinite(reps)]
    if not reps.size:
        return float("nan"), float("nan")
    lo, hi = np.quantile(reps, [a, 1 - a])
    return float(lo), float(hi)


def bootstrap_ratio(num, den=None, *, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
                    ) -> tuple[float, float, float]:
    """``(sum(num) / sum(den), lo, hi)`` over sentences (``den`` None: the mean of ``num``) and its percentile
    interval. Sentences with ``den == 0`` count in the resampling (as they would in a new sample); all NaN when there
    is nothing to divide by."""
    num = np.asarray(num, dtype=np.float64)
    den = np.ones_like(num) if den is None else np.asarray(den, dtype=np.float64)
    if not len(num) or den.sum() == 0:
        return (float("nan"),) * 3
    w = resample_weights(len(num), n_resamples, seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        reps = (w @ num) / (w @ den)
    return (float(num.sum() / den.sum()), *percentile_interval(reps, confidence))


def bootstrap_interval(metric: str, counts: np.ndarray, weights: np.ndarray, confidence: float = 0.95
                       ) -> tuple[float, float, float]:
    """(score, lo, hi): the score on all sentences and the percentile interval of its sentence bootstrap.

    Args:
        counts: ``[sentence, k]`` from :func:`sentence_counts`, or ``[seed, sentence, k]``: the score is then the
            mean over seeds on every resample (as the summary's mean is the mean over seeds).
        weights: :func:`resample_weights` for the same sentences.
    """
    _check_confidence(confidence)
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim == 2:
        counts = counts[None]
    if counts.shape[1] != weights.shape[1]:
        raise DataError(f"counts cover {counts.shape[1]} sentences but the resample weights {weights.shape[1]}.")
    point = float(score(metric, counts.sum(1)).mean())
    if all(np.array_equal(counts[0], c) for c in counts[1:]):
        counts = counts[:1]  # seeds that predict alike (the linear probe): one product
    boot = np.mean([score(metric, weights @ c) for c in counts], axis=0)
    return (point, *percentile_interval(boot, confidence))


def swap_matrix(n_sentences: int, n_resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """``[n_resamples, n_sentences]`` 0/1: which sentences a permutation of :func:`paired_test` swaps."""
    n_resamples = _check_resamples(n_resamples)
    return np.random.default_rng(seed).integers(0, 2, size=(n_resamples, n_sentences)).astype(np.float64)


def paired_test(metric: str, a: np.ndarray, b: np.ndarray, *, n_resamples: int = 1000, seed: int = 0,
                weights: np.ndarray | None = None, confidence: float = 0.95) -> dict:
    """Paired comparison of two prediction sets on the same test sentences.

    Args:
        a, b: ``[sentence, k]`` counts (:func:`sentence_counts`) of A and B on the same sentences and words.
        weights: bootstrap multiplicities for the interval of the difference (drawn from ``seed`` when None).

    Returns:
        ``{"diff": score(A) - score(B), "lo", "hi": percentile interval of the difference over the sentence
        bootstrap, "p": two-sided permutation p-value}``. The p-value is scipy's randomised two-sided definition
        ``min(1, 2 * min(P(null >= obs), P(null <= obs)))`` with ``P = (hits + 1) / (n_resamples + 1)``.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise DataError(f"A paired test needs the same test sentences on both sides, got counts {a.shape} and "
                        f"{b.shape}.")
    Z = swap_matrix(a.shape[0], n_resamples, seed)
    W = resample_weights(a.shape[0], n_resamples, seed) if weights is None else weights
    return paired_from_products(metric, Products(a, Z, W), Products(b, Z, W), confidence)


class Products:
    """A prediction set's summed counts and their products with a swap matrix and resample weights, computed once
    and shared by every test the set is in (a layer is compared with the best and with both neighbours)."""

    def __init__(self, counts: np.ndarray, swap: np.ndarray, weights: np.ndarray):
        counts = np.asarray(counts, dtype=np.float64)
        self.total = counts.sum(0)
        self.swapped = swap @ counts  # [resample, k]
        self.boot = weights @ counts  # [resample, k]


def paired_from_products(metric: str, a: Products, b: Products, confidence: float = 0.95) -> dict:
    """:func:`paired_test` from precomputed :class:`Products` (same swap matrix and weights on both sides)."""
    obs = float(score(metric, a.total) - score(metric, b.total))
    # a permutation gives A's counts of the swapped sentences to B and B's to A
    ta = a.total - a.swapped + b.swapped
    tb = b.total - b.swapped + a.swapped
    null = score(metric, ta) - score(metric, tb)
    n = null.shape[0]
    eps = 1e-12 * max(1.0, abs(obs))  # scipy's tolerance for ties with the observed statistic
    greater = (np.count_nonzero(null >= obs - eps) + 1) / (n + 1)
    less = (np.count_nonzero(null <= obs + eps) + 1) / (n + 1)
    boot = score(metric, a.boot) - score(metric, b.boot)
    lo, hi = np.quantile(boot, [(1 - confidence) / 2, (1 + confidence) / 2])
    return {"diff": obs, "lo": float(lo), "hi": float(hi), "p": float(min(1.0, 2 * min(greater, less)))}


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values (same order as given); reject where adjusted p <= alpha."""
    p = np.asarray(p_values, dtype=np.float64).ravel()
    m = p.size
    if m == 0:
        return p
    order = np.argsort(p, kind="mergesort")
    adj = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.minimum(adj, 1.0)
    return out
