"""Statistics over seeds and over layers.

* :func:`mean_ci` / :func:`aggregate_seeds`: mean and Student-t confidence interval over seeds.
* :func:`center_of_gravity` / :func:`expected_layer`: the layer summaries of Tenney, Das & Pavlick,
  "BERT Rediscovers the Classical NLP Pipeline" (ACL 2019): the centre of gravity of the scalar-mix weights and the
  expected layer of the cumulative scores (:mod:`probekit.probing.scalar_mix`, :mod:`probekit.runner.scalar_mix`).

Layer convention everywhere in probekit: layer 0 = the embedding output, layer l = the output of
transformer block l, so a model with ``n_layers`` blocks has layers ``0 .. n_layers``.
"""
from __future__ import annotations

import logging
import math
from typing import Mapping, Sequence, Union

import numpy as np

from probekit.errors import ConfigError, DataError
from probekit.results.significance import score

log = logging.getLogger(__name__)

__all__ = ["mean_ci", "over_seeds", "COUNT_METRICS", "aggregate_seeds", "center_of_gravity", "expected_layer", "cumulative_summary", "SEED_COLUMNS"]

#: Columns that vary across seeds of one configuration and are therefore not grouping keys (train_size: a tuning
#: baseline with train_sentences draws its own subset per seed, so its word count differs by seed; it is averaged).
SEED_COLUMNS = ("seed", "value", "train_seconds", "train_size")

Scores = Union[Sequence[float], np.ndarray, Mapping[int, float]]

#: Metrics that count something (a solver's iterations, the items a task leaves out, an eraser's rank). A Student-t
#: interval over seeds means nothing for them (it can go below zero); their spread is the range over seeds instead,
#: ``seed_min`` .. ``seed_max``, and ``ci_lo`` / ``ci_hi`` stay empty.
COUNT_METRICS = frozenset({"fit_iterations", "left_out", "eraser_rank"})


def over_seeds(values, metric: str | None, confidence: float = 0.95) -> dict:
    """One row group's values over seeds: ``mean``, ``ci_lo``, ``ci_hi`` (:func:`mean_ci`) and, for a count metric
    (:data:`COUNT_METRICS`), no interval (NaN) but ``seed_min`` and ``seed_max``, the range over the finite values
    (NaN for the other metrics)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    mean, lo, hi = mean_ci(v, confidence)
    if metric not in COUNT_METRICS:
        return {"mean": mean, "ci_lo": lo, "ci_hi": hi, "seed_min": math.nan, "seed_max": math.nan}
    v = v[np.isfinite(v)]
    return {"mean": mean, "ci_lo": math.nan, "ci_hi": math.nan,
            "seed_min": float(v.min()) if v.size else math.nan, "seed_max": float(v.max()) if v.size else math.nan}


def mean_ci(values, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and two-sided Student-t confidence interval of the mean.

    ``lo, hi = mean -/+ t_{(1+c)/2, n-1} * s / sqrt(n)`` with ``s`` the sample standard deviation
    (ddof = 1) over the ``n`` finite values (NaNs are ignored).

    Conventions: ``n == 1`` -> ``(v, v, v)``: one seed gives no spread estimate, so the interval
    collapses to the value (it does *not* mean certainty; check ``n_seeds``). ``n == 0`` ->
    ``(nan, nan, nan)``.

    Args:
        values: ``[n]`` one score per seed.
        confidence: in (0, 1).

    Returns:
        ``(mean, lo, hi)`` floats.
    """
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence}.")
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    n = v.size
    if n == 0:
        return (math.nan, math.nan, math.nan)
    m = float(v.mean())
    if n == 1:
        return (m, m, m)
    from scipy import stats

    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * v.std(ddof=1) / math.sqrt(n))
    return (m, m - half, m + half)


def aggregate_seeds(df, confidence: float = 0.95):
    """Aggregate the tidy results table over seeds.

    Groups by every column except ``seed``, ``value``, ``train_seconds`` and ``train_size`` (missing keys such
    as ``None`` form their own group) and returns one row per group with the key columns plus
    ``mean``, ``ci_lo``, ``ci_hi`` (:func:`over_seeds`: no interval for a count metric), ``n_seeds``, ``std``
    (ddof = 1; NaN for one seed), ``seed_min``, ``seed_max`` (count metrics only)
    and, when the input has them, ``train_seconds`` and ``train_size`` (means over seeds: a tuning baseline's
    per-seed training subset can differ in size).

    Args:
        df: pandas DataFrame in the results schema (one row per ... x metric x seed).
        confidence: level of the interval.

    Returns:
        DataFrame sorted by the key columns.

    Raises:
        DataError: a column of the schema is missing, or one group has two rows with the same seed
            (duplicate results; drop them with ``df.drop_duplicates(...)`` first).
    """
    import pandas as pd

    for col in ("seed", "value"):
        if col not in df.columns:
            raise DataError(f"Results table has no {col!r} column (columns: {list(df.columns)}).")
    keys = [c for c in df.columns if c not in SEED_COLUMNS]
    out_cols = keys + ["mean", "ci_lo", "ci_hi", "n_seeds", "std", "seed_min", "seed_max"]
    averaged = [c for c in ("train_seconds", "train_size") if c in df.columns]
    out_cols += averaged
    if df.empty:
        return pd.DataFrame(columns=out_cols)
    if not keys:
        groups = [((), df)]
    else:
        groups = df.groupby(keys, dropna=False, sort=True)
    rows = []
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        seeds = g["seed"]
        if seeds.duplicated().any():
            dup = seeds[seeds.duplicated()].iloc[0]
            dup = dup.item() if hasattr(dup, "item") else dup
            desc = ", ".join(f"{k}={getattr(v, 'item', lambda: v)()!r}" for k, v in zip(keys, key))
            raise DataError(f"Results have more than one row for seed {dup!r} in group ({desc}); "
                            f"drop duplicate rows before aggregating.")
        vals = pd.to_numeric(g["value"], errors="coerce").to_numpy(dtype=np.float64)
        finite = vals[np.isfinite(vals)]
        row = dict(zip(keys, key))
        stats = over_seeds(vals, row.get("metric"), confidence)
        row.update(stats, n_seeds=int(finite.size), std=float(finite.std(ddof=1)) if finite.size > 1 else math.nan)
        for c in averaged:
            t = pd.to_numeric(g[c], errors="coerce")
            row[c] = float(t.mean()) if t.notna().any() else math.nan
        rows.append(row)
    out = pd.DataFrame(rows, columns=out_cols)
    # groupby turns None keys into NaN; give None back so missing stays "missing" like the input.
    for k in keys:
        if df[k].dtype == object and out[k].isna().any():
            out[k] = out[k].astype(object).where(out[k].notna(), None)
    return out.reset_index(drop=True)


def _as_layer_scores(scores: Scores) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(scores, Mapping):
        if not scores:
            raise DataError("No layer scores given.")
        layers = np.array(sorted(int(k) for k in scores), dtype=np.float64)
        vals = np.array([float(scores[k]) for k in sorted(scores, key=int)], dtype=np.float64)
    else:
        vals = np.asarray(scores, dtype=np.float64)
        if vals.ndim != 1 or vals.size == 0:
            raise DataError(f"Layer scores must be a non-empty 1-D sequence [layer], got shape {vals.shape}.")
        layers = np.arange(vals.size, dtype=np.float64)
    if not np.all(np.isfinite(vals)):
        raise DataError(f"Layer scores must be finite, got {vals.tolist()}.")
    if np.any(layers < 0):
        raise DataError(f"Layer indices must be >= 0 (0 = embeddings), got {layers.astype(int).tolist()}.")
    return layers, vals


def center_of_gravity(weights_by_layer: Scores) -> float:
    """Centre of gravity of scalar-mix weights (Tenney et al. 2019, Eq. 2): ``E_s[l] = sum_l l * s^(l)``.

    ``s`` are the softmax mixing weights of one probe over layers ``0..L`` (layer 0 = embeddings;
    :mod:`probekit.probing.scalar_mix`), which sum to 1; they are divided by their sum here, so that weights read
    back rounded from a table still give a mean layer.

    Args:
        weights_by_layer: ``[n_layers + 1]`` weights indexed by layer, or ``{layer: weight}``.

    Returns:
        A float in ``[min layer, max layer]``; ``nan`` when all weights are zero.

    Raises:
        DataError: a negative weight (mixing weights are a softmax: never negative).
    """
    layers, s = _as_layer_scores(weights_by_layer)
    if np.any(s < 0):
        raise DataError(f"center_of_gravity needs non-negative mixing weights, got {s.tolist()}.")
    total = s.sum()
    if total == 0:
        log.warning("center_of_gravity: all layer weights are zero; returning nan")
        return math.nan
    return float((layers * s).sum() / total)


def expected_layer(cumulative_scores, axis: int = -1):
    """Expected layer from cumulative scores (Tenney et al. 2019, Eqs. 3-4).

    ``cumulative_scores[l]`` is ``Score(P^(l))``, the score of the probe on the scalar mix of layers ``0..l``
    (:mod:`probekit.probing.scalar_mix`); the differential scores ``Delta^(l) = Score(P^(l)) - Score(P^(l-1))``,
    ``l = 1..L``, are what adding layer ``l`` gains, and
    ``E_Delta[l] = sum_{l=1}^{L} l * Delta^(l) / sum_{l=1}^{L} Delta^(l)``, with every delta counted with its sign
    (the paper's formula; the denominator is ``Score(P^(L)) - Score(P^(0))``, the total gain).

    Args:
        cumulative_scores: ``[..., L + 1]`` scores of the prefixes ``0..L`` along ``axis`` (several sets at once,
            e.g. bootstrap replicates), or ``{l: score}`` for ``l = 0..L``.

    Returns:
        A float for one set of scores, else an array; ``nan`` where the total gain is ``<= 0`` (no layer adds
        anything: there is no expected layer).
    """
    if isinstance(cumulative_scores, Mapping):
        layers, s = _as_layer_scores(cumulative_scores)
        if not np.array_equal(layers, np.arange(layers.size)):
            raise DataError(f"expected_layer needs the cumulative scores of every prefix 0..L, got layers "
                            f"{layers.astype(int).tolist()}.")
    else:
        s = np.moveaxis(np.asarray(cumulative_scores, dtype=np.float64), axis, -1)
    if s.ndim == 0 or s.shape[-1] < 2:
        raise DataError("expected_layer needs the scores of at least two prefixes (0 = embeddings, and 0..1).")
    delta = np.diff(s, axis=-1)
    total = delta.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(total > 0, (np.arange(1, s.shape[-1]) * delta).sum(-1) / np.where(total > 0, total, 1.0),
                       np.nan)
    return float(out) if out.ndim == 0 else out


def cumulative_summary(metric: str, counts, weights, confidence: float = 0.95) -> dict:
    """Tenney's cumulative-scoring summary of the prefixes ``0..L``, with sentence-bootstrap intervals.

    Args:
        metric: the Score (``accuracy``, ``macro_f1`` or ``pos_f1``; :mod:`probekit.results.significance`).
        counts: ``[prefix, sentence, k]`` per-sentence counts of each prefix probe's test predictions
            (:func:`probekit.results.significance.sentence_counts`), prefixes ``0..L`` in order.
        weights: ``[resample, sentence]`` multiplicities (:func:`probekit.results.significance.resample_weights`);
            every prefix is scored on the same resamples, so the gain and the expected layer are paired.

    Returns:
        ``{"scores": [L+1], "delta": [L] (Delta^(1..L)), "gain", "gain_lo", "gain_hi", "expected_layer",
        "expected_layer_lo", "expected_layer_hi"}``: ``gain = Score(P^(L)) - Score(P^(0))`` and
        :func:`expected_layer`, each with its percentile interval over the resamples (the expected layer's over the
        resamples where it exists). The expected layer and its interval are NaN unless the gain's interval lies above
        0: without a gain that the test set supports, the deltas are noise and their mean layer means nothing (a
        random-weights model would get one near the middle).
    """
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence}.")
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 3 or counts.shape[0] < 2:
        raise DataError(f"cumulative_summary needs counts [prefix, sentence, k] of at least two prefixes, got shape "
                        f"{counts.shape}.")
    scores = score(metric, counts.sum(1))  # [P]
    boot = score(metric, np.einsum("rs,psk->prk", weights, counts))  # [P, R]
    q = [(1 - confidence) / 2, (1 + confidence) / 2]
    gain = float(scores[-1] - scores[0])
    gain_lo, gain_hi = (float(v) for v in np.quantile(boot[-1] - boot[0], q))
    el, el_lo, el_hi = math.nan, math.nan, math.nan
    if gain_lo > 0:
        el = expected_layer(scores)
        reps = expected_layer(boot, axis=0)
        reps = reps[np.isfinite(reps)]
        if reps.size:
            el_lo, el_hi = (float(v) for v in np.quantile(reps, q))
    return {"scores": scores, "delta": np.diff(scores), "gain": gain, "gain_lo": gain_lo, "gain_hi": gain_hi,
            "expected_layer": el, "expected_layer_lo": el_lo, "expected_layer_hi": el_hi}
