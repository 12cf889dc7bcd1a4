"""MDL probing with the online code (Voita & Titov 2020).

Voita & Titov, "Information-Theoretic Probing with Minimum Description Length" (EMNLP 2020),
measure how many bits it takes to transmit the labels ``y`` of a dataset given the
representations ``X``, when sender and receiver agree on a probe family and a training procedure
but not on its parameters. With the **online code** the data (shuffled once, with ``seed``) is cut
into blocks at fractions ``t_1 < t_2 < ... < t_S = 1`` of its size ``N``:

* block 1 (the first ``n_1 = t_1 N`` examples, 0.1% with the paper's portions) is sent with the
  uniform code: exactly ``n_1 log2 K`` bits;
* block ``i > 1`` (examples ``n_{i-1} .. n_i - 1``) is sent with the code given by a probe trained
  on all earlier examples ``0 .. n_{i-1} - 1``: ``-sum log2 p(y_j | x_j)`` bits.

The online codelength is the sum of the block costs. The **uniform codelength** is ``N log2 K``
and **compression** = uniform / online (> 1 means the representation makes the labels cheaper
to send than knowing nothing; random labels give about 1). Codelengths are reported in bits
and kbits (1 kbit = 1000 bits).

Classes missing from a training prefix: every distribution is smoothed before it is scored,
``p' = (1 - eps) p + eps / K`` with ``eps = smoothing`` (default 1e-6), so a class a probe gives
probability 0 still costs a finite ``<= log2(K / eps)`` bits and the code stays a valid code (p'
sums to 1). The default probe (:func:`logreg_fit_predict_proba`) is a multinomial logistic
regression over all ``K`` classes with an L2 (Gaussian) prior on weights and biases, so unseen
classes get small but non-zero probability even before smoothing.

The L2 strength of the default probe matters: too weak and the probes trained on the first tiny
blocks are over-confident (random labels then cost *more* than the uniform code), too strong and
the real signal is under-used. Instead of one fixed value the default trains one probe per value
in :data:`DEFAULT_L2_GRID` and codes each block with their Bayesian mixture, weighted by
``2^-(bits each probe would have paid for the earlier blocks)``. The weights use only data already
transmitted, so this is a valid online code ("the training procedure" agreed between sender and
receiver includes the choice of L2), and it pays at most ``log2 G`` bits per block over the best
single value. Pass ``l2=<number>`` for one fixed probe (G times faster).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence, Union

import numpy as np

from probekit._device import resolve_device
from probekit.errors import ConfigError, DataError
from probekit.probing.features import check_finite, standardise_torch
from probekit.probing.solver import (
    Problem,
    batched_lbfgs,
    feature_eig,
    pack,
    preconditioner,
    unpack,
)

log = logging.getLogger(__name__)

__all__ = ["PAPER_PORTIONS", "DEFAULT_L2_GRID", "MDLResult", "block_ends", "online_codelength", "online_codelength_layers",
           "logreg_fit_predict_proba", "fit_logreg_batched"]

#: Fractions of the (shuffled) training data at which the online code starts a new block
#: (Voita & Titov 2020, Section 2.2).
PAPER_PORTIONS: tuple[float, ...] = (0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.0625, 0.125, 0.25, 0.5, 1.0)

#: L2 prior strengths mixed by the default probe (see :func:`online_codelength`).
DEFAULT_L2_GRID: tuple[float, ...] = (1.0, 10.0, 100.0, 1000.0)

FitPredictProba = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass
class MDLResult:
    """Online-code result for one representation (e.g. one layer).

    Attributes:
        codelength_bits: online codelength, bits.
        uniform_codelength_bits: ``N log2 K``.
        compression: uniform / online.
        n_examples: N; n_classes: K.
        block_ends: exclusive end index of each block in the shuffled order, ``[S]`` (last = N).
        block_costs_bits: cost of each block, ``[S]``; the first is ``block_ends[0] * log2 K``.
        seed: shuffle seed; portions: the fractions asked for; seconds: wall time.
    """

    codelength_bits: float
    uniform_codelength_bits: float
    compression: float
    n_examples: int
    n_classes: int
    block_ends: list[int]
    block_costs_bits: list[float]
    seed: int
    portions: tuple[float, ...] = PAPER_PORTIONS
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def codelength_kbits(self) -> float:
        return self.codelength_bits / 1000.0

    @property
    def uniform_codelength_kbits(self) -> float:
        return self.uniform_codelength_bits / 1000.0

    @property
    def block_sizes(self) -> list[int]:
        return list(np.diff([0, *self.block_ends]).tolist())

    def metrics(self) -> dict[str, float]:
        """``{"codelength_kbits": ..., "compression": ..., "uniform_codelength_kbits": ...}`` for result rows."""
        return {"codelength_kbits": self.codelength_kbits, "compression": self.compression,
                "uniform_codelength_kbits": self.uniform_codelength_kbits}

    def to_dict(self) -> dict:
        d = asdict(self)
        d["codelength_kbits"] = self.codelength_kbits
        d["uniform_codelength_kbits"] = self.uniform_codelength_kbits
        return d


def block_ends(n: int, portions: Sequence[float] = PAPER_PORTIONS) -> list[int]:
    """Exclusive block end indices for ``n`` examples: ``max(1, floor(t * n))`` per portion ``t``.

    Portions must increase strictly and end with 1.0. Ends that coincide on small data are merged
    (so every block is non-empty); at least two blocks are required, hence ``n >= 2``.
    """
    ps = [float(p) for p in portions]
    if not ps or any(not 0 < p <= 1 for p in ps) or any(b <= a for a, b in zip(ps, ps[1:])) or ps[-1] != 1.0:
        raise ConfigError(f"portions must increase strictly within (0, 1] and end with 1.0, got {list(portions)}.")
    if n < 2:
        raise DataError(f"The online code needs at least 2 labelled examples, got {n}.")
    ends: list[int] = []
    for p in ps:
        e = n if p == 1.0 else min(n, max(1, int(math.floor(p * n))))
        if not ends or e > ends[-1]:
            ends.append(e)
    if len(ends) < 2:
        raise DataError(f"{n} examples give a single block with portions {ps}; use more data or coarser portions.")
    return ends


def fit_logreg_batched(X, y, n_classes: int, *, l2: float | Sequence[float] = 1.0, max_iter: int = 100,
                       init: tuple | None = None, eig=None):
    """Fit one multinomial logistic regression per leading index of ``X`` (and per ``l2`` value) with L-BFGS.

    Objective per layer (features standardised with the training mean/std, constant features
    get std 1): ``sum_i CE(x_i, y_i) + l2/2 (||W||^2 + ||b||^2)`` — a Gaussian prior whose relative
    weight shrinks as the training set grows. The layers are independent problems, solved as one batch by
    :func:`probekit.probing.solver.batched_lbfgs` (per-layer line search and convergence) in preconditioned
    variables (:func:`probekit.probing.solver.preconditioner`; the optimum is the same).

    Args:
        X: torch float32 ``[L, n, d]`` on the target device.
        y: torch int64 ``[n]`` class ids in ``[0, n_classes)``.
        n_classes: K (the output layer always has K units, seen in y or not).
        l2: prior precision, or H of them: then H independent regressions per layer are fitted as one
            problem with ``H * K`` outputs (one pass over ``X`` serves all of them; ``X @ W`` costs about the
            same for 2 or 8 outputs on CPU), head ``h`` in output columns ``h*K .. h*K+K-1``.
        max_iter: L-BFGS iterations at most.
        init: optional ``(W [L, d, H*K], b [L, H*K])`` warm start.
        eig: optional :func:`~probekit.probing.solver.feature_eig` of (any standardised sample of) these features
            for the preconditioner, e.g. computed once for all training prefixes; default: from ``X``.

    Returns:
        ``(W [L, d, H*K], b [L, H*K], mean [L, 1, d], scale [L, 1, d])`` torch tensors; predict head ``h`` with
        ``softmax(((X - mean) / scale) @ W[..., hK:(h+1)K] + b[..., hK:(h+1)K])``.
    """
    import torch

    L, n, d = X.shape
    l2s = _l2_grid(l2)
    H, K = len(l2s), n_classes * len(l2s)
    Xs, mean, scale = standardise_torch(X, ddof=0, small_to_one=True)
    # the objective divided by n: mean CE + (l2 / n) / 2 (||W||^2 + ||b||^2), one strength per head
    lam = (torch.tensor(l2s, dtype=torch.float32, device=X.device) / n).repeat_interleave(n_classes)  # [K]
    lam = lam.unsqueeze(0).expand(L, K).contiguous()
    heads = y.unsqueeze(0).expand(H, n) if H > 1 else y
    eig = eig if eig is not None else feature_eig(Xs)
    prob = Problem(Xs, heads, n_classes, lam, l2_bias=lam,
                    precond=preconditioner(eig, lam.view(L, H, n_classes)[:, :, 0]))
    p_w = pack(*init) if init is not None else torch.zeros(L, d * K + K, dtype=torch.float32, device=X.device)
    q, _, _ = batched_lbfgs(prob, prob.to_params(p_w), max_iter=int(max_iter), tol=1e-4, ftol=1e-5)
    W, b = unpack(prob.to_weights(q), L, d, K)
    return W, b, mean, scale


def _predict_logprob2(W, b, mean, scale, X, heads: int = 1) -> "np.ndarray":
    """log2 softmax probabilities ``float64[heads, L, m, K]`` of ``X [L, m, d]`` (head h: output columns hK..hK+K-1)."""
    import torch

    with torch.no_grad():
        logits = torch.baddbmm(b.unsqueeze(1), (X - mean) / scale, W).double()
        L, m, HK = logits.shape
        logp = torch.log_softmax(logits.view(L, m, heads, HK // heads), dim=-1) / math.log(2)
        return logp.permute(2, 0, 1, 3).cpu().numpy()


def logreg_fit_predict_proba(n_classes: int, *, l2: float = 1.0, max_iter: int = 100,
                             device: str | None = None) -> FitPredictProba:
    """A default probe trainer as a ``(X_tr, y_tr, X_next) -> float64[len(X_next), K]`` callable.

    Multinomial logistic regression over all ``n_classes`` classes (see :func:`fit_logreg_batched`).
    """
    def fit_predict_proba(X_tr: np.ndarray, y_tr: np.ndarray, X_next: np.ndarray) -> np.ndarray:
        import torch

        dev = resolve_device(device)
        Xt = torch.as_tensor(np.asarray(X_tr, np.float32), device=dev)[None]
        yt = torch.as_tensor(np.asarray(y_tr, np.int64), device=dev)
        W, b, m, s = fit_logreg_batched(Xt, yt, n_classes, l2=l2, max_iter=max_iter)
        Xn = torch.as_tensor(np.asarray(X_next, np.float32), device=dev)[None]
        return np.exp2(_predict_logprob2(W, b, m, s, Xn)[0, 0])

    return fit_predict_proba


def _check_xy(X: np.ndarray, y: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y)
    if y.ndim != 1:
        raise DataError(f"y must be 1-D [N], got shape {y.shape}.")
    if len(X) != len(y):
        raise DataError(f"X has {len(X)} rows but y has {len(y)} labels.")
    if n_classes < 2:
        raise ConfigError(f"n_classes must be >= 2, got {n_classes}.")
    if np.size(X):
        check_finite(X, "online code")
    if y.size and int(y.min()) < -1:
        raise DataError(f"Label {int(y.min())} is not a class id: labels are 0..{n_classes - 1}, or -1 to leave an "
                        "item out.")
    keep = y >= 0
    if not keep.all():
        log.debug("online code: leaving out %d examples with label -1", int((~keep).sum()))
        X, y = X[keep], y[keep]
    if y.size and int(y.max()) >= n_classes:
        raise DataError(f"Label {int(y.max())} is outside [0, {n_classes}); check n_classes.")
    return X, y.astype(np.int64)


def _score_block(logp2: np.ndarray, y: np.ndarray, smoothing: float) -> float:
    """``-sum log2 p'(y)`` for smoothed ``p' = (1 - eps) p + eps / K``; ``logp2`` is ``[m, K]`` log2 p."""
    k = logp2.shape[1]
    lp = logp2[np.arange(len(y)), y]
    if smoothing > 0:
        lp = np.logaddexp2(lp + math.log2(1 - smoothing), math.log2(smoothing / k))
    return float(-lp.sum())


def _result(costs: list[float], ends: list[int], n_classes: int, seed: int, portions, seconds: float) -> MDLResult:
    n = ends[-1]
    online = float(sum(costs))
    uniform = n * math.log2(n_classes)
    return MDLResult(codelength_bits=online, uniform_codelength_bits=uniform,
                     compression=uniform / online if online > 0 else (math.inf if online == 0 else math.nan),
                     n_examples=n,
                     n_classes=n_classes, block_ends=list(ends), block_costs_bits=list(costs), seed=int(seed),
                     portions=tuple(float(p) for p in portions), seconds=seconds)


def _l2_grid(l2: float | Sequence[float]) -> tuple[float, ...]:
    grid = (float(l2),) if isinstance(l2, (int, float, np.number)) else tuple(float(v) for v in l2)
    if not grid or any(not (v >= 0 and math.isfinite(v)) for v in grid):
        raise ConfigError(f"l2 must be a finite number >= 0 or a non-empty list of them, got {l2!r}.")
    return grid


def _online_blocks(Xc, yt, y_sh: np.ndarray, ends: list[int], n_classes: int, grid: tuple[float, ...],
                   max_iter: int, smoothing: float) -> tuple[list[list[float]], list[list[float]]]:
    """Block costs ``[L][S]`` of the default probe on shuffled ``Xc [L, N, d]``, and final l2 weights ``[L][G]``.

    One logistic regression per (layer, l2 in grid) is trained on each prefix (warm-started from
    the previous prefix). With several l2 values the next block is coded with their Bayesian
    mixture, ``p(y) = sum_g w_g p_g(y)``, ``w_g`` proportional to ``2^(-bits_g)`` where ``bits_g`` is what
    probe ``g`` would have paid for the earlier model-coded blocks (uniform weights at first). The
    weights depend only on already transmitted data, so this is a valid code, and it costs at most
    ``log2 G`` bits per block more than the best single l2 chosen in hindsight per block sequence.
    """
    L = Xc.shape[0]
    G = len(grid)
    costs = [[ends[0] * math.log2(n_classes)] for _ in range(L)]
    past = np.zeros((G, L))  # cumulative cost of each expert so far
    # one preconditioner for every prefix: from all the features (sender and receiver both know X; only the labels
    # are transmitted), standardised once
    eig = feature_eig(standardise_torch(Xc, ddof=1, small_to_one=False)[0])
    # each l2 value is its own problem (docs/design.md, "MDL: one problem per l2 value", says why)
    inits: list = [None] * G
    log_eps = math.log2(smoothing / n_classes) if smoothing > 0 else -math.inf
    log_keep = math.log2(1 - smoothing)
    for start, stop in zip(ends[:-1], ends[1:]):
        ys = y_sh[start:stop]
        lps = np.empty((G, L, stop - start))
        for g in range(G):
            # warm-started from the previous prefix
            W, b, mean, scale = fit_logreg_batched(Xc[:, :start], yt[:start], n_classes, l2=[grid[g]],
                                                   max_iter=max_iter, init=inits[g], eig=eig)
            inits[g] = (W, b)
            logp2 = _predict_logprob2(W, b, mean, scale, Xc[:, start:stop])
            lps[[g]] = logp2[:, :, np.arange(stop - start), ys]  # [1, L, m]
        logw = -past - np.logaddexp2.reduce(-past, axis=0, keepdims=True)  # [G, L], log2 weights
        mix = np.logaddexp2.reduce(logw[:, :, None] + lps, axis=0)  # [L, m]
        if smoothing > 0:
            mix = np.logaddexp2(mix + log_keep, log_eps)
            lps = np.logaddexp2(lps + log_keep, log_eps)
        for j in range(L):
            costs[j].append(float(-mix[j].sum()))
        past += -lps.sum(axis=2)
    logw = -past - np.logaddexp2.reduce(-past, axis=0, keepdims=True)
    return costs, np.exp2(logw).T.tolist()


def online_codelength(X: np.ndarray, y: np.ndarray, *, n_classes: int,
                      fit_predict_proba: FitPredictProba | None = None, seed: int = 0,
                      portions: Sequence[float] = PAPER_PORTIONS, smoothing: float = 1e-6,
                      l2: float | Sequence[float] = DEFAULT_L2_GRID, max_iter: int = 100,
                      device: str | None = None) -> MDLResult:
    """Online codelength of labels ``y`` given features ``X``.

    Args:
        X: ``[N, d]`` features of one representation (e.g. one layer).
        y: ``[N]`` class ids in ``[0, n_classes)``; entries equal to -1 are dropped first.
        n_classes: K (the task's label count, not just the classes present).
        fit_predict_proba: probe trainer ``(X_tr [n, d], y_tr [n], X_next [m, d]) -> probs [m, K]``;
            ``None`` = the default probe: multinomial logistic regression over all K classes with
            an L2 prior (``l2``, ``max_iter``, ``device``), warm-started from the previous block's
            solution. If ``l2`` is a list, one probe per value is trained on each prefix and the
            next block is coded with their Bayesian mixture, weighted by how well each coded the
            earlier blocks (see :func:`_online_blocks`); a single number trains one probe.
        seed: shuffle seed (``np.random.default_rng(seed).permutation(N)``).
        portions: block boundaries as fractions of N (default :data:`PAPER_PORTIONS`).
        smoothing: epsilon of the mixture with the uniform distribution (see module doc).
        l2, max_iter, device: settings of the default probe (ignored with ``fit_predict_proba``).

    Returns:
        :class:`MDLResult`.
    """
    X = np.asarray(X)
    if X.ndim != 2:
        raise DataError(f"X must be 2-D [N, d], got shape {X.shape}.")
    if fit_predict_proba is None:
        return online_codelength_layers(X[None], y, n_classes=n_classes, seed=seed, portions=portions,
                                        smoothing=smoothing, l2=l2, max_iter=max_iter, device=device)[0]
    if not 0 <= smoothing < 1:
        raise ConfigError(f"smoothing must be in [0, 1), got {smoothing}.")
    t0 = time.perf_counter()
    X, y = _check_xy(X, y, n_classes)
    ends = block_ends(len(y), portions)
    perm = np.random.default_rng(seed).permutation(len(y))
    X, y = X[perm], y[perm]
    costs = [ends[0] * math.log2(n_classes)]
    for start, stop in zip(ends[:-1], ends[1:]):
        p = np.asarray(fit_predict_proba(X[:start], y[:start], X[start:stop]), dtype=np.float64)
        if p.shape != (stop - start, n_classes):
            raise DataError(f"fit_predict_proba returned shape {p.shape}, expected {(stop - start, n_classes)} "
                            f"(one row per next example, one column per class).")
        if not np.all(np.isfinite(p)) or (p < 0).any():
            raise DataError("fit_predict_proba returned negative or non-finite probabilities.")
        p = p / np.maximum(p.sum(axis=1, keepdims=True), 1e-300)
        with np.errstate(divide="ignore"):
            costs.append(_score_block(np.log2(p), y[start:stop], smoothing))
    return _result(costs, ends, n_classes, seed, portions, time.perf_counter() - t0)


def online_codelength_layers(X_layers: Union[np.ndarray, Callable[[int], np.ndarray]], y: np.ndarray, *,
                             n_classes: int, seed: int = 0, layers: Sequence[int] | None = None,
                             fit_predict_proba: FitPredictProba | None = None,
                             portions: Sequence[float] = PAPER_PORTIONS, smoothing: float = 1e-6,
                             l2: float | Sequence[float] = DEFAULT_L2_GRID, max_iter: int = 100,
                             device: str | None = None, layer_batch: int | None = None) -> list[MDLResult]:
    """Online codelength for many layers with one shared shuffle.

    Args:
        X_layers: ``[L, N, d]`` array, or a callable ``layer -> [N, d]`` (then ``layers`` is required;
            one layer is loaded at a time).
        y: ``[N]`` labels (-1 dropped, in every layer alike).
        layers: indices into ``X_layers`` to score (default: all of an array).
        fit_predict_proba: custom probe trainer, applied layer by layer; ``None`` = the default
            logistic regression, fitted for ``layer_batch`` layers at once (default: all) on ``device``.
        Others: as in :func:`online_codelength`.

    Returns:
        one :class:`MDLResult` per layer, in the order of ``layers``.
    """
    import torch

    if callable(X_layers):
        if layers is None:
            raise ConfigError("layers=[...] is required when X_layers is a callable layer -> [N, d].")
        getter = X_layers
    else:
        arr = X_layers if isinstance(X_layers, np.ndarray) else np.asarray(X_layers)
        if arr.ndim != 3:
            raise DataError(f"X_layers must be [L, N, d], got shape {arr.shape}.")
        layers = list(range(arr.shape[0])) if layers is None else list(layers)
        getter = arr.__getitem__
    layers = list(layers)
    if fit_predict_proba is not None:
        return [online_codelength(np.asarray(getter(l)), y, n_classes=n_classes, fit_predict_proba=fit_predict_proba,
                                  seed=seed, portions=portions, smoothing=smoothing) for l in layers]
    if not 0 <= smoothing < 1:
        raise ConfigError(f"smoothing must be in [0, 1), got {smoothing}.")
    y_all = np.asarray(y)
    keep = y_all >= 0 if y_all.ndim == 1 else None
    _, y_kept = _check_xy(np.empty((len(y_all), 0)), y_all, n_classes)
    ends = block_ends(len(y_kept), portions)
    perm = np.random.default_rng(seed).permutation(len(y_kept))
    y_sh = y_kept[perm]
    grid = _l2_grid(l2)
    dev = resolve_device(device)
    if layer_batch is not None:
        step = int(layer_batch)
    else:
        step = 1 if callable(X_layers) else max(1, len(layers))
    if step < 1:
        raise ConfigError(f"layer_batch must be >= 1, got {layer_batch}.")
    results: list[MDLResult] = []
    for c0 in range(0, len(layers), step):
        chunk = layers[c0:c0 + step]
        t0 = time.perf_counter()
        mats = []
        for l in chunk:
            m = np.asarray(getter(l))
            if m.ndim != 2 or len(m) != len(y_all):
                raise DataError(f"Layer {l}: features must be [N={len(y_all)}, d], got shape {m.shape}.")
            mats.append(m[keep][perm] if keep is not None else m[perm])
        for l, m in zip(chunk, mats):
            check_finite(m, f"layer {l}")
        Xc = torch.as_tensor(np.stack(mats).astype(np.float32, copy=False), device=dev)
        del mats
        yt = torch.as_tensor(y_sh, device=dev)
        costs, weights = _online_blocks(Xc, yt, y_sh, ends, n_classes, grid, max_iter, smoothing)
        secs = (time.perf_counter() - t0) / len(chunk)
        for j, l in enumerate(chunk):
            r = _result(costs[j], ends, n_classes, seed, portions, secs)
            r.extra.update(layer=l, l2_grid=list(grid), l2_weights=weights[j])
            results.append(r)
        log.info("online code: layers %s done in %.1fs on %s", chunk, secs * len(chunk), dev)
        del Xc
    return results
