"""The batched L-BFGS solver of the linear and MDL probes, and its preconditioner.

:class:`Problem` is G independent L2-regularised multinomial logistic regressions (one per layer), each with S label
sets ("heads") on the same features; :func:`batched_lbfgs` minimises all of them at once, with per-problem history,
Armijo backtracking and convergence (a converged layer stops moving while the others go on). :func:`preconditioner`
is the change of variables ``W = P V`` that makes the problems close to perfectly conditioned.

The matmul kernels chosen below, and why, were measured; the figures are in docs/design.md ("Linear solver").
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor


class Problem:
    """Batched objective: G independent problems (one per layer), each with S label sets ("heads").

    ``y`` is ``[N]`` (one head) or ``[S, N]``: S independent multinomial LR problems on the same features
    (e.g. the control tasks of several seeds), solved as one with a ``[d, K]`` weight matrix (K = S * n_classes), so
    that a pass over the big ``X`` serves every head. The heads do not interact: the objective is their sum.
    """

    def __init__(self, X, y, n_classes: int, l2, precond=None, l2_bias=None):
        import torch

        self.X = X  # [G, N, d] float32, standardised
        # optional change of variables W = P V (see `preconditioner`): (P, P^-1), each [G, Hp, d, d], one per group
        # of K / Hp output columns (Hp = 1: one for all heads)
        self.P: Any
        self.P_inv: Any
        self.P, self.P_inv = precond if precond is not None else (None, None)
        y2 = y if y.dim() == 2 else y.unsqueeze(0)
        self.G, self.N, self.d = X.shape
        self.S, self.n_classes = y2.shape[0], n_classes
        self.K = self.S * self.n_classes
        # L2 strength on W per layer [G] or per layer and output column [G, K]; optionally also on the bias
        self.l2 = l2 if l2.dim() == 2 else l2.unsqueeze(1).expand(self.G, self.K)
        self.l2_bias = l2_bias  # None or [G, K]
        # column of each row's true class in each head: [1, N, S] (read for the loss, decremented for the gradient)
        self.true_col = (y2.T + torch.arange(self.S, device=X.device) * self.n_classes).unsqueeze(0).contiguous()

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
        return unpack(p, self.G, self.d, self.K)

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
        return pack(*self.weights(p))

    def _probs_and_loss(self, p):
        """(W [G, d, K], softmax probabilities [G, N, K], loss [G]) at ``p``: the forward half of `loss_grad`."""
        import torch

        W, b = self.weights(p)
        # W is stored class-major ([G, K, d] contiguous) and X @ W runs as one addmm per layer: both were the faster
        # choice (docs/design.md, "Linear solver"), and the gradient lands in that layout as is.
        logits = torch.empty(self.G, self.N, self.K, dtype=W.dtype, device=W.device)
        for g in range(self.G):
            torch.addmm(b[g], self.X[g], W[g], out=logits[g])  # [N, K]
        # log-sum-exp and softmax from one exp pass (torch.logsumexp + torch.softmax made two, each with its own max)
        z = logits.view(self.G, self.N, self.S, self.n_classes)
        top = z.amax(3, keepdim=True)
        e = torch.sub(z, top).exp_()
        total = e.sum(3, keepdim=True)
        lse = (total.log() + top).sum((2, 3))  # [G, N]
        true = logits.gather(2, self.true_col.expand(self.G, self.N, self.S)).sum(2)
        loss = (lse - true).mean(1) + 0.5 * (self.l2.unsqueeze(1) * W * W).sum((1, 2))
        if self.l2_bias is not None:
            loss = loss + 0.5 * (self.l2_bias * b * b).sum(1)
        return W, e.div_(total).view(self.G, self.N, self.K), loss  # probabilities [G, N, K]

    def loss_grad(self, p):
        """p: [G, d*K + K] -> (loss [G], grad [G, d*K + K])."""
        import torch

        W, R, loss = self._probs_and_loss(p)
        b = self.split(p)[1]
        idx = self.true_col.expand(self.G, self.N, self.S)
        R = R.scatter_add_(2, idx, torch.full((1, 1, 1), -1.0, dtype=R.dtype, device=R.device).expand_as(idx))
        R = R.div_(self.N)  # softmax minus one-hot, over N: [G, N, K]
        # The fast kernel depends on K: one bmm of R^T X below 16 outputs, X^T R per layer from 16 on (measured
        # table in docs/design.md, "Linear solver"). The choice changes the bits of a fit, so it is part of the
        # unit key's UNIT_VERSION.
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


#: Curvature assumed for the data term (per unit of feature variance) when preconditioning (chosen by measurement,
#: docs/design.md).
PRECOND_CURVATURE = 0.05


def feature_eig(X):
    """Eigen-decomposition of each layer's feature second-moment matrix: (eigenvalues [G, d], vectors [G, d, d]),
    float64. ``X``: [G, n, d] standardised features (a subsample is plenty)."""
    import torch

    n = X.shape[1]
    cov = torch.stack([gram(x) for x in X]).double() / max(n, 1)
    lam, U = torch.linalg.eigh(cov)
    return lam.clamp_min(0.0), U


def gram(x):
    """``x^T x`` of one layer's features ``x [n, d]`` (float32).

    On the CPU this is BLAS ``ssyrk``, which computes one triangle: half the FLOPs of a matmul. ``x^T`` of a
    row-major ``x`` is a column-major ``[d, n]`` matrix, so nothing is copied.

    The bits must not depend on the thread count (a sweep worker, ``probekit run`` and another machine must agree):
    a multi-threaded ssyrk splits its sums by thread, and its result did. So it runs on one thread (timings in
    docs/design.md, "Linear solver").
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
    unchanged (it is still evaluated on W). It about halves the iterations on transformer features (docs/design.md).

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


def unpack(p, G: int, d: int, K: int):
    """(W [G, d, K], b [G, K]) from parameters in the stored (class-major) layout, as views."""
    return p[:, :d * K].view(G, K, d).transpose(1, 2), p[:, d * K:]


def pack(W, b):
    """The stored layout ``[G, d*K + K]`` of (W [G, d, K], b [G, K]): the inverse of :func:`unpack`."""
    import torch

    return torch.cat([W.transpose(1, 2).reshape(W.shape[0], -1), b], dim=1)


def batched_lbfgs(problem: Problem, p0, *, max_iter: int = 100, tol: float = 1e-4, history: int = 10,
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
            ft, gt = loss_grad_of(problem, trial, ~accepted)
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


def loss_grad_of(problem: Problem, p, rows):
    """``problem.loss_grad(p)`` evaluated only for the problems in the mask ``rows`` [G]; the others get loss +inf and
    gradient 0, so a backtracking step or a converged layer costs a pass over its own layers only."""
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

    S: "Tensor"
    Y: "Tensor"
    rho: "Tensor"

    def where(self, mask, other: "LbfgsMemory") -> "LbfgsMemory":
        """This memory for the problems in ``mask`` [G], ``other``'s for the rest."""
        import torch

        m2, m1 = mask.view(1, -1, 1), mask.view(1, -1)
        return LbfgsMemory(torch.where(m2, self.S, other.S), torch.where(m2, self.Y, other.Y),
                           torch.where(m1, self.rho, other.rho))


