"""Tests for probekit.probing.mdl: the online code on synthetic data with known answers."""
from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from probekit.errors import ConfigError, DataError  # noqa: E402
from probekit.probing.mdl import (  # noqa: E402
    PAPER_PORTIONS,
    MDLResult,
    block_ends,
    logreg_fit_predict_proba,
    online_codelength,
    online_codelength_layers,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _data(n=2000, d=8, k=4, seed=0):
    rng = np.random.default_rng(seed)
    X = (rng.normal(size=(n, d)) * 3 + 7).astype(np.float32)
    A = rng.normal(size=(d, k))
    y_lin = np.argmax((X - 7) @ A, axis=1)
    y_rand = rng.integers(0, k, size=n)
    return X, y_lin, y_rand


def test_block_ends_paper_portions():
    assert block_ends(10000) == [10, 20, 40, 80, 160, 320, 625, 1250, 2500, 5000, 10000]
    assert len(PAPER_PORTIONS) == 11 and PAPER_PORTIONS[0] == 0.001 and PAPER_PORTIONS[-1] == 1.0
    assert block_ends(100) == [1, 3, 6, 12, 25, 50, 100]  # 0.1%, 0.2% and 0.4% -> 0 -> 1 merge
    with pytest.raises(ConfigError):
        block_ends(100, [0.5, 0.25, 1.0])
    with pytest.raises(ConfigError):
        block_ends(100, [0.1, 0.5])
    with pytest.raises(DataError):
        block_ends(1)


def test_linear_labels_compress_far_better_than_random():
    X, y_lin, y_rand = _data(n=1500)
    lin = online_codelength(X, y_lin, n_classes=4, seed=0, device="cpu")
    rnd = online_codelength(X, y_rand, n_classes=4, seed=0, device="cpu")
    assert isinstance(lin, MDLResult)
    assert lin.compression > 4, lin.compression
    # random labels: close to the uniform code, within a few percent either way
    assert abs(rnd.codelength_bits / rnd.uniform_codelength_bits - 1) < 0.02, rnd.compression
    assert lin.codelength_kbits == pytest.approx(lin.codelength_bits / 1000)
    assert lin.uniform_codelength_bits == pytest.approx(1500 * 2.0)
    assert lin.compression == pytest.approx(lin.uniform_codelength_bits / lin.codelength_bits)
    assert lin.codelength_bits == pytest.approx(sum(lin.block_costs_bits))
    assert set(lin.metrics()) >= {"codelength_kbits", "compression"}


def test_first_block_costs_exactly_its_uniform_code():
    X, y_lin, _ = _data(n=3000, k=5, seed=1)
    y = y_lin % 5
    r = online_codelength(X, y, n_classes=5, seed=3, device="cpu", l2=1.0)
    assert r.block_ends[0] == 3
    assert r.block_costs_bits[0] == 3 * math.log2(5)
    assert r.block_sizes == list(np.diff([0] + r.block_ends))


def test_uniform_probe_gives_exactly_the_uniform_codelength():
    X, y, _ = _data(n=1000)
    calls = []

    def uniform(X_tr, y_tr, X_next):
        calls.append((len(X_tr), len(X_next)))
        return np.full((len(X_next), 4), 0.25)

    r = online_codelength(X, y, n_classes=4, fit_predict_proba=uniform, seed=0)
    assert r.codelength_bits == pytest.approx(1000 * 2.0, rel=1e-9)
    assert r.compression == pytest.approx(1.0, rel=1e-9)
    ends = block_ends(1000)
    assert calls == [(a, b - a) for a, b in zip(ends[:-1], ends[1:])]  # each block trained on all before it


def test_shuffle_is_seeded_and_changes_with_seed():
    X, y, _ = _data(n=500)
    seen = {}

    def record(key):
        def f(X_tr, y_tr, X_next):
            seen.setdefault(key, []).append(y_tr.copy())
            return np.full((len(X_next), 4), 0.25)
        return f

    for key, seed in (("a", 1), ("b", 1), ("c", 2)):
        online_codelength(X, y, n_classes=4, fit_predict_proba=record(key), seed=seed)
    np.testing.assert_array_equal(seen["a"][-1], seen["b"][-1])
    assert not np.array_equal(seen["a"][-1], seen["c"][-1])
    # one shuffle for all blocks: every training set extends the previous one
    for short, long in zip(seen["a"][:-1], seen["a"][1:]):
        np.testing.assert_array_equal(long[:len(short)], short)


def test_unseen_class_costs_finite_bits():
    X, y, _ = _data(n=1000, k=3)
    y = y.copy()
    y[:5] = 3  # class 3 exists in the data but is rare: probably absent from early prefixes
    r = online_codelength(X, y, n_classes=4, seed=0, device="cpu")
    assert all(np.isfinite(r.block_costs_bits))

    def never_class3(X_tr, y_tr, X_next):
        p = np.zeros((len(X_next), 4))
        p[:, :3] = 1 / 3
        return p

    r2 = online_codelength(X, y, n_classes=4, fit_predict_proba=never_class3, seed=0, smoothing=1e-6)
    bound = 995 * math.log2(3) + 5 * math.log2(4 / 1e-6)
    assert np.isfinite(r2.codelength_bits) and r2.codelength_bits <= bound + 1
    assert r2.codelength_bits > 995 * math.log2(3)


def test_minus_one_labels_are_dropped():
    X, y, _ = _data(n=1200)
    y2 = y.copy()
    y2[::6] = -1
    r = online_codelength(X, y2, n_classes=4, seed=0, device="cpu", l2=10.0)
    assert r.n_examples == 1000
    r_ref = online_codelength(X[y2 >= 0], y[y2 >= 0], n_classes=4, seed=0, device="cpu", l2=10.0)
    assert r.codelength_bits == pytest.approx(r_ref.codelength_bits, rel=1e-9)


def test_layers_batched_matches_single_and_callable():
    X, y, _ = _data(n=800)
    rng = np.random.default_rng(5)
    noise = rng.normal(size=X.shape).astype(np.float32)
    stack = np.stack([X, noise])
    res = online_codelength_layers(stack, y, n_classes=4, seed=0, device="cpu", l2=[1.0, 100.0])
    assert [r.extra["layer"] for r in res] == [0, 1]
    assert res[0].compression > 3 and res[1].compression < 1.1
    single = online_codelength(noise, y, n_classes=4, seed=0, device="cpu", l2=[1.0, 100.0])
    assert res[1].codelength_bits == pytest.approx(single.codelength_bits, rel=2e-3)
    via_callable = online_codelength_layers(lambda l: stack[l], y, layers=[1, 0], n_classes=4, seed=0,
                                            device="cpu", l2=[1.0, 100.0])
    assert via_callable[0].codelength_bits == pytest.approx(res[1].codelength_bits, rel=2e-3)
    assert via_callable[1].codelength_bits == pytest.approx(res[0].codelength_bits, rel=2e-3)
    np.testing.assert_allclose(sum(res[0].extra["l2_weights"]), 1.0)
    with pytest.raises(ConfigError):
        online_codelength_layers(lambda l: stack[l], y, n_classes=4)


def test_custom_probe_plugs_in():
    X, y, _ = _data(n=800)
    f = logreg_fit_predict_proba(4, l2=1.0, device="cpu")
    r = online_codelength(X, y, n_classes=4, fit_predict_proba=f, seed=0)
    assert r.compression > 2
    bad = online_codelength  # wrong shape from the callable is a clear error
    with pytest.raises(DataError):
        bad(X, y, n_classes=4, fit_predict_proba=lambda a, b, c: np.ones((len(c), 3)) / 3, seed=0)
    with pytest.raises(DataError):
        online_codelength(X, np.full(len(y), 7), n_classes=4, seed=0)


def test_non_finite_features_and_labels_below_minus_one_are_errors():
    from probekit.probing.mdl import online_codelength_layers

    rng = np.random.default_rng(0)
    X = rng.standard_normal((2, 200, 4)).astype(np.float32)
    y = rng.integers(0, 2, 200)
    X[1, 17, 2] = np.inf
    with pytest.raises(DataError, match=r"layer 1: the features hold 1 non-finite"):
        online_codelength_layers(X, y, n_classes=2)
    with pytest.raises(DataError, match="Label -2 is not a class id"):
        online_codelength_layers(X[:1], np.where(y == 0, -2, y), n_classes=2)


def test_a_nan_codelength_is_not_reported_as_infinite_compression():
    from probekit.probing.mdl import _result

    assert math.isnan(_result([1.0, float("nan")], [10, 20], 2, 0, PAPER_PORTIONS, 0.0).compression)
    assert _result([0.0, 0.0], [10, 20], 2, 0, PAPER_PORTIONS, 0.0).compression == math.inf
