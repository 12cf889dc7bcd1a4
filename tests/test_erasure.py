"""Concept erasers (probekit.causal.erasure, .sanity): the LEACE guarantee on synthetic data, INLP, the random
control, the eraser file and its refusals, bad input."""
from __future__ import annotations

import numpy as np
import pytest

from probekit.causal.erasure import (
    EraserSet,
    LayerEraser,
    fit_erasers,
    fit_inlp,
    fit_leace,
    load_erasers,
    random_control,
)
from probekit.errors import ConfigError, DataError, ModelError, TaskError

pytest.importorskip("concept_erasure")


def _synthetic(n=3000, d=24, seed=0, classes=2):
    """Labels carried linearly by a few directions plus noise; a 70/30 class balance (majority 0.7 for 2 classes)."""
    rng = np.random.default_rng(seed)
    p = [0.7, 0.3] if classes == 2 else [0.5, 0.3, 0.2]
    y = rng.choice(classes, size=n, p=p)
    X = rng.standard_normal((n, d)).astype(np.float32) * rng.uniform(0.5, 3, d).astype(np.float32)
    means = rng.standard_normal((classes, d)) * 1.5
    X += means[y].astype(np.float32)
    return X, y


def _linear_test_acc(Xtr, ytr, Xte, yte, classes):
    from probekit.probing.linear import fit_layers

    f = fit_layers(Xtr[None], ytr, n_classes=classes, fixed_C=[1.0], device="cpu")[0]
    return float((f.predict(Xte) == yte).mean())


@pytest.mark.parametrize("classes", [2, 3])
def test_leace_brings_a_retrained_linear_probe_to_the_majority_baseline(classes):
    X, y = _synthetic(classes=classes)
    Xtr, ytr, Xte, yte = X[:2000], y[:2000], X[2000:], y[2000:]
    before = _linear_test_acc(Xtr, ytr, Xte, yte, classes)
    er = fit_leace(Xtr, ytr, n_classes=classes, layer=3)
    assert er.rank == classes - 1 and er.layer == 3
    after = _linear_test_acc(er(Xtr), ytr, er(Xte), yte, classes)
    majority = float((yte == np.bincount(ytr).argmax()).mean())
    assert before > majority + 0.2  # the concept was there
    assert abs(after - majority) <= 0.01, (before, after, majority)
    # the least-squares edit: directions orthogonal to the concept are left alone, the mean is kept
    assert np.allclose(er(Xtr).mean(0), Xtr.mean(0), atol=1e-3)


def test_leace_torch_apply_matches_numpy():
    import torch

    X, y = _synthetic(n=500)
    er = fit_leace(X, y, n_classes=2)
    got = er.torch_apply(torch.as_tensor(X[:7]).to(torch.float64)).numpy()
    assert np.allclose(got, er(X[:7]), atol=1e-4)


def test_inlp_removes_linear_information_and_has_higher_rank():
    X, y = _synthetic(n=2600, classes=2)
    Xtr, ytr, Xd, yd = X[:2000], y[:2000], X[2000:], y[2000:]
    (er,) = fit_inlp(Xtr[None], ytr, n_classes=2, layers=[0], X_dev=Xd[None], y_dev=yd, max_iter=15)
    assert er.method == "inlp" and er.bias is None and er.rank >= 1
    assert np.allclose(er.left.T @ er.left, np.eye(er.rank), atol=1e-4)  # an orthogonal projection
    majority = float((yd == 0).mean())
    assert _linear_test_acc(er(Xtr), ytr, er(Xd), yd, 2) <= majority + 0.02


def test_random_control_same_rank_and_orthogonal():
    X, y = _synthetic(n=500, classes=3)
    er = fit_leace(X, y, n_classes=3, layer=2)
    c = random_control(er, seed=1)
    assert c.rank == er.rank and c.method == "random"
    assert np.allclose(c.left.T @ c.left, np.eye(c.rank), atol=1e-5)
    assert not np.allclose(c.left, random_control(er, seed=2).left)
    assert np.allclose(c.left, random_control(er, seed=1).left)  # reproducible
    # removing a random subspace leaves the concept decodable
    assert _linear_test_acc(c(X[:400]), y[:400], c(X[400:]), y[400:], 3) > 0.6


def _set(weights="w" * 64, task="aux_verb"):
    X, y = _synthetic(n=300)
    return EraserSet("m", weights, task, 1, ["a", "b"], "word", "first", "leace", X.shape[1],
                     {0: fit_leace(X, y, n_classes=2, layer=0), 2: fit_leace(X * 2, y, n_classes=2, layer=2)})


def test_eraser_file_round_trip_and_refusals(tmp_path):
    s = _set()
    path = s.save(tmp_path / "x.erasers")
    back = load_erasers(path, weights_hash="w" * 64, task="aux_verb")
    assert sorted(back.erasers) == [0, 2] and back.method == "leace"
    X = np.ones((3, s.hidden_size), np.float32)
    assert np.array_equal(back.erasers[2](X), s.erasers[2](X))
    with pytest.raises(ModelError, match="fitted on 'm'"):
        load_erasers(path, weights_hash="v" * 64)
    with pytest.raises(TaskError, match="of task 'aux_verb', not 'subject'"):
        load_erasers(path, task="subject")
    (tmp_path / "bad.erasers").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable probekit eraser file"):
        load_erasers(tmp_path / "bad.erasers")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.erasers", "x.erasers"]  # no temporary left


class _Store:
    """The part of ActivationStore that fit_erasers reads (one layer of word vectors)."""

    def __init__(self, X, n_layers=2):
        self.X, self.n_layers, self.hidden_size = X, n_layers, X.shape[1]
        self.path = "mem"
        self.manifest = {"word_pooling": "first", "model": {"name": "m", "weights_hash": "w" * 64}}

    def _check_layer(self, layer):
        if not -self.n_layers <= layer < self.n_layers:
            raise ConfigError(f"Layer {layer} is out of range for this store: valid layers are 0..{self.n_layers - 1}")
        return layer % self.n_layers

    def layer(self, layer, rows=None):
        return self.X if rows is None else self.X[rows]


class _Task:
    name, version, level, labels = "t", 1, "word", ["a", "b"]

    def __init__(self, y):
        self.y = y

    def encode(self, sentences):
        return self.y


def test_fit_erasers_bad_input():
    X, y = _synthetic(n=200)
    assert sorted(fit_erasers(_Store(X), _Task(y), None).erasers) == [0, 1]
    with pytest.raises(TaskError, match="single label"):
        fit_erasers(_Store(X), _Task(np.zeros(200, dtype=int)), None)
    with pytest.raises(TaskError, match="Layer 4: the training items have a single label"):
        fit_leace(X, np.ones(200, dtype=int), n_classes=2, layer=4)
    with pytest.raises(ConfigError, match="Layer 5 is out of range"):
        fit_erasers(_Store(X), _Task(y), None, layers=[5])
    with pytest.raises(ConfigError, match="Unknown erasure method 'leac'"):
        fit_erasers(_Store(X), _Task(y), None, method="leac")
    Xbad = X.copy()
    Xbad[3, 4] = np.inf
    with pytest.raises(DataError, match="non-finite"):
        fit_erasers(_Store(Xbad), _Task(y), None)


def test_layer_eraser_is_the_documented_affine_map():
    rng = np.random.default_rng(0)
    L, R, b = (rng.standard_normal((5, 2)).astype(np.float32), rng.standard_normal((5, 2)).astype(np.float32),
               rng.standard_normal(5).astype(np.float32))
    x = rng.standard_normal((3, 5)).astype(np.float32)
    assert np.allclose(LayerEraser(0, "leace", L, R, b)(x), x - ((x - b) @ R) @ L.T, atol=1e-6)
