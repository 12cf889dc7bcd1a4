"""Structural probes (Hewitt & Manning 2019): distance and depth, every layer of a group trained as one problem.

* distance probe: ``d_B(h_i, h_j) = ||B (h_i - h_j)||^2`` fitted to the gold tree distance of words i and j;
* depth probe: ``||B h_i||^2`` fitted to the gold depth of word i.

``B`` is ``[d_model, k]`` (rank k; default k = d_model, the paper's full rank). Training follows the reference code
(john-hewitt/structural-probes): B initialised uniform(-0.05, 0.05); L1 loss, per sentence the sum of absolute errors
over all ordered word pairs divided by the squared sentence length (distance) or over words divided by the length
(depth), averaged over the sentences of a batch; batches of 20 sentences, shuffled each epoch; Adam (lr 0.001);
the learning rate is divided by 10 whenever the dev loss does not improve (ReduceLROnPlateau, patience 0); the
parameters of the best dev epoch are kept, and training stops 5 epochs after the last improvement (of more than
1e-4), at most 40 epochs.

All layers of a group are one ``[layer, d_model, k]`` parameter trained by one Adam written out here, so that each
layer keeps its own learning rate, step count and early stop exactly as if it were trained alone (Adam is
elementwise: the layers do not interact). Squared distances come from the Gram matrix of the projected words
(``|a|^2 + |b|^2 - 2 a.b``), not from the ``[n, n, k]`` difference tensor of the reference code.

Metrics (:func:`distance_metrics`, :func:`depth_metrics`) are those of the paper and its reference code, computed
from per-sentence records so that a sentence bootstrap can recompute them (:class:`LayerScores`).
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from probekit._device import resolve_device, small_problem_threads, torch_threads
from probekit.errors import ConfigError, DataError
from probekit.probing.control import control_parents
from probekit.probing.features import as_tensor
from probekit.tasks.relations import check_tree, distances_from_parents, punct_mask

KINDS = ("distance", "depth")
#: Sentence lengths over which DSpr and NSpr are averaged (the paper: 5-50).
SPEARMAN_LENGTHS = (5, 50)


@dataclass
class StructuralSettings:
    """Training settings; the defaults are the reference code's."""

    rank: int | None = None  # None = d_model (full rank)
    epochs: int = 40
    batch_size: int = 20
    lr: float = 1e-3
    #: stop when the best dev epoch is more than this many epochs back (the reference code: 4)
    patience: int = 4
    seed: int = 0
    device: str | None = None
    #: divide each layer's vectors by one number, the RMS distance of its train vectors to their mean
    #: (:func:`layer_scales`). B absorbs a scalar, so the probe family and the (scale-free) metrics are the same; only
    #: the optimisation changes: the reference's init and lr fit BERT-sized vectors, not states 10x larger.
    rescale: bool = False


@dataclass
class SplitTargets:
    """Gold targets of one split: word offsets of its sentences in the store and per-sentence targets."""

    offsets: np.ndarray  # [S + 1] word offset of each sentence (corpus order)
    targets: list  # per sentence: [n, n] distances or [n] depths
    punct: list  # per sentence: [n] bool, words left out of UUAS / root accuracy

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


@dataclass
class LayerScores:
    """One layer's test scores with the per-sentence records they are computed from."""

    layer: int
    kind: str
    metrics: dict  # uuas, dspr (distance) or root_acc, nspr (depth)
    per_sentence: dict = field(repr=False, default_factory=dict)  # name -> [S] array
    epochs: int = 0
    dev_loss: float = math.nan
    n_params: int = 0
    #: this layer's predictions for the first ``keep`` test sentences (for figures)
    kept_predictions: list = field(repr=False, default_factory=list)


# ----------------------------------------------------------------------------------------------- training


def check_rank(rank: int | None, d: int) -> int:
    """The rank to use (d when None); ConfigError when it is not in 1..d."""
    if rank is None:
        return d
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or not 1 <= rank <= d:
        raise ConfigError(f"Structural probe rank {rank!r} must be an integer in 1..{d} (the hidden size of these "
                          f"vectors); use null for full rank.")
    return int(rank)


def _batches(order: np.ndarray, size: int):
    for i in range(0, len(order), size):
        yield order[i:i + size]


class _Batcher:
    """Index tensors of a batch of sentences: packed word rows, the padded layout and padded targets."""

    def __init__(self, data: SplitTargets, kind: str, device: str):
        self.data, self.kind, self.device = data, kind, device

    def __call__(self, sents: np.ndarray):
        import torch

        lens = self.data.lengths[sents]
        m = int(lens.max())
        rows = np.concatenate([np.arange(self.data.offsets[s], self.data.offsets[s + 1]) for s in sents])
        pad = np.full((len(sents), m), len(rows), dtype=np.int64)  # index len(rows) = an all-zero row
        shape = (len(sents), m, m) if self.kind == "distance" else (len(sents), m)
        gold = np.full(shape, -1.0, dtype=np.float32)
        start = 0
        for b, (s, n) in enumerate(zip(sents, lens)):
            pad[b, :n] = np.arange(start, start + n)
            start += n
            if self.kind == "distance":
                gold[b, :n, :n] = self.data.targets[s]
            else:
                gold[b, :n] = self.data.targets[s]
        t = lambda a: torch.as_tensor(a, device=self.device)  # noqa: E731
        return t(rows), t(pad), t(gold), t(lens.astype(np.float32))


def _predict_padded(X, rows, pad, B, kind: str):
    """Predicted squared distances ``[L, b, m, m]`` or squared norms ``[L, b, m]`` of a batch."""
    import torch

    T = torch.matmul(X[:, rows].to(B.dtype), B)  # [L, w, k]
    T = torch.cat([T, T.new_zeros(T.shape[0], 1, T.shape[2])], dim=1)[:, pad]  # [L, b, m, k]
    sq = (T * T).sum(-1)
    if kind == "depth":
        return sq
    return (sq.unsqueeze(-1) + sq.unsqueeze(-2) - 2 * torch.matmul(T, T.transpose(-1, -2))).clamp_min(0)


def _l1_loss(pred, gold, lens, kind: str):
    """Per-layer batch loss ``[L]``: the reference code's L1 loss (pads, labelled -1, are left out)."""
    mask = (gold != -1).to(pred.dtype)
    err = ((pred - gold) * mask).abs()
    if kind == "distance":
        per_sent = err.sum((-1, -2)) / lens.pow(2)
    else:
        per_sent = err.sum(-1) / lens
    return per_sent.sum(-1) / len(lens)


def fit_structural(X_train: np.ndarray, train: SplitTargets, X_dev: np.ndarray, dev: SplitTargets, *, kind: str,
                   settings: StructuralSettings | None = None):
    """Fit one probe per layer of ``X_*`` (``[L, words, d]``, float16 or float32) as one batched problem.

    Returns ``(B [L, d, k] float32 numpy, epochs [L] trained, best dev loss [L])``.
    """
    if kind not in KINDS:
        raise ConfigError(f"Structural probe kind {kind!r}: use one of {', '.join(KINDS)}.")
    st = settings or StructuralSettings()
    L, _, d = X_train.shape
    k = check_rank(st.rank, d)
    device = resolve_device(st.device)
    # a step is a few small tensor ops on the [L, d, k] parameter: one thread unless it is large
    with torch_threads(small_problem_threads(L * d * k, device)):
        return _fit(X_train, train, X_dev, dev, kind, st, k, device)


def _fit(X_train, train: SplitTargets, X_dev, dev: SplitTargets, kind: str, st: StructuralSettings, k: int,
         device: str):
    import torch

    L, _, d = X_train.shape
    gen = torch.Generator().manual_seed(st.seed)
    B = (torch.rand(L, d, k, generator=gen) * 0.1 - 0.05).to(device)
    Xt, Xd = as_tensor(X_train, device), as_tensor(X_dev, device)
    bt, bd = _Batcher(train, kind, device), _Batcher(dev, kind, device)
    dev_batches = [bd(s) for s in _batches(np.arange(len(dev.lengths)), st.batch_size)]
    # Adam (torch defaults: betas 0.9/0.999, eps 1e-8) with per-layer lr, step count and freezing
    m1, m2 = torch.zeros_like(B), torch.zeros_like(B)
    steps = torch.zeros(L, 1, 1, device=device)
    lr = torch.full((L, 1, 1), st.lr, device=device)
    active = torch.ones(L, 1, 1, device=device)
    best_B, best_loss = B.clone(), np.full(L, np.inf)
    best_epoch, plateau_best = np.full(L, -1), np.full(L, np.inf)
    epochs = np.zeros(L, dtype=np.int64)
    rng = np.random.default_rng(st.seed)
    for epoch in range(st.epochs):
        if not active.any():
            break
        for sents in _batches(rng.permutation(len(train.lengths)), st.batch_size):
            rows, pad, gold, lens = bt(sents)
            B.requires_grad_(True)
            loss = _l1_loss(_predict_padded(Xt, rows, pad, B, kind), gold, lens, kind)
            (grad,) = torch.autograd.grad(loss.sum(), B)
            with torch.no_grad():
                B.requires_grad_(False)
                steps += active
                m1.mul_(1 - 0.1 * active).add_(0.1 * active * grad)
                m2.mul_(1 - 0.001 * active).add_(0.001 * active * grad * grad)
                t = steps.clamp_min(1)
                step = lr * (m1 / (1 - 0.9 ** t)) / ((m2 / (1 - 0.999 ** t)).sqrt() + 1e-8)
                B -= active * step
        with torch.no_grad():
            total = torch.zeros(L, device=device, dtype=torch.float64)
            for rows, pad, gold, lens in dev_batches:
                total += _l1_loss(_predict_padded(Xd, rows, pad, B, kind), gold, lens, kind).double() * len(lens)
            dev_loss = (total / len(dev.lengths)).cpu().numpy()
        for layer in range(L):
            if not active[layer]:
                continue
            epochs[layer] = epoch + 1
            # ReduceLROnPlateau(mode="min", factor=0.1, patience=0, threshold=1e-4 relative)
            if dev_loss[layer] < plateau_best[layer] * (1 - 1e-4):
                plateau_best[layer] = dev_loss[layer]
            else:
                lr[layer] *= 0.1
            if dev_loss[layer] < best_loss[layer] - 1e-4:
                best_loss[layer], best_epoch[layer] = dev_loss[layer], epoch
                best_B[layer] = B[layer]
            elif best_epoch[layer] < epoch - st.patience:
                active[layer] = 0
    return best_B.cpu().numpy(), epochs, best_loss


def predict_structural(X: np.ndarray, data: SplitTargets, B: np.ndarray, *, kind: str, batch_size: int = 64,
                       device: str | None = None) -> list[np.ndarray]:
    """Per sentence, ``[L, n, n]`` predicted squared distances or ``[L, n]`` squared norms (float32)."""
    device = resolve_device(device)
    with torch_threads(small_problem_threads(B.size, device)):
        return _predict(X, data, B, kind, batch_size, device)


def _predict(X, data: SplitTargets, B: np.ndarray, kind: str, batch_size: int, device: str) -> list[np.ndarray]:
    import torch

    Xt, Bt = as_tensor(X, device), torch.as_tensor(B, device=device, dtype=torch.float32)
    batcher = _Batcher(data, kind, device)
    out = []
    with torch.no_grad():
        for sents in _batches(np.arange(len(data.lengths)), batch_size):
            rows, pad, _, _ = batcher(sents)
            P = _predict_padded(Xt, rows, pad, Bt, kind).cpu().numpy()
            for b, n in enumerate(data.lengths[sents]):
                out.append(P[:, b, :n, :n] if kind == "distance" else P[:, b, :n])
    return out


# ----------------------------------------------------------------------------------------------- metrics

def mst_edges(dist: np.ndarray, keep: np.ndarray) -> set[tuple[int, int]]:
    """Edges ``(i, j)``, i < j, of the minimum spanning tree of ``dist`` over the words where ``keep`` is True.

    Kruskal's algorithm in the reference code's order: pairs sorted by distance, ties in row-major order.
    """
    idx = np.flatnonzero(keep)
    if len(idx) < 2:
        return set()
    iu, ju = np.triu_indices(len(idx), 1)
    order = np.argsort(dist[idx[iu], idx[ju]], kind="stable")
    parent = list(range(len(idx)))

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    edges = set()
    for p in order:
        a, b = find(iu[p]), find(ju[p])
        if a != b:
            parent[a] = b
            edges.add((int(idx[iu[p]]), int(idx[ju[p]])))
            if len(edges) == len(idx) - 1:
                break
    return edges


def _row_spearman(pred: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """Spearman correlation of matching rows (last axis) of two arrays (average ranks for ties)."""
    from scipy.stats import rankdata

    rp, rg = rankdata(pred, axis=-1), rankdata(gold, axis=-1)
    rp -= rp.mean(-1, keepdims=True)
    rg -= rg.mean(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rp * rg).sum(-1) / np.sqrt((rp * rp).sum(-1) * (rg * rg).sum(-1))


def _length_averaged(values: np.ndarray, lengths: np.ndarray) -> float:
    """Mean per sentence length, then mean over the lengths in 5..50 (the paper's DSpr / NSpr averaging)."""
    lo, hi = SPEARMAN_LENGTHS
    by_len = defaultdict(list)
    for v, n in zip(values, lengths):
        if lo <= n <= hi:
            by_len[int(n)].append(v)
    return float(np.mean([np.mean(v) for v in by_len.values()])) if by_len else math.nan


def distance_records(preds: Sequence[np.ndarray], data: SplitTargets) -> dict[str, np.ndarray]:
    """Per-sentence records of the distance metrics for ``preds`` (per sentence ``[L, n, n]``):
    ``uuas_correct [L, S]``, ``uuas_total [S]``, ``dspr [L, S]`` (mean over the sentence's rows), ``length [S]``."""
    L, S = preds[0].shape[0], len(preds)
    correct, total, spr = np.zeros((L, S)), np.zeros(S), np.full((L, S), np.nan)
    for s, (P, gold, punct) in enumerate(zip(preds, data.targets, data.punct)):
        gold_edges = mst_edges(gold, ~punct)
        total[s] = len(gold_edges)
        for layer in range(L):
            correct[layer, s] = len(gold_edges & mst_edges(P[layer], ~punct))
        if len(gold) > 1:  # the reference keeps every row of every sentence, the diagonal included
            spr[:, s] = _row_spearman(P, np.broadcast_to(gold, P.shape)).mean(-1)
    return {"uuas_correct": correct, "uuas_total": total, "dspr": spr, "length": data.lengths.astype(float)}


def depth_records(preds: Sequence[np.ndarray], data: SplitTargets) -> dict[str, np.ndarray]:
    """Per-sentence records of the depth metrics: ``root_correct [L, S]``, ``nspr [L, S]``, ``length [S]``."""
    L, S = preds[0].shape[0], len(preds)
    root, spr = np.zeros((L, S)), np.full((L, S), np.nan)
    for s, (P, gold, punct) in enumerate(zip(preds, data.targets, data.punct)):
        masked = np.where(punct, np.inf, P) if not punct.all() else P  # least deep non-punctuation word
        root[:, s] = masked.argmin(-1) == int(np.flatnonzero(gold == 0)[0])
        if len(gold) > 1:
            spr[:, s] = _row_spearman(P, np.broadcast_to(gold, P.shape))
    return {"root_correct": root, "nspr": spr, "length": data.lengths.astype(float)}


def distance_metrics(rec: dict, take: np.ndarray | None = None) -> dict[str, float]:
    """UUAS (edges of the predicted MST found in the gold tree, over all sentences) and DSpr, from one layer's
    per-sentence records (``take``: the sentences to use, e.g. a bootstrap sample; default all)."""
    take = np.arange(len(rec["length"])) if take is None else take
    tot = rec["uuas_total"][take].sum()
    return {"uuas": float(rec["uuas_correct"][take].sum() / tot) if tot else math.nan,
            "dspr": _length_averaged(rec["dspr"][take], rec["length"][take])}


def depth_metrics(rec: dict, take: np.ndarray | None = None) -> dict[str, float]:
    """Root accuracy (the least deep non-punctuation word is the gold root) and NSpr, from one layer's records."""
    take = np.arange(len(rec["length"])) if take is None else take
    return {"root_acc": float(rec["root_correct"][take].mean()),
            "nspr": _length_averaged(rec["nspr"][take], rec["length"][take])}


def layer_records(rec: dict, i: int) -> dict[str, np.ndarray]:
    """Layer ``i``'s per-sentence records out of records of several layers (``[L, S]`` arrays are sliced)."""
    return {k: (v[i] if v.ndim == 2 else v) for k, v in rec.items()}


METRICS = {"distance": (distance_records, distance_metrics), "depth": (depth_records, depth_metrics)}


def linear_distances(data: SplitTargets) -> list[np.ndarray]:
    """The right-branching chain as a prediction: distance ``|i - j|`` (its MST links each word to the next
    non-punctuation word), ``[1, n, n]`` per sentence."""
    return [np.abs(np.subtract.outer(np.arange(n), np.arange(n))).astype(np.float32)[None] for n in data.lengths]


# ----------------------------------------------------------------------------------------------- entry point

def fit_score_layers(X: dict, data: dict, layers: Sequence[int], *, kind: str,
                     settings: StructuralSettings | None = None, keep: int = 0) -> list[LayerScores]:
    """Train a structural probe on every layer of a group at once and score it on test.

    Args:
        X: ``{"train"|"dev"|"test": [len(layers), words, d]}`` word vectors in corpus order.
        data: ``{"train"|"dev"|"test": SplitTargets}`` (targets of ``kind``).
        layers: the layer numbers of ``X``'s first axis.
        kind: ``distance`` or ``depth``.
        settings: training settings (default: the reference code's).
        keep: keep each layer's predictions for this many test sentences (the first ones).

    Returns one :class:`LayerScores` per layer, with the per-sentence records of the test split.
    """
    st = settings or StructuralSettings()
    for role in ("train", "dev", "test"):
        if X[role].shape[0] != len(layers) or X[role].shape[1] != data[role].offsets[-1]:
            raise DataError(f"Structural probe: the {role} vectors have shape {X[role].shape}, expected "
                            f"[{len(layers)}, {data[role].offsets[-1]}, d] (layers x words of the split).")
    if st.rescale:
        scale = layer_scales(X["train"]).astype(np.float32)[:, None, None]
        X = {role: (v / scale).astype(v.dtype) for role, v in X.items()}
    B, epochs, dev_loss = fit_structural(X["train"], data["train"], X["dev"], data["dev"], kind=kind, settings=st)
    preds = predict_structural(X["test"], data["test"], B, kind=kind, device=st.device)
    records_fn, metrics_fn = METRICS[kind]
    rec = records_fn(preds, data["test"])
    out = []
    for i, layer in enumerate(layers):
        per = layer_records(rec, i)
        out.append(LayerScores(layer=int(layer), kind=kind, metrics=metrics_fn(per), per_sentence=per,
                               epochs=int(epochs[i]), dev_loss=float(dev_loss[i]),
                               n_params=int(B.shape[1] * B.shape[2]),
                               kept_predictions=[p[i] for p in preds[:keep]]))
    return out


def layer_scales(X: np.ndarray) -> np.ndarray:
    """``[L]``: per layer of ``X`` (``[L, words, d]``), the root mean squared distance of its vectors to their mean
    (float64 sums, one layer at a time); 1 where that is 0."""
    out = np.ones(X.shape[0])
    for i in range(X.shape[0]):
        x = X[i].astype(np.float64)
        rms = float(np.sqrt(((x - x.mean(0)) ** 2).sum(1).mean())) if len(x) else 0.0
        out[i] = rms if rms > 0 else 1.0
    return out


def split_targets(sentences: Sequence, kind: str, *, control_seed: int | None = None) -> SplitTargets:
    """Gold targets of ``kind`` for a split's sentences (word offsets in corpus order, as in the store).

    ``control_seed``: the targets of Hewitt & Liang's control structure instead of the gold tree
    (:func:`probekit.probing.control.control_parents`); punctuation is still read from the gold UPOS/XPOS.
    """
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in sentences])]).astype(np.int64)
    targets = []
    for s in sentences:
        parent = check_tree(s) if control_seed is None else control_parents(s.words, control_seed)
        dist = distances_from_parents(parent)
        targets.append(dist.astype(np.float32) if kind == "distance" else dist[int(np.flatnonzero(parent < 0)[0])]
                       .astype(np.float32))
    return SplitTargets(offsets=offsets, targets=targets, punct=[punct_mask(s) for s in sentences])
