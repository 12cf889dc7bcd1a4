"""The batched L-BFGS linear probe against scikit-learn on the same objective."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import probekit.errors as errors
from probekit.errors import DataError
from probekit.probing.features import standardise
from probekit.probing.linear import LinearProbe, fit_layers
from probekit.probing.solver import (
    Problem,
    batched_lbfgs,
    feature_eig,
    gram,
    loss_grad_of,
    preconditioner,
)


def _data(seed=0, n=3000, d=20, k=4):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((d, k))
    X = rng.standard_normal((n, d)).astype(np.float32) * rng.uniform(0.1, 5, d).astype(np.float32)
    y = (X @ W + rng.gumbel(size=(n, k))).argmax(1)
    return X, y


def test_matches_sklearn_objective():
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    X, y = _data()
    Xs = StandardScaler().fit_transform(X)
    sk = LogisticRegression(C=0.5, tol=1e-8, max_iter=2000).fit(Xs, y)
    ours = fit_layers(Xs[None].astype(np.float32), y, n_classes=4, Cs=(0.5,), max_iter=500, tol=1e-6)[0]
    # same objective -> same predictions and nearly the same weights
    pred = ours.predict(Xs.astype(np.float32))
    assert (pred == sk.predict(Xs)).mean() > 0.995
    np.testing.assert_allclose(ours.coef.T / ours.scale[None], sk.coef_, atol=0.05)


def test_layers_are_independent_problems():
    X1, y = _data(1)
    X2 = np.random.default_rng(5).standard_normal(X1.shape).astype(np.float32)  # noise layer
    both = fit_layers(np.stack([X1, X2]), y, n_classes=4, Cs=(1.0,))
    alone = fit_layers(X1[None], y, n_classes=4, Cs=(1.0,))[0]
    np.testing.assert_allclose(both[0].coef, alone.coef, atol=2e-3)
    assert (both[0].predict(X1) == y).mean() > (both[1].predict(X2) == y).mean() + 0.3


def test_C_is_chosen_on_dev():
    X, y = _data(2, n=400, d=50)
    Xd, yd = _data(3, n=400, d=50)
    fit = fit_layers(X[None], y, n_classes=4, Cs=(1e-4, 1.0), X_dev=Xd[None], y_dev=yd)[0]
    assert fit.C in (1e-4, 1.0) and fit.dev_accuracy is not None
    # a very strong penalty cannot beat the weak one here; the chosen one is at least as good on dev
    weak = fit_layers(X[None], y, n_classes=4, Cs=(1.0,))[0]
    assert fit.dev_accuracy >= (weak.predict(Xd) == yd).mean() - 1e-9


def test_sklearn_estimator_contract():
    X, y = _data(4, n=500)
    labels = np.array(["a", "b", "c", "d"])[y]
    p = LinearProbe(C=1.0)
    assert p.fit(X, labels) is p
    assert set(p.predict(X)) <= set(labels)
    proba = p.predict_proba(X)
    np.testing.assert_allclose(proba.sum(1), 1, atol=1e-5)
    from sklearn.linear_model import LogisticRegression

    sk = LogisticRegression(C=1.0, max_iter=1000).fit(X, labels)
    assert abs(p.score(X, labels) - sk.score(X, labels)) < 0.02 and p.coef_.shape == (4, X.shape[1])
    assert p.score(X, labels) > 0.4  # well above chance (0.25)
    with pytest.raises(ValueError, match="at least 2 classes"):
        LinearProbe().fit(X, np.zeros(len(X)))


def test_binary_coef_has_sklearns_shape_and_meaning():
    """Two classes: ``coef_`` is ``[1, d]``, the logit of class 1 against class 0, as scikit-learn's."""
    from sklearn.linear_model import LogisticRegression

    X, y = _data(7, n=800, k=2)
    labels = np.array(["no", "yes"])[y]
    p = LinearProbe(C=1.0, max_iter=500, tol=1e-7).fit(X, labels)
    sk = LogisticRegression(C=1.0, max_iter=2000, tol=1e-8).fit(StandardScaler().fit_transform(X), labels)
    assert p.coef_.shape == (1, X.shape[1]) and p.intercept_.shape == (1,)
    assert p.decision_function(X).shape == (len(X),)
    np.testing.assert_array_equal(p.predict(X), p.classes_[(p.decision_function(X) > 0).astype(int)])
    np.testing.assert_allclose(p.predict_proba(X)[:, 1], 1 / (1 + np.exp(-p.decision_function(X))), rtol=1e-10)
    assert (p.predict(X) == sk.predict(StandardScaler().fit_transform(X))).mean() > 0.98


def test_linear_probe_works_with_sklearn_tools():
    """clone, get_params, make_pipeline and cross_val_score: the contract the issue found broken."""
    X, y = _data(8, n=600)
    p = LinearProbe(C=0.5, max_iter=50)
    assert clone(p).get_params() == p.get_params()
    scores = cross_val_score(make_pipeline(StandardScaler(), LinearProbe(C=0.5)), X, y, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.5


@parametrize_with_checks([LinearProbe(max_iter=50)])
def test_sklearn_contract(estimator, check):
    check(estimator)


def test_inputs_are_not_modified():
    X, y = _data(6, n=300)
    Xd = X[:50].copy()
    X3, Xd3 = X[None].copy(), Xd[None].copy()
    fit_layers(X3, y, n_classes=4, Cs=(0.1, 1.0), X_dev=Xd3, y_dev=y[:50])
    np.testing.assert_array_equal(X3[0], X)
    np.testing.assert_array_equal(Xd3[0], Xd)


def test_fixed_C_per_layer_equals_separate_fits():
    X, y = _data(7, n=600)
    X2 = X * 0.5 + 1
    both = fit_layers(np.stack([X, X2]), y, n_classes=4, fixed_C=[0.01, 1.0])
    a = fit_layers(X[None], y, n_classes=4, Cs=(0.01,))[0]
    b = fit_layers(X2[None], y, n_classes=4, Cs=(1.0,))[0]
    assert [f.C for f in both] == [0.01, 1.0]
    np.testing.assert_allclose(both[0].coef, a.coef, atol=2e-3)
    np.testing.assert_allclose(both[1].coef, b.coef, atol=2e-3)


def test_several_label_sets_at_once_equal_separate_fits():
    """Heads (e.g. the control tasks of three seeds) share the passes over X but are independent problems."""
    X1, y1 = _data(1)
    X2, y2 = _data(2)
    rng = np.random.default_rng(3)
    X = np.stack([X1, X2])
    Y = np.stack([y1, y2, rng.integers(0, 4, len(y1))])  # two learnable label sets and a random one
    # solved tightly (ftol below float32's default noise level), so that both are close to the one optimum
    tight = dict(fixed_C=[0.5, 0.2], max_iter=500, tol=1e-6, ftol=1e-9)
    joint = fit_layers(X, Y, n_classes=4, **tight)
    assert len(joint) == 3 and all(len(fits) == 2 for fits in joint)
    for h in range(3):
        alone = fit_layers(X, Y[h], n_classes=4, **tight)
        for g in range(2):
            assert joint[h][g].C == alone[g].C == [0.5, 0.2][g]
            np.testing.assert_allclose(joint[h][g].coef, alone[g].coef, rtol=5e-3, atol=5e-3)
            np.testing.assert_allclose(joint[h][g].intercept, alone[g].intercept, atol=1e-2)
            assert (joint[h][g].predict(X[g]) == alone[g].predict(X[g])).mean() > 0.995
    assert (joint[0][0].predict(X1) == y1).mean() > 0.8 > (joint[2][0].predict(X1) == Y[2]).mean()


def test_several_label_sets_need_one_strength():
    X, y = _data()
    with pytest.raises(ValueError, match="fixed_C"):
        fit_layers(X[None], np.stack([y, y]), n_classes=4, Cs=(0.1, 1.0))


def _correlated(seed=0, n=4000, d=40, k=5):
    """Features with a transformer-like spectrum: a few directions carry most of the variance."""
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((n, d))
    A = rng.standard_normal((d, d)) * np.logspace(0, -3, d)[:, None]  # eigenvalues spread over ~6 decades
    X = (Z @ A).astype(np.float32)
    X = (X - X.mean(0)) / X.std(0)
    y = (Z[:, :k] * 3 + rng.gumbel(size=(n, k))).argmax(1)  # labels depend on low-variance directions too
    return X, y


def _objective(fit, X, y, C):
    """scikit-learn's objective divided by C N, as the probe minimises it (in standardised space)."""
    Xs = (X - fit.mean) / fit.scale
    z = Xs.astype(np.float64) @ fit.coef + fit.intercept
    z -= z.max(1, keepdims=True)
    ce = np.log(np.exp(z).sum(1)) - z[np.arange(len(y)), y]
    return ce.mean() + (fit.coef.astype(np.float64) ** 2).sum() / (2 * C * len(y))


def test_preconditioning_keeps_the_solution_and_converges_faster():
    X, y = _correlated()
    C = 10.0
    tight = dict(n_classes=5, Cs=(C,), max_iter=2000, tol=1e-7, ftol=1e-10)
    plain = fit_layers(X[None], y, precondition=False, **tight)[0]
    pre = fit_layers(X[None], y, precondition=True, **tight)[0]
    # the same problem: the same optimum (the change of variables only changes the path to it)
    assert abs(_objective(pre, X, y, C) - _objective(plain, X, y, C)) < 1e-4
    assert (pre.predict(X) == plain.predict(X)).mean() > 0.995
    # with a small budget the preconditioned solve is much closer to that optimum
    best = min(_objective(pre, X, y, C), _objective(plain, X, y, C))
    budget = dict(n_classes=5, Cs=(C,), max_iter=15)
    gap_plain = _objective(fit_layers(X[None], y, precondition=False, **budget)[0], X, y, C) - best
    gap_pre = _objective(fit_layers(X[None], y, precondition=True, **budget)[0], X, y, C) - best
    assert gap_pre < gap_plain / 3, (gap_pre, gap_plain)


def test_polish_starts_from_the_subsample_memory():
    """Stage 2 (all words) starts with stage 1's L-BFGS curvature pairs (subsample, same variables) instead of a
    steepest-descent step: with the same small polish budget it ends much closer to the all-data optimum, and with
    a large budget both reach that optimum."""
    X, y = _correlated(n=16000)
    C = 10.0
    best = _objective(fit_layers(X[None], y, n_classes=5, Cs=(C,), warm_subsample=0, max_iter=2000, tol=1e-7,
                                 ftol=1e-10)[0], X, y, C)
    kw = dict(n_classes=5, Cs=(C,), warm_subsample=2000, path_iter=60)
    gaps = {carry: _objective(fit_layers(X[None], y, carry_memory=carry, polish_iter=4, **kw)[0], X, y, C) - best
            for carry in (True, False)}
    assert gaps[True] < gaps[False] / 2, gaps
    for carry in (True, False):
        long = fit_layers(X[None], y, carry_memory=carry, polish_iter=300, tol=1e-7, ftol=1e-10, **kw)[0]
        assert _objective(long, X, y, C) - best < 1e-4, carry


@pytest.mark.parametrize("iters", [3, 13])
def test_lbfgs_memory_is_chronological_and_selected_per_problem(iters):
    """The returned memory holds the last steps oldest first (unused slots zero), whether the run was shorter or
    longer than the history, and `where` takes each problem's pairs from the memory chosen for it."""
    import torch


    X, y = _correlated(n=2000, d=12)
    Xt = torch.tensor(np.stack([X, X[::-1].copy()]))
    prob = Problem(Xt, torch.as_tensor(y), 5, torch.full((2,), 1e-3))
    p0 = torch.zeros(2, 12 * 5 + 5)
    kw = dict(tol=0.0, ftol=0.0, history=10)
    p_prev, _, _ = batched_lbfgs(prob, p0, max_iter=iters - 1, **kw)
    p_last, n_it, mem = batched_lbfgs(prob, p0, max_iter=iters, **kw)
    assert n_it.tolist() == [iters, iters]
    torch.testing.assert_close(mem.S[-1], p_last - p_prev, atol=1e-6, rtol=1e-5)  # the newest pair is last
    used = min(iters, 10)
    assert bool((mem.rho[10 - used:] > 0).all()) and bool((mem.rho[:10 - used] == 0).all())
    other = type(mem)(mem.S + 1, mem.Y + 1, mem.rho + 1)
    mixed = mem.where(torch.tensor([True, False]), other)
    assert torch.equal(mixed.S[:, 0], mem.S[:, 0]) and torch.equal(mixed.S[:, 1], other.S[:, 1])
    assert torch.equal(mixed.Y[:, 1], other.Y[:, 1]) and torch.equal(mixed.rho[:, 0], mem.rho[:, 0])


@pytest.mark.parametrize("kind", ["float32", "float16", "tensor"])
def test_standardise_leaves_the_callers_features_alone(kind):
    import torch


    X = np.random.default_rng(0).standard_normal((2, 500, 8)).astype(np.float32) * 3 + 1
    X = X.astype(np.float16) if kind == "float16" else X
    before = X.copy()
    given = torch.from_numpy(X) if kind == "tensor" else X
    Xt, mean, scale = standardise(given, "cpu")
    assert np.array_equal(np.asarray(given), before)
    np.testing.assert_allclose(Xt.mean(1).numpy(), 0, atol=1e-5)
    np.testing.assert_allclose(Xt.std(1).numpy(), 1, atol=1e-4)
    np.testing.assert_allclose((Xt * scale + mean).numpy(), before.astype(np.float32), atol=1e-4)


def test_evaluating_some_layers_equals_those_rows_of_the_full_evaluation():
    """Backtracking and converged layers evaluate only the layers still pending (`loss_grad_of`): the rows it
    computes equal the full evaluation's, with a preconditioner, a bias penalty and several heads; the rest are
    marked +inf / 0 so that the line search never accepts them."""
    import torch


    X, y = _correlated(n=1500, d=12)
    Xt = torch.tensor(np.stack([X, X[::-1].copy(), X * 0.5]))
    heads = torch.stack([torch.as_tensor(y), torch.as_tensor(np.roll(y, 3))])
    l2 = torch.tensor([1e-3, 1e-2, 1e-1])
    prob = Problem(Xt, heads, 5, l2, precond=preconditioner(feature_eig(Xt), l2),
                    l2_bias=l2.unsqueeze(1).expand(3, 10).contiguous())
    p = torch.randn(3, 12 * 10 + 10, generator=torch.Generator().manual_seed(0)) * 0.1
    f_all, g_all = prob.loss_grad(p)
    f, g = loss_grad_of(prob, p, torch.tensor([True, False, True]))
    torch.testing.assert_close(f[[0, 2]], f_all[[0, 2]], rtol=1e-6, atol=0)
    # (few classes: the full problem takes one bmm, a subset per-layer matmuls, which round differently)
    torch.testing.assert_close(g[[0, 2]], g_all[[0, 2]], rtol=1e-5, atol=1e-6)
    assert f[1] == float("inf") and bool((g[1] == 0).all())
    f1, g1 = loss_grad_of(prob, p, torch.tensor([False, True, False]))  # a middle layer alone: its own P and l2
    torch.testing.assert_close(f1[1], f_all[1], rtol=1e-6, atol=0)
    torch.testing.assert_close(g1[1], g_all[1], rtol=1e-5, atol=1e-6)


def test_gram_is_the_full_symmetric_product():
    """`gram` (syrk: one triangle computed) returns the whole x^T x, both triangles, like the matmul it replaces."""
    import torch


    x = torch.tensor(np.random.default_rng(1).standard_normal((300, 9)), dtype=torch.float32)
    g = gram(x)
    ref = x.double().T @ x.double()
    assert g.shape == (9, 9) and torch.equal(g, g.T)
    torch.testing.assert_close(g.double(), ref, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(gram(x[::2]).double(), x[::2].double().T @ x[::2].double(), rtol=1e-5, atol=1e-4)
    x64 = x.double()
    assert gram(x64).dtype == torch.float64 and torch.equal(gram(x64), x64.T @ x64)  # not rounded through float32


@pytest.mark.parametrize("n_classes", [3, 17])
def test_gradient_matches_autograd_on_every_kernel_path(n_classes):
    """The gradient's matmul takes a different kernel by class count (one bmm below 16 classes, X^T R from 16 on,
    per-layer R^T X for a subset of layers); each must be the derivative of the loss."""
    import torch


    rng = np.random.default_rng(2)
    Xt = torch.tensor(rng.standard_normal((2, 400, 7)), dtype=torch.float32)
    y = torch.as_tensor(rng.integers(0, n_classes, 400))
    prob = Problem(Xt, y, n_classes, torch.tensor([1e-2, 1e-1]))
    p = torch.tensor(rng.standard_normal((2, 7 * n_classes + n_classes)) * 0.3, dtype=torch.float32)
    for problem, q in ((prob, p), (prob.select([1]), p[1:])):
        f, g = problem.loss_grad(q)
        q64 = q.double().requires_grad_()
        W = q64[:, :7 * n_classes].view(-1, n_classes, 7).transpose(1, 2)
        b = q64[:, 7 * n_classes:]
        X64 = torch.stack(list(problem.X)).double() if isinstance(problem.X, list) else problem.X.double()
        logits = X64 @ W + b.unsqueeze(1)
        ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), y.expand(len(q), -1), reduction="none").mean(1)
        loss = ce + 0.5 * problem.l2[:, 0].double() * (W * W).sum((1, 2))
        loss.sum().backward()
        torch.testing.assert_close(f.double(), loss.detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(g.double(), q64.grad, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------ bad inputs, clear errors

def _toy(G=2, N=300, d=8, K=3, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, K, N)
    X = rng.standard_normal((G, N, d)).astype(np.float32) + np.eye(K, d, dtype=np.float32)[y] * 2
    return X, y


@pytest.mark.parametrize("where", ["train", "dev", "test"])
@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_non_finite_features_are_an_error_naming_layer_and_cause(where, bad):
    """A float16 store overflows to inf for some models: that must not become NaN weights and a constant
    predictor's accuracy reported as a probe's."""

    X, y = _toy()
    Xd, yd = _toy(seed=1)
    Xs = {"train": X.copy(), "dev": Xd.copy(), "test": Xd.copy()}
    Xs[where][1, 5, 3] = bad
    with pytest.raises(DataError, match=rf"layer 1 \({where}\)|layer 1:") as info:
        fits = fit_layers(Xs["train"], y, n_classes=3, X_dev=Xs["dev"], y_dev=yd, device="cpu")
        fits[1].predict(Xs["test"][1])
    assert "non-finite" in str(info.value) and "float32" in str(info.value)


@pytest.mark.parametrize("kw, err, needle", [
    (dict(Cs=(0.0, 1.0)), "ConfigError", "Cs must be positive"),
    (dict(Cs=()), "ConfigError", "Cs must be positive"),
    (dict(Cs=(float("nan"),)), "ConfigError", "Cs must be positive"),
    (dict(fixed_C=[1.0, -1.0]), "ConfigError", "fixed_C must be positive"),
    (dict(n_classes=2), "DataError", "holds label 2, outside 0..1"),
    (dict(y_dev_shift=-1), "DataError", "y_dev holds label -1"),
])
def test_bad_probe_arguments_are_clear_errors(kw, err, needle):

    X, y = _toy()
    Xd, yd = _toy(seed=1)
    if kw.pop("y_dev_shift", 0):
        yd = yd.copy()
        yd[0] = -1
    args = dict(n_classes=3, X_dev=Xd, y_dev=yd, device="cpu") | kw
    if "fixed_C" in kw:
        args.pop("X_dev"), args.pop("y_dev")
    with pytest.raises(getattr(errors, err), match=needle):
        fit_layers(X, y, **args)


def test_shape_mismatches_are_clear_errors():

    X, y = _toy()
    with pytest.raises(DataError, match=r"X_train must be \[layer, item, d_model\]"):
        fit_layers(X[0], y, n_classes=3, device="cpu")
    with pytest.raises(DataError, match="y_train has shape"):
        fit_layers(X, y[:-5], n_classes=3, device="cpu")
    with pytest.raises(DataError, match="X_dev must be"):
        fit_layers(X, y, n_classes=3, X_dev=X[:, :, :4], y_dev=y, device="cpu")


def test_gram_bits_do_not_depend_on_the_blas_thread_count():
    """A sweep worker (one BLAS thread) and `probekit run` (all cores) must give the same probes: a multi-threaded
    ssyrk did not (its preconditioner, and so the fits, differed in the last bits)."""
    import scipy.linalg.blas  # noqa: F401  (loaded, so that threadpoolctl can limit it)
    import torch
    from threadpoolctl import threadpool_limits


    x = torch.randn(16384, 384, generator=torch.Generator().manual_seed(0))
    out = []
    for n in (1, 2):
        with threadpool_limits(limits=n, user_api="blas"):
            out.append(gram(x))
    assert torch.equal(out[0], out[1])
