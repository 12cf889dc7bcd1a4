"""Tests for probekit.results.stats with hand-computed values."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from probekit.errors import ConfigError, DataError
from probekit.results.stats import aggregate_seeds, center_of_gravity, expected_layer, mean_ci

T_975_2 = 4.302652729911275  # Student-t 97.5% quantile, 2 degrees of freedom (tables)


def test_mean_ci_hand_computed():
    m, lo, hi = mean_ci([1.0, 2.0, 3.0])  # mean 2, s = 1, n = 3
    half = T_975_2 * 1.0 / math.sqrt(3)
    assert m == 2.0
    assert lo == pytest.approx(2 - half, rel=1e-9) and hi == pytest.approx(2 + half, rel=1e-9)
    m, lo, hi = mean_ci([1.0, 2.0, 3.0], confidence=0.5)
    assert hi - lo < 2 * half / 3  # narrower at lower confidence


def test_mean_ci_edge_cases():
    assert mean_ci([0.7]) == (0.7, 0.7, 0.7)
    assert all(math.isnan(v) for v in mean_ci([]))
    assert mean_ci([1.0, float("nan"), 3.0])[0] == 2.0  # NaN ignored
    assert mean_ci([5.0, 5.0, 5.0]) == (5.0, 5.0, 5.0)
    with pytest.raises(ConfigError):
        mean_ci([1, 2], confidence=1.5)


def _row(**kw):
    base = dict(experiment="e", model="minilm", model_kind="encoder", model_hash="h", task="upos", task_version=1,
                level="word", method="probe", probe="linear", control=False, pooling="first", layer=0,
                n_layers=6, seed=0, split="test", metric="accuracy", value=0.0, trainable_params=None,
                trainable_fraction=None, train_size=100, train_seconds=1.0)
    base.update(kw)
    return base


def test_aggregate_seeds_groups_every_non_seed_column():
    rows = []
    for layer, vals in ((0, [0.8, 0.9, 1.0]), (1, [0.5, 0.5, 0.5])):
        for seed, v in enumerate(vals):
            rows.append(_row(layer=layer, seed=seed, value=v, train_seconds=float(seed + 1)))
    rows.append(_row(layer=0, seed=0, value=0.25, control=True))  # a different group (control)
    out = aggregate_seeds(pd.DataFrame(rows))
    assert len(out) == 3
    assert {"mean", "ci_lo", "ci_hi", "n_seeds", "std"} <= set(out.columns)
    assert "seed" not in out.columns and "value" not in out.columns
    g0 = out[(out.layer == 0) & (~out.control)].iloc[0]
    assert g0["mean"] == pytest.approx(0.9)
    assert g0["std"] == pytest.approx(0.1)
    assert g0["ci_hi"] - g0["mean"] == pytest.approx(T_975_2 * 0.1 / math.sqrt(3))
    assert g0["n_seeds"] == 3 and g0["train_seconds"] == pytest.approx(2.0)
    g1 = out[out.layer == 1].iloc[0]
    assert g1["ci_lo"] == g1["ci_hi"] == 0.5
    gc = out[out.control].iloc[0]
    assert gc["n_seeds"] == 1 and gc["ci_lo"] == gc["ci_hi"] == 0.25 and math.isnan(gc["std"])
    assert gc["trainable_params"] is None  # missing keys stay missing, rows with None are not dropped


def test_aggregate_seeds_keeps_seeds_whose_training_subsets_differ_in_size():
    """A tuning baseline with train_sentences draws a subset per seed: its word count differs by seed, and the seeds
    must still form one group (they made one group per seed, n_seeds 1 and a zero-width CI)."""
    rows = [_row(layer=None, seed=s, value=v, train_size=n) for s, v, n in ((0, 0.7, 187), (1, 0.9, 188), (2, 0.8, 190))]
    out = aggregate_seeds(pd.DataFrame(rows))
    assert len(out) == 1 and out.loc[0, "n_seeds"] == 3 and out.loc[0, "mean"] == pytest.approx(0.8)
    assert out.loc[0, "train_size"] == pytest.approx(188.333, abs=1e-3)


def test_aggregate_seeds_rejects_duplicate_seed():
    df = pd.DataFrame([_row(seed=0, value=0.1), _row(seed=0, value=0.2)])
    with pytest.raises(DataError, match="seed 0"):
        aggregate_seeds(df)
    with pytest.raises(DataError):
        aggregate_seeds(pd.DataFrame([{"value": 1.0}]))
    assert aggregate_seeds(pd.DataFrame(columns=["seed", "value", "layer"])).empty


def test_center_of_gravity_hand_computed():
    # Tenney's E_s[l] = sum_l l * s_l of mixing weights (divided by their sum, 1 for a softmax)
    assert center_of_gravity([0.1, 0.2, 0.3, 0.4]) == pytest.approx(2.0)
    assert center_of_gravity([0, 0, 1]) == 2.0
    assert center_of_gravity({3: 0.5, 5: 0.5}) == 4.0
    assert center_of_gravity([1, 2, 3, 4]) == pytest.approx(20 / 10)  # rounded weights: still a mean layer
    assert math.isnan(center_of_gravity([0.0, 0.0]))
    with pytest.raises(DataError):
        center_of_gravity([-1.0, 2.0])
    with pytest.raises(DataError):
        center_of_gravity([])


def test_expected_layer_hand_computed():
    # cumulative scores; deltas [0.2, 0.1, 0.0] at layers 1..3 -> (1*0.2 + 2*0.1) / 0.3
    assert expected_layer([0.5, 0.7, 0.8, 0.8]) == pytest.approx(0.4 / 0.3)
    s = [0.5, 0.9, 0.7, 1.0]  # deltas [0.4, -0.2, 0.3]: Tenney's formula keeps the sign
    assert expected_layer(s) == pytest.approx((0.4 - 0.4 + 0.9) / 0.5)
    assert expected_layer({0: 0.5, 1: 0.7, 2: 0.8, 3: 0.8}) == pytest.approx(0.4 / 0.3)
    # several score sets at once (bootstrap replicates along axis 0)
    many = expected_layer(np.array([[0.5, 0.5], [0.7, 0.9], [0.8, 0.9], [0.8, 0.9]]), axis=0)
    assert many == pytest.approx([0.4 / 0.3, 1.0])


def test_expected_layer_degenerate_and_errors():
    assert math.isnan(expected_layer([0.9, 0.8, 0.7]))  # no layer improves on the embeddings
    assert math.isnan(expected_layer([0.9, 0.9, 0.9]))
    with pytest.raises(DataError):
        expected_layer([0.5])
    with pytest.raises(DataError):
        expected_layer({0: 0.1, 2: 0.3})


def test_counts_get_their_range_over_seeds_not_a_t_interval():
    """fit_iterations over three seeds (3, 40, 5): the t-interval would reach below zero; a count gets no interval
    but seed_min / seed_max, in aggregate_seeds and in summary.csv's summarize; a score keeps its t-interval."""
    from probekit.report.tables import summarize

    rows = [_row(layer=0, seed=s, value=v, split="train", metric="fit_iterations") for s, v in enumerate([3, 40, 5])]
    rows += [_row(layer=0, seed=s, value=v) for s, v in enumerate([0.8, 0.9, 1.0])]
    df = pd.DataFrame(rows)
    assert mean_ci([3, 40, 5])[1] < 0  # what a count used to get
    for out in (aggregate_seeds(df), summarize(df)):
        it = out[out.metric == "fit_iterations"].iloc[0]
        assert it["mean"] == pytest.approx(16.0) and math.isnan(it["ci_lo"]) and math.isnan(it["ci_hi"])
        assert (it["seed_min"], it["seed_max"]) == (3.0, 40.0)
        acc = out[out.metric == "accuracy"].iloc[0]
        assert acc["ci_hi"] - acc["mean"] == pytest.approx(T_975_2 * 0.1 / math.sqrt(3))
        assert math.isnan(acc["seed_min"]) and math.isnan(acc["seed_max"])
