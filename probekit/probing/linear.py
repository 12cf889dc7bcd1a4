"""Multinomial logistic-regression probes, trained for many layers at once.

:func:`fit_layers` is the one trainer of linear probes over layers (experiments, saved bundles, the baselines'
probe reference and the notebook API all call it, on features from :mod:`probekit.probing.features`). It solves one
L2-regularised multinomial logistic regression per layer, all layers as one batched problem on
``[layer, word, d_model]`` tensors (:mod:`probekit.probing.solver`):

* features are standardised per layer (:func:`probekit.probing.features.standardise`: mean 0, scale the standard
  deviation with ddof 1, on train), which makes the problem well conditioned;
* the regularisation path (strongest first) is warm-started, and the strength is chosen per layer on dev accuracy;
* float32, on the GPU when there is one.

The objective per layer is ``mean_i CE(x_i W + b, y_i) + ||W||² / (2 C N)``, i.e. exactly scikit-learn's
``LogisticRegression(C=C)`` objective divided by ``C N``. ``C`` is always the inverse L2 strength (scikit-learn's
name); the class count is ``n_classes``.

:class:`LinearProbe` is the scikit-learn estimator of one layer; the ``linear`` probe family (:class:`LinearFamily`)
is what the runner fits.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from probekit._device import probe_threads, resolve_device
from probekit.errors import ConfigError, DataError
from probekit.probing.features import (
    Labelled,
    check_finite,
    feature_groups,
    softmax,
    standardise,
)
from probekit.probing.mdl import online_codelength_layers
from probekit.probing.registry import (
    FitSettings,
    LayerResult,
    ProbeFamily,
    register_probe,
)
from probekit.probing.solver import (
    Problem,
    batched_lbfgs,
    feature_eig,
    preconditioner,
    unpack,
)

log = logging.getLogger(__name__)

DEFAULT_CS = (0.01, 0.1, 1.0)


@dataclass
class LayerFit:
    """What a trained per-layer probe keeps (arrays are numpy, float32)."""

    layer: int
    C: float  # the inverse L2 strength chosen (scikit-learn's units)
    coef: np.ndarray  # [d, n_classes], in standardised space
    intercept: np.ndarray  # [n_classes]
    mean: np.ndarray  # [d]
    scale: np.ndarray  # [d]
    iterations: int  # L-BFGS iterations of both stages
    dev_accuracy: float | None = None
    #: iterations of the final solve on all training words (the polish, or the chosen C's path solve without one)
    final_iterations: int = 0
    #: whether that final solve reached the tolerance before its iteration cap
    converged: bool = True

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        # float64 scoring: a float32 BLAS matmul can flip near-ties with the thread count
        X = np.asarray(X, dtype=np.float64)
        check_finite(X, f"layer {self.layer}")
        return ((X - self.mean) / self.scale) @ self.coef.astype(np.float64) + self.intercept

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return softmax(self.decision_function(X))

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.decision_function(X).argmax(1)

    @property
    def n_params(self) -> int:
        return int(self.coef.size + self.intercept.size)



def _fit_layers(X_train: np.ndarray, y_train: np.ndarray, *, n_classes: int, Cs=DEFAULT_CS,
               X_dev: np.ndarray | None = None, y_dev: np.ndarray | None = None, layers: list[int] | None = None,
               max_iter: int = 100, tol: float = 1e-4, device: str | None = None, seed: int = 0,
               warm_subsample: int = 16384, fixed_C: Sequence[float] | None = None,
               polish_iter: int | None = None, path_iter: int = 30, precondition: bool = True, ftol: float = 1e-6,
               carry_memory: bool = True) -> list:
    """Fit one probe per layer on ``X_train: [layer, word, d_model]`` with labels ``y_train: [word]``.

    ``y_train`` may also be ``[S, word]`` (S >= 1): S label sets fitted at once at one strength (``fixed_C`` or a
    single C), e.g. the control tasks of S seeds; then the result is one list of fits per label set. Every
    pass over ``X`` then serves all S heads, which costs about as much as one head (the pass is memory-bound).

    Two stages. (1) On a random subsample of ``warm_subsample`` training words the
    regularisation path runs strongest first, warm-starting each next strength, and each layer
    keeps the C with the best dev accuracy (ties -> stronger regularisation; without dev data the
    last C). (2) Each layer is then polished at its C on all training words, warm-started from
    stage 1, so the expensive full-data iterations are few. C is in scikit-learn's units (the
    penalty is ``1 / (C N)`` on the mean loss), so it means the same on the subsample and on all data.
    Both stages run in preconditioned variables (:func:`~probekit.probing.solver.preconditioner`). When stage 2
    follows (more than ``warm_subsample`` words), each strength of the stage-1 path stops at ``path_iter``
    iterations: its jobs are choosing C and a warm start. The polish stops at ``polish_iter`` iterations or at
    convergence, whichever comes first, and starts from the L-BFGS memory (curvature pairs) of the stage-1 solve at
    each layer's chosen C (``carry_memory``): stage 1 is preconditioned as the all-data problem, so both stages share
    their variables. The polish runs until the tolerance (``polish_iter`` None: up to ``max_iter`` iterations), so a
    fit is the optimum at its C whatever the seed's subsample was, and the seed moves a result only through what is
    really random (the subsample that chooses C); each fit reports its ``final_iterations`` and whether it converged,
    and a layer that hit the cap is logged. docs/design.md ("Linear solver") has the measurements behind these limits.
    """
    import torch

    dev = resolve_device(device)
    _check_fit_inputs(X_train, y_train, n_classes, Cs, fixed_C, X_dev, y_dev)
    G, N, d = X_train.shape
    layers = list(range(G)) if layers is None else list(layers)
    torch.manual_seed(seed)
    Xt, mean, scale = standardise(X_train, dev)
    bad = (~torch.isfinite(mean) | ~torch.isfinite(scale)).flatten(1).any(1)
    if bool(bad.any()):  # inf or NaN anywhere in a layer's train features makes its mean or scale non-finite
        g = int(bad.nonzero()[0, 0])
        check_finite(X_train[g], f"layer {layers[g]} (train)")
        raise DataError(f"layer {layers[g]} (train): the features' mean or scale is not finite.")
    if X_dev is not None:
        for g in range(G):
            check_finite(X_dev[g], f"layer {layers[g]} (dev)")
    yt = torch.as_tensor(y_train, dtype=torch.long, device=dev)
    S = yt.shape[0] if yt.dim() == 2 else 1
    if S > 1 and fixed_C is None and len(Cs) > 1:
        raise ValueError("Several label sets (heads) are fitted at one regularisation strength: pass fixed_C "
                         "or a single C (choosing C on dev is per task, not per head).")
    if S > 1 and X_dev is not None:
        raise ValueError("Dev scoring of several label sets (heads) at once is not supported: score each head's fits.")
    K = S * n_classes
    Xd: torch.Tensor | None = None
    yd = torch.empty(0, dtype=torch.long)  # read only where Xd is set
    if X_dev is not None and y_dev is not None:
        Xd = torch.tensor(X_dev, dtype=torch.float32, device=dev).sub_(mean).div_(scale)
        yd = torch.as_tensor(y_dev, dtype=torch.long, device=dev)
    Cs = sorted(Cs)
    p = torch.zeros(G, d * K + K, dtype=torch.float32, device=dev)  # feature-space parameters, between stages
    # initialise the bias at the log class prior of each head: the optimum for all-zero weights
    for s_, ys_ in enumerate(yt.view(S, -1)):
        prior = torch.bincount(ys_, minlength=n_classes).float() + 1e-3
        p[:, d * K + s_ * n_classes: d * K + (s_ + 1) * n_classes] = torch.log(prior / prior.sum())
    # Stage 1: the regularisation path (strongest first, warm-started) on a random subsample of
    # at most `warm_subsample` words, where iterations are cheap; C is chosen per layer on dev.
    gen = torch.Generator().manual_seed(seed)
    sub = torch.randperm(N, generator=gen)[:warm_subsample].to(dev) if 0 < warm_subsample < N else None
    Xs, ys = (Xt[:, sub], yt[..., sub]) if sub is not None else (Xt, yt)
    Ns = Xs.shape[1]
    eig = feature_eig(Xs) if precondition else None

    def solve(X_, y_, l2, p_w, iters_cap, precond_l2=None, memory=None):
        pc = preconditioner(eig, l2 if precond_l2 is None else precond_l2) if precondition else None
        prob = Problem(X_, y_, n_classes, l2, pc)
        q, iters, mem = batched_lbfgs(prob, prob.to_params(p_w), max_iter=iters_cap, tol=tol, ftol=ftol,
                                      memory=memory)
        return prob.to_weights(q), iters, mem

    best_C = torch.full((G,), float(Cs[-1]), dtype=torch.float32, device=dev)
    best_p = p.clone()
    best_acc = torch.full((G,), -1.0, device=dev)
    best_mem = None
    iters_total = torch.zeros(G, dtype=torch.long, device=dev)
    final_iters = torch.zeros(G, dtype=torch.long, device=dev)  # the chosen C's solve, until a polish replaces it
    path_cap = min(max_iter, path_iter) if sub is not None else max_iter
    # a fixed C per layer (e.g. a control task probed at the task's chosen strengths) is a one-step path
    path = [torch.tensor([float(c) for c in fixed_C], dtype=torch.float32, device=dev)] if fixed_C is not None \
        else [torch.full((G,), float(C), dtype=torch.float32, device=dev) for C in Cs]
    for Cvec in path:
        # preconditioned as the all-data problem at this C, so that the L-BFGS memory carries over to the polish
        p, iters, mem = solve(Xs, ys, 1.0 / (Cvec * Ns), p, path_cap, precond_l2=1.0 / (Cvec * N))
        iters_total += iters
        if Xd is not None:
            W, b = unpack(p, G, d, K)
            acc = (torch.baddbmm(b.unsqueeze(1), Xd, W).argmax(2) == yd).float().mean(1)
        else:
            acc = Cvec.clone()  # no dev data: keep the last (weakest) C
        better = acc > best_acc + 1e-12
        best_acc = torch.where(better, acc, best_acc)
        best_C = torch.where(better, Cvec, best_C)
        best_p = torch.where(better.unsqueeze(1), p, best_p)
        final_iters = torch.where(better, iters, final_iters)
        best_mem = mem if best_mem is None else mem.where(better, best_mem)
    p = best_p
    # Stage 2: polish each layer at its chosen C on all training words (warm start from stage 1).
    final_cap = max_iter
    if sub is not None:
        final_cap = max_iter if polish_iter is None else polish_iter
        p, iters, _ = solve(Xt, yt, 1.0 / (best_C * N), p, final_cap, memory=best_mem if carry_memory else None)
        iters_total += iters
        final_iters = iters
    converged = (final_iters < final_cap).cpu().numpy()
    if polish_iter is None and not converged.all():
        log.warning("linear probe: layer(s) %s did not reach the tolerance %g in %d iterations on all training words; "
                    "their numbers are those of an unfinished fit", [layers[g] for g in np.flatnonzero(~converged)],
                    tol, final_cap)
    W, b = unpack(p, G, d, K)
    if Xd is not None:
        best_acc = (torch.baddbmm(b.unsqueeze(1), Xd, W).argmax(2) == yd).float().mean(1)
    m = mean.squeeze(1).cpu().numpy()
    s = scale.squeeze(1).cpu().numpy()
    W, b = W.detach().cpu().numpy(), b.detach().cpu().numpy()
    heads = []
    for h in range(S):
        cols = slice(h * n_classes, (h + 1) * n_classes)
        heads.append([LayerFit(layer=layers[g_], C=float(f"{float(best_C[g_]):.6g}"), coef=W[g_][:, cols].copy(),
                               intercept=b[g_][cols].copy(), mean=m[g_], scale=s[g_], iterations=int(iters_total[g_]),
                               dev_accuracy=float(best_acc[g_]) if Xd is not None else None,
                               final_iterations=int(final_iters[g_]), converged=bool(converged[g_]))
                      for g_ in range(G)])
    return heads if yt.dim() == 2 else heads[0]  # the result's shape follows y's: [S, N] -> one list per set


def _check_fit_inputs(X, y, n_classes, Cs, fixed_C, X_dev, y_dev) -> None:
    """Clear errors for what would otherwise fail deep inside torch or give NaN weights silently."""
    shape = tuple(getattr(X, "shape", ()))
    if len(shape) != 3:
        raise DataError(f"X_train must be [layer, item, d_model], got shape {shape}.")
    ys = tuple(getattr(y, "shape", np.shape(y)))
    if not ys or ys[-1] != shape[1]:
        raise DataError(f"y_train has shape {ys}, but X_train has {shape[1]} items.")
    for name, lab in (("y_train", y), ("y_dev", y_dev)):
        if lab is None or not np.size(lab):
            continue
        lo, hi = int(np.min(np.asarray(lab))), int(np.max(np.asarray(lab)))
        if lo < 0 or hi >= n_classes:
            raise DataError(f"{name} holds label {lo if lo < 0 else hi}, outside 0..{n_classes - 1} (n_classes="
                            f"{n_classes}). Drop left-out items (-1) before fitting.")
    for name, cs in (("Cs", Cs), ("fixed_C", fixed_C)):
        if cs is None and name == "fixed_C":
            continue
        cs = list(np.atleast_1d(np.asarray(cs, dtype=float))) if cs is not None else []
        if not cs or any(not (math.isfinite(c) and c > 0) for c in cs):
            raise ConfigError(f"{name} must be positive finite inverse L2 strengths, got {cs!r}.")
    if X_dev is not None:
        ds = tuple(getattr(X_dev, "shape", ()))
        if len(ds) != 3 or ds[0] != shape[0] or ds[2] != shape[2]:
            raise DataError(f"X_dev must be [{shape[0]}, item, {shape[2]}] like X_train, got shape {ds}.")
        if y_dev is None or np.shape(y_dev)[-1] != ds[1]:
            raise DataError(f"y_dev must have one label per X_dev item ({ds[1]}), got "
                            f"{None if y_dev is None else np.shape(y_dev)}.")


def fit_layers(X_train: np.ndarray, y_train: np.ndarray, **kw) -> list:
    """Fit one probe per layer on ``X_train: [layer, word, d_model]`` (the one trainer of linear probes over layers;
    see :func:`_fit_layers`), under the thread policy of :func:`probekit._device.probe_threads`."""
    dev = resolve_device(kw.get("device"))
    with probe_threads(int(np.prod(X_train.shape)), dev):
        return _fit_layers(X_train, y_train, **kw)



def fit_from_stores(stores: dict, items: dict[str, Labelled], layers: list[int], *, level: str, pooling: str | None,
                    n_classes: int, Cs: Sequence[float] = DEFAULT_CS, device: str | None = None, seed: int = 0
                    ) -> Iterator[tuple[dict[str, np.ndarray], list[LayerFit]]]:
    """Linear probes on ``layers`` of activation stores, one layer group at a time: yields (the group's features
    ``{role: [G, n, d_model]}``, its :class:`LayerFit` list). ``stores`` and ``items`` are keyed by split role
    (``train``; ``dev`` when given chooses C per layer; other roles are loaded for the caller to score)."""
    rows = {role: it.rows for role, it in items.items()}
    dev = items.get("dev")
    for group, X in feature_groups(stores, rows, layers, level=level, pooling=pooling):
        yield X, fit_layers(X["train"], items["train"].y, n_classes=n_classes, Cs=tuple(Cs), X_dev=X.get("dev"),
                            y_dev=None if dev is None else dev.y, layers=group, device=device, seed=seed)


class LinearProbe(ClassifierMixin, BaseEstimator):
    """A single-layer multinomial logistic-regression probe (a scikit-learn estimator).

    Args:
        C: inverse L2 strength (as in scikit-learn), or a tuple of candidates chosen on the ``X_dev``/``y_dev``
            passed to :meth:`fit`.
        max_iter, tol: L-BFGS limits (per fit).
        device: ``cpu``/``cuda``; default CUDA when available.
        random_state: seed of the stage-1 subsample (see :func:`fit_layers`).

    Attributes (after fit): ``classes_``, ``coef_`` (``[1, d]`` for two classes, else ``[n_classes, d]``, in raw
    feature space, as scikit-learn's ``LogisticRegression``), ``intercept_``, ``C_`` (the strength kept),
    ``n_iter_``, ``n_features_in_``, ``fit_`` (the :class:`LayerFit`).
    """

    def __init__(self, C=1.0, *, max_iter: int = 100, tol: float = 1e-4, device: str | None = None,
                 random_state: int = 0):
        self.C = C
        self.max_iter = max_iter
        self.tol = tol
        self.device = device
        self.random_state = random_state

    def fit(self, X, y, X_dev=None, y_dev=None) -> "LinearProbe":
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32])
        check_classification_targets(y)
        X = np.asarray(X, dtype=np.float32)
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"LinearProbe needs at least 2 classes in y, got 1 class ({self.classes_.tolist()}).")
        Cs = tuple(self.C) if isinstance(self.C, (tuple, list)) else (self.C,)
        ydev_idx = None
        if X_dev is not None:
            lookup = {c: i for i, c in enumerate(self.classes_)}
            ydev_idx = np.array([lookup.get(v, -1) for v in np.asarray(y_dev)])
            keep = ydev_idx >= 0
            X_dev, ydev_idx = np.asarray(X_dev, dtype=np.float32)[keep][None], ydev_idx[keep]
        fit = fit_layers(X[None], y_idx, n_classes=len(self.classes_), Cs=Cs, X_dev=X_dev, y_dev=ydev_idx,
                         max_iter=self.max_iter, tol=self.tol, device=self.device, seed=self.random_state)[0]
        self.fit_ = fit
        self.C_ = fit.C
        coef = (fit.coef / fit.scale[:, None]).T.astype(np.float64)  # [n_classes, d] in raw feature space
        intercept = (fit.intercept - (fit.mean / fit.scale) @ fit.coef).astype(np.float64)
        if len(self.classes_) == 2:  # scikit-learn's binary form: the logit of class 1 against class 0
            coef, intercept = coef[1:] - coef[:1], intercept[1:] - intercept[:1]
        self.coef_, self.intercept_ = coef, intercept
        self.n_iter_ = np.array([fit.iterations])
        return self

    def decision_function(self, X) -> np.ndarray:
        """``[n]`` logit of class 1 for two classes, else ``[n, n_classes]`` logits (float64)."""
        check_is_fitted(self, "coef_")
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        z = np.asarray(X, dtype=np.float64) @ self.coef_.T + self.intercept_
        return z[:, 0] if len(self.classes_) == 2 else z

    def predict_proba(self, X) -> np.ndarray:
        z = self.decision_function(X)
        return softmax(np.column_stack([np.zeros_like(z), z]) if z.ndim == 1 else z)

    def predict(self, X) -> np.ndarray:
        z = self.decision_function(X)
        return self.classes_[(z > 0).astype(np.int64) if z.ndim == 1 else z.argmax(1)]


@register_probe("linear")
class LinearFamily(ProbeFamily):
    """The ``linear`` probe family: :func:`fit_layers` over a layer group, the inverse L2 strength chosen per layer
    on dev. The seed draws the subsample on which C is chosen (and from which the polish is warm-started); the polish
    then runs to the tolerance, so seeds differ only where the subsample picks another C or the tolerance leaves a
    difference, and that spread is what the seed columns show. The control tasks of all seeds are one multi-head
    problem at the strengths chosen for the task."""

    seed_dependent = True
    joint_controls = True
    has_mdl = True
    checks_own_inputs = True

    def fit(self, X, y, *, n_classes, settings: FitSettings, seed, reg=None) -> list[LayerResult]:
        if reg is None:
            fits = fit_layers(X["train"], y["train"], n_classes=n_classes, Cs=tuple(settings.inv_l2_grid),
                              X_dev=X["dev"], y_dev=y["dev"], device=settings.device, seed=seed)
        else:
            fits = fit_layers(X["train"], y["train"], n_classes=n_classes, fixed_C=reg, device=settings.device,
                              seed=seed)
        out = []
        for i, f in enumerate(fits):
            proba = f.predict_proba(X["test"][i])  # one float64 scoring pass: its argmax is f.predict's
            out.append(LayerResult(f.predict(X["dev"][i]), proba.argmax(1), f.n_params, f.C, proba.max(1),
                                   iterations=f.final_iterations))
        return out

    def fit_controls(self, X, controls, *, seeds, n_classes, settings: FitSettings, chosen):
        every = sorted(controls)
        Y = np.stack([controls[s]["train"] for s in every])
        # one problem for every seed's labels: its subsample (only a warm start at fixed strengths) is the first seed's
        heads = fit_layers(X["train"], Y, n_classes=n_classes, fixed_C=chosen, device=settings.device, seed=every[0])
        return {s: [LayerResult(None, f.predict(X["test"][i]), f.n_params, f.C) for i, f in enumerate(fits)]
                for s, fits in zip(every, heads)}

    def codelength(self, X_train, y_train, *, n_classes, seed, device):
        with probe_threads(int(np.prod(X_train.shape)), resolve_device(device)):
            return online_codelength_layers(X_train, y_train, n_classes=n_classes, seed=seed, device=device)
