"""Pair probes over the words of a sentence, every layer of a group at once.

* ``dep_arc`` (Hewitt & Liang 2019's edge prediction): for each word, which word of its sentence is its head. A
  bilinear score ``s(i, j) = h_i^T A h_j`` over every candidate j of the sentence (the word itself included: the
  root word's answer is itself), softmax over the candidates, cross-entropy; metric: head accuracy (UAS) over all
  words. ``A`` is ``[d, d]`` per layer, trained with the structural probes' regimen (Adam lr 0.001, batches of 20
  sentences, dev-loss early stopping).
* pair classification (``dep_label``, Tenney et al. 2019's dependency edge task: given a gold arc, its universal
  UD relation; ``subject_of``: given a verb and a word, is the word its subject): the pair feature
  ``[h_i; h_j; h_i * h_j]`` (:func:`pair_features`) with the batched multinomial logistic regression of
  :mod:`probekit.probing.linear` (the runner, :mod:`probekit.runner.relations`, fits it).

The items (which pairs, which heads, which labels) come from the tasks' label functions
(``tasks/dep_arc.yaml`` ...; :meth:`probekit.tasks.base.Task.items`).

Why ``[h_i; h_j; h_i * h_j]`` is the default pair feature for classification: a linear classifier on it can use
each word alone (``h_i``, ``h_j``) and their feature-wise agreement (``h_i * h_j``), it is convex to fit (the
existing L-BFGS trainer, with its L2 chosen on dev), and it has 3d inputs per class; a full bilinear form has d^2 per
class (147k for d = 384), which for the 36 universal relations of ``dep_label`` is 5.3M parameters. For ``dep_arc``,
where the candidates of a word compete in one softmax, the score must compare pairs, so there the bilinear form is
the probe (as in Hewitt & Liang).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from probekit._device import resolve_device, small_problem_threads, torch_threads
from probekit.errors import DataError
from probekit.probing.features import as_tensor
from probekit.probing.structural import StructuralSettings
from probekit.tasks.base import RelationItems


@dataclass
class ArcTargets:
    """Gold heads of a split: word offsets of its sentences and each word's head (0-based within its sentence;
    the root word points at itself; -1 = left out of training and scoring)."""

    offsets: np.ndarray
    heads: list

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def n_scored(self) -> int:
        return int(sum((h >= 0).sum() for h in self.heads))


def arc_targets(items: RelationItems) -> ArcTargets:
    """:class:`ArcTargets` from the items of a ``choice`` task (``dep_arc``: one item per word, in corpus order)."""
    if items.level != "choice":
        raise DataError(f"arc_targets needs the items of a choice task (dep_arc), got a {items.level} task's.")
    lengths = np.diff(items.offsets)
    heads = [np.full(n, -1, dtype=np.int64) for n in lengths]
    for k, i, j in zip(items.sentence, items.a, items.y):
        heads[k][i] = j
    return ArcTargets(offsets=items.offsets, heads=heads)


def _arc_batch(data: ArcTargets, sents: np.ndarray, device: str):
    import torch

    lens = data.lengths[sents]
    m = int(lens.max())
    rows = np.concatenate([np.arange(data.offsets[s], data.offsets[s + 1]) for s in sents])
    pad = np.full((len(sents), m), len(rows), dtype=np.int64)
    gold = np.full((len(sents), m), -100, dtype=np.int64)  # -100: cross_entropy's ignore_index
    start = 0
    for b, (s, n) in enumerate(zip(sents, lens)):
        pad[b, :n] = np.arange(start, start + n)
        gold[b, :n] = np.where(data.heads[s] >= 0, data.heads[s], -100)
        start += n
    mask = np.arange(m)[None, :] < lens[:, None]  # [b, m] real candidates
    t = lambda a: torch.as_tensor(a, device=device)  # noqa: E731
    return t(rows), t(pad), t(gold), t(mask)


def _arc_scores(X, rows, pad, mask, A):
    """``[L, b, m, m]`` bilinear scores of every (word, candidate head) pair; padded candidates get -inf."""
    import torch

    H = X[:, rows].to(A.dtype)
    H = torch.cat([H, H.new_zeros(H.shape[0], 1, H.shape[2])], dim=1)[:, pad]  # [L, b, m, d]
    S = torch.matmul(torch.matmul(H, A[:, None]), H.transpose(-1, -2))  # [L, b, m (word), m (candidate head)]
    return S.masked_fill(~mask[None, :, None, :], float("-inf"))


def _arc_loss(S, gold):
    """Per-layer mean cross-entropy over the real words ``[L]``."""
    import torch.nn.functional as F

    L = S.shape[0]
    logp = F.log_softmax(S, dim=-1).reshape(L, -1, S.shape[-1])
    g = gold.reshape(-1)
    keep = g >= 0
    picked = logp[:, keep].gather(-1, g[keep][None, :, None].expand(L, -1, 1)).squeeze(-1)
    return -picked.mean(-1)


def fit_arc_layers(X_train, train: ArcTargets, X_dev, dev: ArcTargets, X_test, test: ArcTargets, *,
                   settings: StructuralSettings | None = None) -> list[dict]:
    """Train the bilinear head probe on every layer of ``X_*`` (``[L, words, d]``) at once; per layer
    ``{"uas": test head accuracy over the scored words, "pred": [test words] predicted head (0-based in its
    sentence), "epochs": ..., "dev_loss": ...}``."""
    if not (train.n_scored and dev.n_scored and test.n_scored):
        raise DataError("dep_arc: a split has no scored words (every head left out?).")
    st = settings or StructuralSettings()
    device = resolve_device(st.device)
    L, _, d = X_train.shape
    with torch_threads(small_problem_threads(L * d * d, device)):
        return _fit_arcs(X_train, train, X_dev, dev, X_test, test, st, device)


def _fit_arcs(X_train, train, X_dev, dev, X_test, test, st, device):
    import torch

    L, _, d = X_train.shape
    gen = torch.Generator().manual_seed(st.seed)
    A = ((torch.rand(L, d, d, generator=gen) * 0.1 - 0.05) / math.sqrt(d)).to(device).requires_grad_(True)
    Xt, Xd, Xs = (as_tensor(X, device) for X in (X_train, X_dev, X_test))
    # a layer's gradient depends on its own A[l] only, and Adam is elementwise: one Adam over [L, d, d] is L
    # independent Adams. A stopped layer's gradient is zeroed; the test uses each layer's best-dev-epoch A.
    opt = torch.optim.Adam([A], lr=st.lr)
    dev_batches = [_arc_batch(dev, np.arange(i, min(i + st.batch_size, len(dev.lengths))), device)
                   for i in range(0, len(dev.lengths), st.batch_size)]
    best, best_epoch, best_A = np.full(L, np.inf), np.full(L, -1), A.detach().clone()
    active = np.ones(L, bool)
    epochs = np.zeros(L, dtype=np.int64)
    rng = np.random.default_rng(st.seed)
    for epoch in range(st.epochs):
        if not active.any():
            break
        order = rng.permutation(len(train.lengths))
        act = torch.as_tensor(active, device=device, dtype=A.dtype)[:, None, None]
        for i in range(0, len(order), st.batch_size):
            rows, pad, gold, mask = _arc_batch(train, order[i:i + st.batch_size], device)
            opt.zero_grad()
            _arc_loss(_arc_scores(Xt, rows, pad, mask, A), gold).sum().backward()
            A.grad.mul_(act)
            opt.step()
        with torch.no_grad():
            tot = torch.zeros(L, dtype=torch.float64, device=device)
            for rows, pad, gold, mask in dev_batches:
                tot += _arc_loss(_arc_scores(Xd, rows, pad, mask, A), gold).double() * int((gold >= 0).sum())
            dev_loss = (tot / float(dev.n_scored)).cpu().numpy()
            for layer in np.flatnonzero(active):
                epochs[layer] = epoch + 1
                if dev_loss[layer] < best[layer] - 1e-4:
                    best[layer], best_epoch[layer] = dev_loss[layer], epoch
                    best_A[layer] = A[layer]
                elif best_epoch[layer] < epoch - st.patience:
                    active[layer] = False
    pred = np.zeros((L, int(test.offsets[-1])), dtype=np.int64)
    with torch.no_grad():
        for i in range(0, len(test.lengths), 64):
            sents = np.arange(i, min(i + 64, len(test.lengths)))
            rows, pad, gold, mask = _arc_batch(test, sents, device)
            best_j = _arc_scores(Xs, rows, pad, mask, best_A).argmax(-1).cpu().numpy()  # [L, b, m]
            for b, s_ in enumerate(sents):
                lo, hi = test.offsets[s_], test.offsets[s_ + 1]
                pred[:, lo:hi] = best_j[:, b, :hi - lo]
    gold = np.concatenate(test.heads)
    scored = gold >= 0
    return [{"uas": float((pred[i][scored] == gold[scored]).mean()), "pred": pred[i], "epochs": int(epochs[i]),
             "dev_loss": float(best[i])} for i in range(L)]


def pair_features(X: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[L, pairs, 3d]`` features ``[h_a; h_b; h_a * h_b]`` (float32) of the word rows ``a``, ``b`` of
    ``[L, words, d]``."""
    if len(a) == 0:
        raise DataError("pair features: the split has no pairs (one-word sentences only?).")
    ha, hb = X[:, a].astype(np.float32), X[:, b].astype(np.float32)
    return np.concatenate([ha, hb, ha * hb], axis=-1)
