"""Multinomial logistic-regression probes, trained for many layers at once.

The trainer solves one L2-regularised multinomial logistic regression per layer, all layers as
one batched problem on ``[layer, word, d_model]`` tensors:

* features are standardised per layer (mean 0, variance 1 on train), which makes the problem
  well conditioned;
* L-BFGS with per-layer history, per-layer Armijo backtracking and per-layer convergence
  checks (a converged layer stops moving while the others go on);
* the regularisation path (strongest first) is warm-started, and the strength is chosen per layer
  on dev accuracy;
* float32, on the GPU when there is one.

The objective per layer is ``mean_i CE(x_i W + b, y_i) + ||W||² / (2 C N)``, i.e. exactly
scikit-learn's ``LogisticRegression(C=C)`` objective divided by ``C N``.
"""
from __future__ import annotations

import logging
import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from probekit.errors import ConfigError, DataError

log = logging.getLogger(__name__)

DEFAULT_CS = (0.01, 0.1, 1.0)


@contextmanager
def torch_threads(n: int | None):
    """Temporarily set torch's intra-op thread count (None = leave it)."""
    import torch

    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def small_problem_threads(n_elements: int, device: str) -> int | None:
    """One CPU thread for small problems: L-BFGS runs many small tensor ops, for which thread
    synchronisation costs more than it saves (measured 3-13x slower with 2 threads at 5k x 384). From a few
    million elements on, two threads win: MDL on 7 layers x 10k words x 384 took 13.5 s with 2 threads and
    20.5 s with 1 on the 2-core machine."""
    return 1 if device == "cpu" and n_elements < 8_000_000 else None


def _device(device: str | None) -> str:
    import torch

    return device or ("cuda" if torch.cuda.is_available() else "cpu")


class _Problem:
    """Batched objective: G independent problems (one per layer), each with S label sets ("heads").

    ``y`` is ``[N]`` (one head) or ``[S, N]``: S independent multinomial LR problems on the same features
    (e.g. the control tasks of several seeds), solved as one with a ``[d, S*C]`` weight matrix, so that a
    pass over the big ``X`` serves every head. The heads do not interact: the objective is their sum.
    """

    def __init__(self, X, y, n_classes: int, l2, precond=None, l2_bias=None):
        import torch

        self.X = X  # [G, N, d] float32, standardised
        # optional change of variables W = P V (see `preconditioner`): (P, P^-1), each [G, Hp, d, d], one per group
        # of K / Hp output columns (Hp = 1: one for all heads)
        self.P, self.P_inv = precond if precond is not None else (None, None)
        y2 = y if y.dim() == 2 else y.unsqueeze(0)
        self.G, self.N, self.d = X.shape
        self.S, self.C = y2.shape[0], n_classes
        self.K = self.S * self.C
        # L2 strength on W per layer [G] or per layer and output column [G, K]; optionally also on the bias
        self.l2 = l2 if l2.dim() == 2 else l2.unsqueeze(1).expand(self.G, self.K)
        self.l2_bias = l2_bias  # None or [G, K]
        # column of each row's true class in each head: [1, N, S] (read for the loss, decremented for the gradient)
        self.true_col = (y2.T + torch.arange(self.S, device=X.device) * self.C).unsqueeze(0).contiguous()

    def select(self, rows):
        """This problem restricted to the problems (layers) ``rows``, a list of indices; ``X`` is shared, not copied."""
        import copy

        import torch

        sub = copy.copy(self)
        idx = torch.as_tensor(rows, dtype=torch.long, device=self.true_col.device)
        sub.X = [self.X[g] for g in rows]  # per-layer views: indexing the [G, N, d] tensor with a list would copy it
        sub.G = len(rows)
        sub.l2 = self.l2[idx]
        sub.l2_bias = None if self.l2_bias is None else self.l2_bias[idx]
        if self.P is not None:
            sub.P, sub.P_inv = self.P[idx], self.P_inv[idx]
        return sub

    def split(self, p):
        """(V [G, d, K] as a view of the stored [G, K, d] block, b [G, K]); V is W unless preconditioned."""
        return _unpack(p, self.G, self.d, self.K)

    def weights(self, p):
        """(W [G, d, K], b [G, K]) in (standardised) feature space."""
        V, b = self.split(p)
        if self.P is None:
            return V, b
        return self._by_group(V.transpose(1, 2), self.P.transpose(2, 3)).transpose(1, 2), b  # W^T = V^T P^T

    def _by_group(self, At, M):
        """``At [G, K, d]`` times ``M [G, Hp, d, d]``, each group of K / Hp rows by its own matrix."""
        import torch

        Hp = M.shape[1]
        return torch.matmul(At.reshape(self.G, Hp, self.K // Hp, self.d), M).reshape(self.G, self.K, self.d)

    def to_params(self, p_w):
        """Parameters in this problem's variables from feature-space parameters (the inverse of `weights`)."""
        import torch

        if self.P is None:
            return p_w
        Wt = p_w[:, :self.d * self.K].view(self.G, self.K, self.d)
        Vt = self._by_group(Wt, self.P_inv.transpose(2, 3))  # V = P^-1 W
        return torch.cat([Vt.reshape(self.G, -1), p_w[:, self.d * self.K:]], dim=1)

    def to_weights(self, p):
        """Feature-space parameters ([G, d*K + K], the stored layout) from this problem's variables."""
        if self.P is None:
            return p
        return _pack(*self.weights(p))

    def _probs_and_loss(self, p):
        """(W [G, d, K], softmax probabilities [G, N, K], loss [G]) at ``p``: the forward half of `loss_grad`."""
        import torch

        W, b = self.weights(p)
        # W is stored class-major ([G, K, d] contiguous): X @ W through that layout was 3x faster for small K
        # than a contiguous [G, d, K] W (7 x 50k x 384, K=2, CPU), and the gradient lands in it as is.
        # One addmm per layer rather than one baddbmm: 196 vs 221 ms for 7 x 65k x 384, K=17 (CPU).
        logits = torch.empty(self.G, self.N, self.K, dtype=W.dtype, device=W.device)
        for g in range(self.G):
            torch.addmm(b[g], self.X[g], W[g], out=logits[g])  # [N, S*C]
        # log-sum-exp and softmax from one exp pass (torch.logsumexp + torch.softmax made two, each with its own max)
        z = logits.view(self.G, self.N, self.S, self.C)
        top = z.amax(3, keepdim=True)
        e = torch.sub(z, top).exp_()
        total = e.sum(3, keepdim=True)
        lse = (total.log() + top).sum((2, 3))  # [G, N]
        true = logits.gather(2, self.true_col.expand(self.G, self.N, self.S)).sum(2)
        loss = (lse - true).mean(1) + 0.5 * (self.l2.unsqueeze(1) * W * W).sum((1, 2))
        if self.l2_bias is not None:
            loss = loss + 0.5 * (self.l2_bias * b * b).sum(1)
        return W, e.div_(total).view(self.G, self.N, self.K), loss  # probabilities [G, N, S*C]

    def loss_grad(self, p):
        """p: [G, d*S*C + S*C] -> (loss [G], grad [G, d*S*C + S*C])."""
        import torch

        W, R, loss = self._probs_and_loss(p)
        b = self.split(p)[1]
        idx = self.true_col.expand(self.G, self.N, self.S)
        R = R.scatter_add_(2, idx, torch.full((1, 1, 1), -1.0, dtype=R.dtype, device=R.device).expand_as(idx))
        R = R.div_(self.N)  # softmax minus one-hot, over N: [G, N, K]
        # The kernel that MKL runs fast depends on K; measured at 7 x 65k x 384 (CPU, 2 threads), in ms:
        #   K                       2     5    10    12    16    17    34
        #   R^T X, mm per layer   155   136   199   166   160   205   290   (R^T a transposed view: no copy)
        #   R^T X, one bmm        103    90   118   124   160   182   314   (R^T made contiguous: 4 MB at K=2)
        #   X^T R, mm per layer  1469  2256  2782   142   130   171   252   (X^T a transposed view: no copy)
        # so one bmm below 16 classes and X^T R from 16 on. X^T R gave R^T X's bits at 12-85 classes, the bmm at 2 but
        # not at 5 (1e-3 on coefficients after a fit; UNIT_VERSION 3 covers it). (torch.bmm on the transposed view of
        # the whole [G, N, d] X takes a strided path that was 24x slower.)
        gW = torch.empty(self.G, self.K, self.d, dtype=W.dtype, device=W.device)
        if self.K >= 16:
            for g in range(self.G):
                gW[g].copy_(torch.mm(self.X[g].t(), R[g]).t())
        elif torch.is_tensor(self.X):
            torch.bmm(R.transpose(1, 2).contiguous(), self.X, out=gW)
        else:  # some layers of a problem (`select`): per-layer views, not one tensor
            for g in range(self.G):
                torch.mm(R[g].t(), self.X[g], out=gW[g])
        gW += self.l2.unsqueeze(2) * W.transpose(1, 2)
        if self.P is not None:
            gW = self._by_group(gW, self.P)  # dL/dV = P^T dL/dW, i.e. (dL/dV)^T = (dL/dW)^T P
        gb = R.sum(1)
        if self.l2_bias is not None:
            gb = gb + self.l2_bias * b
        return loss, torch.cat([gW.reshape(self.G, -1), gb], dim=1)


#: Curvature assumed for the data term (per unit of feature variance) when preconditioning; 0.05 converged fastest
#: of 0.01-1 on upos and aux_verb (minilm, EWT), and anything in 0.01-0.2 was within a few iterations of it.
PRECOND_CURVATURE = 0.05


def feature_eig(X):
    """Eigen-decomposition of each layer's feature second-moment matrix: (eigenvalues [G, d], vectors [G, d, d]),
    float64. ``X``: [G, n, d] standardised features (a subsample is plenty)."""
    import torch

    n = X.shape[1]
    cov = torch.stack([_gram(x) for x in X]).double() / max(n, 1)
    lam, U = torch.linalg.eigh(cov)
    return lam.clamp_min(0.0), U


def _gram(x):
    """``x^T x`` of one layer's features ``x [n, d]`` (float32).

    On the CPU this is BLAS ``ssyrk``, which computes one triangle: half the FLOPs of a matmul. ``x^T`` of a
    row-major ``x`` is a column-major ``[d, n]`` matrix, so nothing is copied.

    The bits must not depend on the thread count (a sweep worker, ``probekit run`` and another machine must agree):
    a multi-threaded ssyrk splits its sums by thread, and its result did (up to 3e-4 apart on 16k x 384). So it runs
    on one thread: 81 ms for 16k x 384, against 54 ms on two threads and 79 ms for torch's ``x.T @ x`` (whose bits
    may depend on the thread count too). Two halves in two Python threads did not overlap (the wrapper holds the GIL).
    """
    import torch

    if x.device.type != "cpu" or x.dtype != torch.float32:
        return x.T @ x
    from scipy.linalg.blas import ssyrk
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):  # after the import: it limits the libraries loaded so far
        upper = ssyrk(1.0, x.detach().contiguous().numpy().T, trans=0)  # upper triangle of x^T x; the rest is not set
    return torch.from_numpy(np.triu(upper) + np.triu(upper, 1).T)


def preconditioner(eig, l2, curvature: float = PRECOND_CURVATURE):
    """(P, P^-1) for the change of variables W = P V that makes the problem close to perfectly conditioned.

    With feature covariance U diag(lam) U^T, the Hessian of the mean cross-entropy is roughly ``c * cov`` per class
    (c: the softmax curvature) and the penalty adds ``l2 * I``. With P = U diag((lam + l2/c)^-1/2), the Hessian in V is
    (c lam + l2) / (lam + l2/c) = c in every direction, the feature correlations of a transformer layer (a few
    directions with most of the variance, many with almost none) no longer slow L-BFGS down, and the objective is
    unchanged (it is still evaluated on W). Measured on upos (minilm, 50k words): the loss gap that plain L-BFGS
    reaches in 60 iterations is reached in about 30.

    ``l2`` is [G] (one strength per layer) or [G, H] (H groups of output columns with their own strength, e.g. the
    l2 grid of MDL); the result is ``[G, H, d, d]`` (H = 1 for [G]).
    """
    lam, U = eig
    l2 = l2.double()
    mu = (l2 if l2.dim() == 2 else l2.unsqueeze(1)).unsqueeze(2) / curvature  # [G, H, 1]
    s = (lam.unsqueeze(1) + mu).rsqrt()  # [G, H, d]
    P = U.unsqueeze(1) * s.unsqueeze(2)  # U diag(s)
    P_inv = (U.unsqueeze(1) / s.unsqueeze(2)).transpose(2, 3)  # diag(1/s) U^T
    return P.float().contiguous(), P_inv.float().contiguous()


def _unpack(p, G: int, d: int, K: int):
    """(W [G, d, K], b [G, K]) from parameters in the stored (class-major) layout, as views."""
    return p[:, :d * K].view(G, K, d).transpose(1, 2), p[:, d * K:]


def _pack(W, b):
    """The stored layout ``[G, d*K + K]`` of (W [G, d, K], b [G, K]): the inverse of :func:`_unpack`."""
    import torch

    return torch.cat([W.transpose(1, 2).reshape(W.shape[0], -1), b], dim=1)


def batched_lbfgs(problem: _Problem, p0, *, max_iter: int = 100, tol: float = 1e-4, history: int = 10,
                  ftol: float = 1e-6, max_backtrack: int = 8, memory: "LbfgsMemory | None" = None):
    """Minimise G independent smooth objectives with L-BFGS; returns (params, iterations per problem, memory).

    Converged problems (max |grad| <= tol, relative decrease < ftol, which in float32 is the
    noise level of the loss, or no decrease found in ``max_backtrack`` halvings) are frozen.
    ``memory`` (the curvature pairs of an earlier run in the same variables, e.g. on a subsample of the same data)
    starts the run with that run's Hessian approximation instead of a steepest-descent step.
    """
    import torch

    p = p0.clone()
    G, n = p.shape
    f, g = problem.loss_grad(p)
    if memory is not None:
        S, Yh, rho = memory.S.clone(), memory.Y.clone(), memory.rho.clone()
        history, k_hist = S.shape[0], S.shape[0]
    else:
        S = torch.zeros(history, G, n, dtype=p.dtype, device=p.device)
        Yh = torch.zeros_like(S)
        rho = torch.zeros(history, G, dtype=p.dtype, device=p.device)
        k_hist = 0
    active = g.abs().amax(1) > tol
    iters = torch.zeros(G, dtype=torch.long, device=p.device)
    for it in range(max_iter):
        if not bool(active.any()):
            break
        # two-loop recursion, batched
        q = g.clone()
        m = min(k_hist, history)
        alphas = []
        for j in range(m):
            idx = (k_hist - 1 - j) % history
            a = rho[idx] * (S[idx] * q).sum(1)
            q -= a.unsqueeze(1) * Yh[idx]
            alphas.append((idx, a))
        if m:
            idx = (k_hist - 1) % history
            gamma = (S[idx] * Yh[idx]).sum(1) / (Yh[idx] * Yh[idx]).sum(1).clamp_min(1e-20)
            q *= gamma.unsqueeze(1)
        else:
            q /= g.abs().sum(1, keepdim=True).clamp_min(1e-12) / 1.0
        for idx, a in reversed(alphas):
            bcoef = rho[idx] * (Yh[idx] * q).sum(1)
            q += (a - bcoef).unsqueeze(1) * S[idx]
        direction = -q
        gd = (g * direction).sum(1)
        bad = gd >= 0  # not a descent direction: fall back to steepest descent
        if bool(bad.any()):
            direction[bad] = -g[bad]
            gd = (g * direction).sum(1)
        # per-problem Armijo backtracking; the loss and gradient at the trial point come from one
        # evaluation, so an accepted unit step (the usual case) costs a single pass over the data
        t = torch.ones(G, dtype=p.dtype, device=p.device)
        accepted = ~active
        p_new, f2, g_new = p.clone(), f.clone(), g.clone()
        for _ in range(max_backtrack):
            trial = p + t.unsqueeze(1) * direction
            ft, gt = _loss_grad_of(problem, trial, ~accepted)
            ok = (ft <= f + 1e-4 * t * gd) & ~accepted
            p_new = torch.where(ok.unsqueeze(1), trial, p_new)
            f2 = torch.where(ok, ft, f2)
            g_new = torch.where(ok.unsqueeze(1), gt, g_new)
            accepted = accepted | ok
            if bool(accepted.all()):
                break
            t = torch.where(accepted, t, t * 0.5)
        step_ok = accepted & active
        s = torch.where(step_ok.unsqueeze(1), p_new - p, torch.zeros_like(p))
        ycur = g_new - g
        sy = (s * ycur).sum(1)
        good = step_ok & (sy > 1e-10)
        slot = k_hist % history
        S[slot] = torch.where(good.unsqueeze(1), s, S[slot])
        Yh[slot] = torch.where(good.unsqueeze(1), ycur, Yh[slot])
        rho[slot] = torch.where(good, 1.0 / sy.clamp_min(1e-20), rho[slot])
        # Problems that skipped the update keep old slot content; harmless in practice.
        k_hist += 1
        rel = (f - f2).abs() / torch.maximum(f.abs(), f2.abs()).clamp_min(1.0)
        iters += active.long()
        p = torch.where(step_ok.unsqueeze(1), p_new, p)
        g = torch.where(step_ok.unsqueeze(1), g_new, g)
        f = torch.where(step_ok, f2, f)
        active = active & step_ok & (g.abs().amax(1) > tol) & (rel > ftol)
    # the ring buffer in chronological order (newest pair last), so that memories of runs that stopped after
    # different numbers of iterations line up slot by slot
    shift = (history - k_hist % history) % history
    mem = LbfgsMemory(*(torch.roll(t, shift, dims=0) for t in (S, Yh, rho)))
    return p, iters, mem


def _loss_grad_of(problem: _Problem, p, rows):
    """``problem.loss_grad(p)`` evaluated only for the problems in the mask ``rows`` [G]; the others get loss +inf and
    gradient 0. A backtracking step or a converged layer then costs nothing: on upos (7 layers, 65k words) the first
    polish steps backtracked for 1, 4 and 1 layers, and each of those passes had cost as much as a full one."""
    import torch

    if bool(rows.all()):
        return problem.loss_grad(p)
    f = torch.full((p.shape[0],), math.inf, dtype=p.dtype, device=p.device)
    g = torch.zeros_like(p)
    idx = rows.nonzero().flatten()
    if len(idx):
        f[idx], g[idx] = problem.select(idx.tolist()).loss_grad(p[idx])
    return f, g


@dataclass
class LbfgsMemory:
    """L-BFGS curvature pairs ``[history, G, n]`` (s, y) and ``rho = 1 / s.y`` ``[history, G]``, oldest first. Unused
    slots are zero (rho = 0), which the two-loop recursion skips."""

    S: object
    Y: object
    rho: object

    def where(self, mask, other: "LbfgsMemory") -> "LbfgsMemory":
        """This memory for the problems in ``mask`` [G], ``other``'s for the rest."""
        import torch

        m2, m1 = mask.view(1, -1, 1), mask.view(1, -1)
        return LbfgsMemory(torch.where(m2, self.S, other.S), torch.where(m2, self.Y, other.Y),
                           torch.where(m1, self.rho, other.rho))


@dataclass
class LayerFit:
    """What a trained per-layer probe keeps (arrays are numpy, float32)."""

    layer: int
    C: float
    coef: np.ndarray  # [d, n_classes], in standardised space
    intercept: np.ndarray  # [n_classes]
    mean: np.ndarray  # [d]
    scale: np.ndarray  # [d]
    iterations: int
    dev_accuracy: float | None = None

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        # float64 scoring: a float32 BLAS matmul can flip near-ties with the thread count
        X = np.asarray(X, dtype=np.float64)
        check_finite(X, f"layer {self.layer}")
        return ((X - self.mean) / self.scale) @ self.coef.astype(np.float64) + self.intercept

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        z = self.decision_function(X)
        z -= z.max(1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(1, keepdims=True)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.decision_function(X).argmax(1)

    @property
    def n_params(self) -> int:
        return int(self.coef.size + self.intercept.size)


def check_finite(X, what: str) -> None:
    """DataError when ``X`` (``[..., N, d]``, numpy or torch) holds inf or NaN, e.g. from a float16 store whose model
    has activations beyond 65504. One reducing pass, no array of X's size."""
    if not isinstance(X, np.ndarray) and not hasattr(X, "is_floating_point"):
        X = np.asarray(X)
    if isinstance(X, np.ndarray):
        if X.dtype.kind != "f" or np.isfinite(X.sum(axis=-2, dtype=np.float32)).all():
            return
        bad = int((~np.isfinite(X)).sum())
    else:
        import torch

        if not X.is_floating_point() or bool(torch.isfinite(X.sum(dim=-2, dtype=torch.float32)).all()):
            return
        bad = int((~torch.isfinite(X)).sum())
    what_is = f"{bad:,} non-finite values (inf or NaN)" if bad else "values so large that their sum overflows float32"
    raise DataError(f"{what}: the features hold {what_is}. A float16 store overflows past 65504: extract with "
                    "dtype='float32' (config 'dtype').")


def standardise(X, device: str):
    """(standardised float32 copy of ``X [G, N, d]``, mean [G, 1, d], scale [G, 1, d]); ``X`` is not modified."""
    import torch

    Xr = torch.as_tensor(X, dtype=torch.float32, device=device)
    mean = Xr.mean(1, keepdim=True)
    # as_tensor returns X itself (a float32 tensor) or a view of it (a float32 array on the CPU): never write to those
    shares = Xr is X or (isinstance(X, np.ndarray) and Xr.device.type == "cpu" and np.may_share_memory(X, Xr.numpy()))
    Xt = Xr - mean if shares else Xr.sub_(mean)
    # sum of squares layer by layer, through one reused buffer: torch's std over dim 1 of [G, N, d] took 1.28 s here,
    # a fresh x * x per layer 0.30 s, this 0.16 s (7 x 65k x 384)
    sq = torch.empty_like(Xt[0])
    var = torch.stack([torch.mul(x, x, out=sq).sum(0) for x in Xt]) / max(Xt.shape[1] - 1, 1)
    scale = var.sqrt_().unsqueeze(1).clamp_min(1e-6)
    return Xt.div_(scale), mean, scale


def _fit_layers(X_train: np.ndarray, y_train: np.ndarray, *, n_classes: int, Cs=DEFAULT_CS,
               X_dev: np.ndarray | None = None, y_dev: np.ndarray | None = None, layers: list[int] | None = None,
               max_iter: int = 100, tol: float = 1e-4, device: str | None = None, seed: int = 0,
               warm_subsample: int = 16384, fixed_C: Sequence[float] | None = None,
               polish_iter: int = 10, path_iter: int = 30, precondition: bool = True, ftol: float = 1e-6,
               carry_memory: bool = True) -> list[LayerFit]:
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
    Both stages run in preconditioned variables (:func:`preconditioner`), which converge in about half the
    iterations on transformer features. When stage 2 follows (more than ``warm_subsample`` words), each strength of
    the stage-1 path stops at ``path_iter`` iterations: its jobs are choosing C and a warm start. The polish stops at
    ``polish_iter`` iterations or at convergence, whichever comes first. Measured on UD EWT (minilm, 50k words,
    7 layers, all against the same fit run to convergence): upos took 25.6 s instead of 53.9 s, with every layer's
    test accuracy within 0.12 points; aux_verb took 13.1 s with identical accuracies (without preconditioning, at
    40/30 iterations: 39.5 s and 22.6 s).

    The polish starts from the L-BFGS memory (curvature pairs) of the stage-1 solve at each layer's chosen C
    (``carry_memory``): stage 1 is preconditioned as the all-data problem, so both stages share their variables and
    the subsample's curvature is a good first guess of the full data's. Without it the polish began with a
    steepest-descent step and needed 20 iterations; with it 10 are enough. Measured on upos, 7 layers, 65k words,
    against scikit-learn (``make bench``'s setting): 10.8-11.1 s (9.6 s once passes skip settled layers) with a
    largest test-accuracy gap of 0.19 points; without the memory, 10 polish iterations left a gap of 0.59 points and
    20 took 15-19 s.
    """
    import torch

    dev = _device(device)
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
    Xd = yd = None
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
        prob = _Problem(X_, y_, n_classes, l2, pc)
        q, iters, mem = batched_lbfgs(prob, prob.to_params(p_w), max_iter=iters_cap, tol=tol, ftol=ftol,
                                      memory=memory)
        return prob.to_weights(q), iters, mem

    best_C = torch.full((G,), float(Cs[-1]), dtype=torch.float32, device=dev)
    best_p = p.clone()
    best_acc = torch.full((G,), -1.0, device=dev)
    best_mem = None
    iters_total = torch.zeros(G, dtype=torch.long, device=dev)
    # a fixed C per layer (e.g. a control task probed at the task's chosen strengths) is a one-step path
    path = [torch.tensor([float(c) for c in fixed_C], dtype=torch.float32, device=dev)] if fixed_C is not None \
        else [torch.full((G,), float(C), dtype=torch.float32, device=dev) for C in Cs]
    for Cvec in path:
        # preconditioned as the all-data problem at this C, so that the L-BFGS memory carries over to the polish
        p, iters, mem = solve(Xs, ys, 1.0 / (Cvec * Ns), p, min(max_iter, path_iter) if sub is not None else max_iter,
                              precond_l2=1.0 / (Cvec * N))
        iters_total += iters
        if Xd is not None:
            W, b = _unpack(p, G, d, K)
            acc = (torch.baddbmm(b.unsqueeze(1), Xd, W).argmax(2) == yd).float().mean(1)
        else:
            acc = Cvec.clone()  # no dev data: keep the last (weakest) C
        better = acc > best_acc + 1e-12
        best_acc = torch.where(better, acc, best_acc)
        best_C = torch.where(better, Cvec, best_C)
        best_p = torch.where(better.unsqueeze(1), p, best_p)
        best_mem = mem if best_mem is None else mem.where(better, best_mem)
    p = best_p
    # Stage 2: polish each layer at its chosen C on all training words (warm start from stage 1).
    if sub is not None:
        p, iters, _ = solve(Xt, yt, 1.0 / (best_C * N), p, polish_iter, memory=best_mem if carry_memory else None)
        iters_total += iters
    W, b = _unpack(p, G, d, K)
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
                               dev_accuracy=float(best_acc[g_]) if Xd is not None else None) for g_ in range(G)])
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


def fit_layers(X_train: np.ndarray, y_train: np.ndarray, **kw) -> list[LayerFit]:
    """Fit one probe per layer on ``X_train: [layer, word, d_model]``; see :func:`_fit_layers`."""
    dev = _device(kw.get("device"))
    with torch_threads(small_problem_threads(int(np.prod(X_train.shape)), dev)):
        return _fit_layers(X_train, y_train, **kw)


class LinearProbe:
    """A single-layer multinomial logistic-regression probe with scikit-learn's estimator contract.

    Args:
        C: inverse regularisation strength (as in scikit-learn), or a tuple of candidates chosen on
            the ``X_dev``/``y_dev`` passed to :meth:`fit`.
        max_iter, tol: L-BFGS limits (per fit).
        device: ``cpu``/``cuda``; default CUDA when available.
    """

    def __init__(self, C=1.0, *, max_iter: int = 100, tol: float = 1e-4, device: str | None = None,
                 random_state: int = 0):
        self.C = C
        self.max_iter = max_iter
        self.tol = tol
        self.device = device
        self.random_state = random_state

    def fit(self, X, y, X_dev=None, y_dev=None):
        X = np.asarray(X, dtype=np.float32)
        y = np.asarray(y)
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"Need at least 2 classes in y to fit a probe, got {self.classes_.tolist()}.")
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
        self.coef_ = (fit.coef / fit.scale[:, None]).T  # [n_classes, d] in raw feature space, as sklearn
        self.intercept_ = fit.intercept - (fit.mean / fit.scale) @ fit.coef
        self.n_iter_ = np.array([fit.iterations])
        self.n_features_in_ = X.shape[1]
        return self

    def decision_function(self, X):
        return np.asarray(X, dtype=np.float64) @ self.coef_.T.astype(np.float64) + self.intercept_

    def predict_proba(self, X):
        z = self.decision_function(X)
        z = z - z.max(1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(1, keepdims=True)

    def predict(self, X):
        return self.classes_[self.decision_function(X).argmax(1)]

    def score(self, X, y):
        return float((self.predict(X) == np.asarray(y)).mean())
