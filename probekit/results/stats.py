"""Statistics over seeds and over layers.

* :func:`mean_ci` / :func:`aggregate_seeds`: mean and Student-t confidence interval over seeds.
* :func:`center_of_gravity` / :func:`expected_layer`: the layer summaries of Tenney, Das & Pavlick,
  "BERT Rediscovers the Classical NLP Pipeline" (ACL 2019), computed from per-layer probe scores.

Layer convention everywhere in probekit: layer 0 = the embedding output, layer l = the output of
transformer block l, so a model with ``n_layers`` blocks has layers ``0 .. n_layers``.
"""
from __future__ import annotations

import logging
import math
from typing import Mapping, Sequence, Union

import numpy as np

from probekit.errors import ConfigError, DataError, unknown_name

log = logging.getLogger(__name__)

__all__ = ["mean_ci", "aggregate_seeds", "center_of_gravity", "expected_layer", "SEED_COLUMNS"]

#: Columns that vary across seeds of one configuration and are therefore not grouping keys (train_size: a tuning
#: baseline with train_sentences draws its own subset per seed, so its word count differs by seed; it is averaged).
SEED_COLUMNS = ("seed", "value", "train_seconds", "train_size")

Scores = Union[Sequence[float], np.ndarray, Mapping[int, float]]


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
    ``mean``, ``ci_lo``, ``ci_hi`` (:func:`mean_ci`), ``n_seeds``, ``std`` (ddof = 1; NaN for one seed)
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
    out_cols = keys + ["mean", "ci_lo", "ci_hi", "n_seeds", "std"]
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
        m, lo, hi = mean_ci(vals, confidence)
        finite = vals[np.isfinite(vals)]
        row = dict(zip(keys, key))
        row.update(mean=m, ci_lo=lo, ci_hi=hi, n_seeds=int(finite.size),
                   std=float(finite.std(ddof=1)) if finite.size > 1 else math.nan)
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


def center_of_gravity(scores_by_layer: Scores, *, baseline: float | None = None) -> float:
    """Score-weighted mean layer ``sum_l l * s_l / sum_l s_l`` (layer 0 = embeddings).

    Tenney et al. (2019) compute the center of gravity from the learned *scalar-mix weights*
    of one probe over all layers; here ``s_l`` are the scores of separate per-layer probes, so it
    is an approximation with a different meaning: where along the depth the score mass lies.
    Raw accuracies are rarely far from each other, which pulls the result toward the middle
    layer; pass ``baseline`` (e.g. the majority-class or the layer-0 score) to use
    ``max(s_l - baseline, 0)`` instead, i.e. the mass *above* the baseline.

    Args:
        scores_by_layer: ``[n_layers + 1]`` scores indexed by layer, or ``{layer: score}``.
        baseline: optional score subtracted (and clipped at 0) before weighting.

    Returns:
        A float in ``[min layer, max layer]``; ``nan`` when all weights are zero.

    Raises:
        DataError: negative weights (use a baseline, or non-negative scores).
    """
    layers, s = _as_layer_scores(scores_by_layer)
    if baseline is not None:
        s = np.clip(s - float(baseline), 0.0, None)
    if np.any(s < 0):
        raise DataError(f"center_of_gravity needs non-negative scores, got {s.tolist()}; pass baseline=... "
                        f"or shift the scores.")
    total = s.sum()
    if total == 0:
        log.warning("center_of_gravity: all layer weights are zero; returning nan")
        return math.nan
    return float((layers * s).sum() / total)


def expected_layer(scores_by_layer: Scores, *, negative: str = "keep") -> float:
    """Expected layer from differential scores (Tenney et al. 2019): ``E[l] = sum l Delta_l / sum Delta_l``.

    ``Delta_l = s_l - s_{l-1}`` for ``l >= 1`` (layer 0 = embeddings has no delta): the score gained
    by adding layer ``l``. Tenney et al. use *cumulative* scores (a probe on the scalar mix of
    layers ``0..l``), which grow with ``l``, so their deltas are (nearly) non-negative. probekit
    uses separate per-layer probe scores, so this is an approximation, and scores can go *down*
    in later layers; ``negative`` decides what happens then:

    * ``"keep"`` (default, the literal formula): negative deltas count with their sign; the
      denominator telescopes to ``s_L - s_0``, so when the last layer is barely better than the
      embeddings the result is unstable and may fall outside ``[1, L]``.
    * ``"clip"``: ``Delta_l = max(Delta_l, 0)``: only gains count.
    * ``"cummax"``: deltas of the running maximum ``max_{k<=l} s_k`` (the best single layer so far),
      the closest per-layer stand-in for a cumulative score; always in ``[1, L]``.

    Args:
        scores_by_layer: ``[n_layers + 1]`` scores with layer 0 = embeddings, or ``{layer: score}``
            with contiguous layers ``0..L``.
        negative: ``"keep"``, ``"clip"`` or ``"cummax"``.

    Returns:
        float; ``nan`` (with a warning) when the deltas sum to ``<= 0`` (no layer adds anything).
    """

    modes = ("keep", "clip", "cummax")
    if negative not in modes:
        raise unknown_name("negative-delta mode", negative, modes)
    layers, s = _as_layer_scores(scores_by_layer)
    if not np.array_equal(layers, np.arange(layers.size)):
        raise DataError(f"expected_layer needs scores for every layer 0..L, got layers {layers.astype(int).tolist()}.")
    if s.size < 2:
        raise DataError("expected_layer needs at least two layers (0 = embeddings and 1).")
    if negative == "cummax":
        s = np.maximum.accumulate(s)
    delta = np.diff(s)
    if negative == "clip":
        delta = np.clip(delta, 0.0, None)
    total = delta.sum()
    if total <= 0:
        log.warning("expected_layer: differential scores sum to %g <= 0 (no layer improves on the "
                    "embeddings); returning nan", total)
        return math.nan
    return float((layers[1:] * delta).sum() / total)
