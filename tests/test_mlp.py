"""Tests for probekit.probing.mlp.MLPProbe: sklearn contract, non-linear learning, reproducibility."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from probekit.errors import ConfigError, ProbekitError  # noqa: E402
from probekit.probing.mlp import MLPProbe, mlp_fit_predict_proba  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def _xor(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, size=(n, 2)).astype(np.float32)
    y = ((X[:, 0] > 0) ^ (X[:, 1] > 0)).astype(np.int64)
    # two irrelevant features with an offset and scale, to exercise standardisation
    noise = rng.normal(50.0, 10.0, size=(n, 2)).astype(np.float32)
    return np.hstack([X, noise]), y


# Small, fast settings; the checks still train real models (check_classifiers_train needs > 83% accuracy).
_CHECK_EST = MLPProbe(hidden_size=16, max_epochs=15, batch_size=128, lr=0.02, dropout=0.0, device="cpu")


@parametrize_with_checks([_CHECK_EST])
def test_sklearn_contract(estimator, check):
    check(estimator)


@pytest.mark.parametrize("hidden_layers", [1, 2])
def test_learns_xor_where_linear_fails(hidden_layers):
    X, y = _xor()
    Xte, yte = _xor(seed=1)
    lin = LogisticRegression(max_iter=500).fit(X, y).score(Xte, yte)
    probe = MLPProbe(hidden_layers=hidden_layers, hidden_size=32, max_epochs=60, lr=0.01, batch_size=128,
                     dropout=0.0, device="cpu", seed=0).fit(X, y)
    acc = probe.score(Xte, yte)
    assert lin < 0.65
    assert acc > 0.9, (acc, probe.n_epochs_)
    assert probe.predict_proba(Xte).shape == (len(Xte), 2)
    np.testing.assert_allclose(probe.predict_proba(Xte).sum(1), 1.0, atol=1e-9)


def test_bitwise_reproducible_and_global_rng_untouched():
    X, y = _xor(500)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    kw = dict(hidden_layers=2, hidden_size=16, max_epochs=5, dropout=0.3, device="cpu")
    a = MLPProbe(seed=4, **kw).fit(X, y)
    after = torch.rand(1)
    assert torch.equal(before, after)  # fit used a private RNG
    b = MLPProbe(seed=4, **kw).fit(X, y)
    c = MLPProbe(seed=5, **kw).fit(X, y)
    sa, sb, sc = (m.model_.state_dict() for m in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_early_stopping_on_dev_restores_best_epoch():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 20)).astype(np.float32)
    y = rng.integers(0, 3, size=300)  # pure noise: dev loss gets worse while the MLP memorises
    Xd = rng.normal(size=(300, 20)).astype(np.float32)
    yd = rng.integers(0, 3, size=300)
    p = MLPProbe(hidden_size=128, max_epochs=200, patience=3, lr=0.01, batch_size=64, dropout=0.0,
                 device="cpu").fit(X, y, Xd, yd)
    assert p.n_epochs_ < 200
    assert p.n_epochs_ == p.best_epoch_ + 3
    assert len(p.dev_loss_curve_) == p.n_epochs_
    assert p.best_epoch_ == int(np.argmin(p.dev_loss_curve_)) + 1
    # the restored parameters give the best dev loss
    probs = p.predict_proba(Xd)
    loss = -np.mean(np.log(probs[np.arange(len(yd)), np.searchsorted(p.classes_, yd)]))
    assert loss == pytest.approx(min(p.dev_loss_curve_), rel=1e-4)


def test_string_labels_and_weight_decay():
    X, y = _xor(400)
    labels = np.array(["even", "odd"])[y]
    p = MLPProbe(hidden_size=8, max_epochs=3, weight_decay=1e-2, device="cpu").fit(X, labels)
    assert set(p.predict(X)) <= {"even", "odd"}
    assert list(p.classes_) == ["even", "odd"]


def test_bad_params_raise_config_error():
    X, y = _xor(50)
    for bad in (dict(hidden_layers=-1), dict(dropout=1.0), dict(lr=0), dict(batch_size=0)):
        with pytest.raises(ConfigError):
            MLPProbe(**bad).fit(X, y)
    assert issubclass(ConfigError, ProbekitError)


def test_mdl_adapter_fills_unseen_classes_with_zero():
    X, y = _xor(200)
    f = mlp_fit_predict_proba(4, hidden_size=8, max_epochs=3, device="cpu")
    p = f(X, y, X[:10])
    assert p.shape == (10, 4)
    np.testing.assert_array_equal(p[:, 2:], 0)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-9)


def test_experiment_mlp_probe_names_the_layer_of_non_finite_features():
    """The experiment checks each loaded layer group once for MLP probes (scikit-learn's own check would name neither
    the layer nor the cause)."""
    from probekit.data.conllu_io import Sentence
    from probekit.errors import DataError
    from probekit.runner.probe_task import probe_task
    from probekit.runner.units import ProbePolicy, Unit
    from probekit.tasks import get_task

    rng = np.random.default_rng(0)
    words = ["I", "have", "seen", "it", "."] * 10
    upos = ["PRON", "AUX", "VERB", "PRON", "PUNCT"] * 10
    sents = [Sentence.from_words(words, upos=upos, sent_id="s")]

    class Store:  # the part of ActivationStore that probe_task reads: 6 layers of 4-wide word vectors
        n_layers, hidden_size, manifest, site = 6, 4, {"word_pooling": "first"}, "resid_post"

        def __init__(self, bad=False):
            self.X = rng.standard_normal((6, len(words), 4)).astype(np.float32)
            if bad:
                self.X[5, 3, 0] = np.inf

        def _check_layer(self, layer):
            return layer

        def layers(self, layers, rows):
            return self.X[layers][:, rows]

    stores = {"train": Store(), "dev": Store(), "test": Store(bad=True)}
    policy = ProbePolicy(probes=("mlp1",), layers=(4, 5), control_tasks=False, mdl=False,
                         mlp={"max_epochs": 1, "hidden_size": 4}, device="cpu")
    with pytest.raises(DataError, match=r"layer 5 \(test\): the features hold 1 non-finite"):
        probe_task(lm_info={"name": "m", "kind": "encoder", "hash": "h" * 16}, stores=stores,
                   data={r: sents for r in stores}, task=get_task("aux_verb"), policy=policy,
                   units=[Unit("m", "aux_verb", "default", "mlp1", 0)])
