"""Neuron-level analysis as in NeuroX (Dalvi et al. 2019, "What Is One Grain of Sand in the Desert?").

* :func:`fit_elastic_net`: a multinomial logistic probe with elastic-net regularisation, for every layer of a block
  ``X [layer, item, neuron]`` at once. Objective per layer (features standardised with the training mean and scale):

      F(W, b) = mean_i CE(softmax(x_i W + b), y_i) + l1 * ||W||_1 + l2 * ||W||_2^2

  (the bias is not penalised). It is minimised by monotone FISTA (Beck & Teboulle 2009: proximal gradient with
  momentum, each step keeps the better of the new and old iterate, so F never increases) with the fixed step 1/L,
  L = lambda_max([X 1]^T [X 1] / N) / 2 + 2 * l2 (the softmax cross-entropy's Hessian in the logits is at most I/2).
  A layer has converged when the gradient mapping ``L * (y - prox(y - grad / L))`` is below ``tol`` in every entry
  (the optimality condition of the L1-penalised problem).
* :func:`neuron_ordering`: NeuroX's global ranking: for every percentage p = 0, 1/stride, ..., 1 and every class,
  the neurons sorted by |weight| that make up p of the class's total |weight| mass (up to and including the one that
  reaches it); the union over classes grows with p, and neurons enter the ranking in the order they enter the union.
* :func:`select`: the top, bottom or a random ``k`` neurons of a layer.
* :func:`masked_predict`: the trained probe's predictions with some neurons' activations set to zero (ablation).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from probekit._device import resolve_device
from probekit.errors import ConfigError, DataError
from probekit.probing.features import check_finite, standardise

SELECTIONS = ("top", "random", "bottom")
#: The extrapolated point's logits are combined from earlier ones; every REFRESH iterations they are recomputed.
REFRESH = 50


@dataclass(frozen=True)
class ElasticNetSettings:
    """``l1`` and ``l2`` multiply the penalties of the mean cross-entropy (NeuroX's ``lambda_l1``, ``lambda_l2``)."""

    l1: float = 1e-3
    l2: float = 1e-3
    max_iter: int = 2000
    tol: float = 1e-4
    device: str | None = None

    def __post_init__(self) -> None:
        for name in ("l1", "l2"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
                raise ConfigError(f"neurons.{name} must be a number >= 0, got {v!r}.")
        if isinstance(self.max_iter, bool) or not isinstance(self.max_iter, int) or self.max_iter < 1:
            raise ConfigError(f"neurons.max_iter must be a positive integer, got {self.max_iter!r}.")
        if not (isinstance(self.tol, (int, float)) and self.tol > 0):
            raise ConfigError(f"neurons.tol must be a number > 0, got {self.tol!r}.")


@dataclass
class ElasticNetFit:
    """Probes of ``G`` layers on standardised features: ``W [G, d, K]``, ``b [G, K]``, ``mean``/``scale [G, d]``.

    ``objective [G, iterations + 1]`` is F after each iteration (non-increasing), ``iterations [G]`` the iteration at
    which each layer converged (``max_iter`` when it did not), ``converged [G]``.
    """

    W: np.ndarray
    b: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    objective: np.ndarray
    iterations: np.ndarray
    converged: np.ndarray

    def predict(self, X: np.ndarray, zero: np.ndarray | None = None) -> np.ndarray:
        """``[G, N]`` class ids of raw features ``X [G, N, d]``; ``zero [G, m]``: neurons whose activation is set to 0
        first (per layer)."""
        return masked_predict(self, X, zero)



def _check(X: np.ndarray, y: np.ndarray, n_classes: int) -> None:
    if X.ndim != 3:
        raise DataError(f"Neuron probes take features [layer, item, neuron], got shape {X.shape}.")
    if y.shape != (X.shape[1],):
        raise DataError(f"{X.shape[1]} feature rows but {y.shape[0]} labels.")
    if len(y) and (y.min() < 0 or y.max() >= n_classes):
        raise DataError(f"Labels must be class ids in 0..{n_classes - 1}, got {y.min()}..{y.max()}.")
    check_finite(X, "neuron probe")


def fit_elastic_net(X: np.ndarray, y: np.ndarray, *, n_classes: int, settings: ElasticNetSettings | None = None,
                    init: tuple[np.ndarray, np.ndarray] | None = None) -> ElasticNetFit:
    """Elastic-net multinomial logistic probes of every layer of ``X [G, N, d]`` (labels ``y [N]``).

    ``init = (W [G, d, K], b [G, K])`` warm-starts the solver (the problem is convex: the optimum does not depend on
    it, only the number of iterations does).
    """
    import torch

    st = settings or ElasticNetSettings()
    y = np.asarray(y, dtype=np.int64)
    _check(X, y, n_classes)
    dev = resolve_device(st.device)
    Xs, mean, scale = standardise(X, dev)
    G, N, d = Xs.shape
    K = n_classes
    Y = torch.zeros(N, K, device=dev)
    Y[torch.arange(N, device=dev), torch.as_tensor(y, device=dev)] = 1.0
    # Lipschitz constant of the smooth part, per layer: lambda_max of [X 1]^T [X 1] / N, which for centred X is
    # max(lambda_max(X^T X / N), 1)
    gram = Xs.transpose(1, 2) @ Xs / max(N, 1)
    lam = torch.linalg.eigvalsh(gram.double())[:, -1].float().clamp_min(1.0)
    L = (lam / 2 + 2 * st.l2).view(G, 1, 1)
    del gram

    yidx = torch.as_tensor(y, device=dev).view(1, N, 1).expand(G, N, 1)

    def logits(W, b):
        return Xs @ W + b[:, None, :]

    def objective(W, Z):
        ce = -torch.log_softmax(Z, dim=2).gather(2, yidx)[..., 0].mean(1)
        return ce + st.l2 * (W * W).sum((1, 2)) + st.l1 * W.abs().sum((1, 2))

    def grad(W, Z):
        R = (torch.softmax(Z, dim=2) - Y) / N
        return Xs.transpose(1, 2) @ R + 2 * st.l2 * W, R.sum(1)

    def prox(W, b, gW, gb):
        V = W - gW / L
        return torch.sign(V) * (V.abs() - st.l1 / L).clamp_min(0), b - gb / L[:, :, 0]

    if init is None:
        W = torch.zeros(G, d, K, device=dev)
        b = torch.zeros(G, K, device=dev)
    else:
        W = torch.as_tensor(np.asarray(init[0], dtype=np.float32), device=dev).clone()
        b = torch.as_tensor(np.asarray(init[1], dtype=np.float32), device=dev).clone()
        if W.shape != (G, d, K) or b.shape != (G, K):
            raise DataError(f"init shapes {tuple(W.shape)}, {tuple(b.shape)} do not match (layers {G}, neurons {d}, "
                            f"classes {K}).")
    with torch.no_grad():
        # the logits are linear in (W, b): those of the extrapolated point are combined from the iterates' logits,
        # so an iteration costs one product with X and one with X^T (recomputed exactly every REFRESH iterations)
        Zx = logits(W, b)
        F = objective(W, Zx)
        history = [F.cpu().numpy()]
        yW, yb, Zy, t = W, b, Zx, 1.0
        iterations = np.full(G, st.max_iter)
        converged = np.zeros(G, dtype=bool)
        for it in range(1, st.max_iter + 1):
            gW, gb = grad(yW, Zy)
            zW, zb = prox(yW, yb, gW, gb)
            gap = torch.maximum((L * (yW - zW)).abs().amax((1, 2)), (L[:, :, 0] * (yb - zb)).abs().amax(1))
            Zz = logits(zW, zb)
            Fz = objective(zW, Zz)
            better = Fz <= F
            nW = torch.where(better.view(G, 1, 1), zW, W)
            nb = torch.where(better.view(G, 1), zb, b)
            Zn = torch.where(better.view(G, 1, 1), Zz, Zx)
            t_next = (1 + np.sqrt(1 + 4 * t * t)) / 2
            a, c = t / t_next, (t - 1) / t_next
            yW = nW + a * (zW - nW) + c * (nW - W)
            yb = nb + a * (zb - nb) + c * (nb - b)
            Zy = logits(yW, yb) if it % REFRESH == 0 else Zn + a * (Zz - Zn) + c * (Zn - Zx)
            W, b, Zx, F, t = nW, nb, Zn, torch.minimum(F, Fz), t_next
            history.append(F.cpu().numpy())
            now = (gap < st.tol).cpu().numpy() & ~converged
            iterations[now] = it
            converged |= now
            if converged.all():
                break
    return ElasticNetFit(W=W.cpu().numpy(), b=b.cpu().numpy(), mean=mean[:, 0].cpu().numpy(),
                         scale=scale[:, 0].cpu().numpy(), objective=np.stack(history, axis=1),
                         iterations=iterations, converged=converged)


def masked_predict(fit: ElasticNetFit, X: np.ndarray, zero: np.ndarray | None = None) -> np.ndarray:
    """``[G, N]`` predictions of ``fit`` on raw ``X [G, N, d]``, with the activations of the neurons ``zero [G, m]``
    (per layer) set to 0 before standardisation, as NeuroX zeroes a neuron's activation. ``X`` is not modified."""
    G, N, d = X.shape
    out = np.empty((G, N), dtype=np.int64)
    for g in range(G):
        x = np.array(X[g], dtype=np.float32)
        if zero is not None and len(zero[g]):
            x[:, np.asarray(zero[g])] = 0.0
        z = ((x - fit.mean[g]) / fit.scale[g]) @ fit.W[g] + fit.b[g]
        out[g] = z.argmax(1)
    return out


def neuron_ordering(W: np.ndarray, *, search_stride: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """NeuroX's global ordering of the neurons of one probe ``W [d, K]`` and the cutoffs: ``(order [d], cutoffs)``,
    ``cutoffs[p]`` = how many neurons had entered at percentage ``p / search_stride``.

    Within one percentage step NeuroX leaves the order arbitrary (a set); here it is by the largest |weight| over
    classes, then by neuron index. A class whose weights are all zero selects nothing (NeuroX would select its
    first neuron). Neurons that no step selects (zero weight for every class) come last, by index, so the
    ordering is always a permutation of all ``d`` neurons.
    """
    if search_stride < 1:
        raise ConfigError(f"neurons.search_stride must be >= 1, got {search_stride}.")
    A = np.abs(np.asarray(W, dtype=np.float64))
    d, K = A.shape
    entry = np.full(d, search_stride + 1)
    fractions = np.arange(search_stride + 1) / search_stride
    for c in range(K):
        total = A[:, c].sum()
        if total <= 0:
            continue
        idx = np.argsort(-A[:, c], kind="stable")
        cum = np.cumsum(A[idx, c])
        # neurons selected at each percentage: up to and including the first whose cumulative mass reaches it
        n_sel = np.minimum(np.searchsorted(cum, total * fractions, side="left") + 1, d)
        pos = np.empty(d, dtype=np.int64)
        pos[idx] = np.arange(d)
        step = np.searchsorted(n_sel, pos, side="right")  # first percentage step whose selection includes pos
        step[A[:, c] == 0] = search_stride + 1  # a zero weight carries no mass
        entry = np.minimum(entry, step)
    order = np.lexsort((np.arange(d), -A.max(1), entry))
    cutoffs = np.array([(entry <= p).sum() for p in range(search_stride + 1)])
    return order, cutoffs


def select(order: np.ndarray, k: int, selection: str, *, rng: np.random.Generator | None = None) -> np.ndarray:
    """``k`` neurons of one layer: the first ``k`` of ``order`` (``top``), its last ``k`` (``bottom``), or ``k``
    drawn without replacement (``random``, with ``rng``)."""
    d = len(order)
    if not 1 <= k <= d:
        raise ConfigError(f"Cannot select {k} of {d} neurons: k must be in 1..{d}.")
    if selection == "top":
        return np.sort(order[:k])
    if selection == "bottom":
        return np.sort(order[d - k:])
    if selection == "random":
        return np.sort((rng or np.random.default_rng(0)).choice(d, size=k, replace=False))
    raise ConfigError(f"Unknown neuron selection {selection!r}; choose one of {', '.join(SELECTIONS)}.")


def n_selected(fraction: float, d: int) -> int:
    """How many of ``d`` neurons a fraction selects: ``round(fraction * d)``, at least 1."""
    if not 0 < fraction <= 1:
        raise ConfigError(f"neurons.fractions must lie in (0, 1], got {fraction!r}.")
    return max(1, int(round(fraction * d)))
