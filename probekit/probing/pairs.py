"""Pair probes over the words of a sentence, every layer of a group at once.

* ``dep_arc`` (Hewitt & Liang 2019's edge prediction): for each word, which word of its sentence is its head. A
  bilinear score ``s(i, j) = h_i^T A h_j`` over every candidate j of the sentence (the word itself included: the
  root word's answer is itself), softmax over the candidates, cross-entropy; metric: head accuracy (UAS) over all
  words. ``A`` is ``[d, d]`` per layer, trained with the structural probes' regimen (Adam lr 0.001, batches of 20
  sentences, dev-loss early stopping).
* ``dep_label`` (Tenney et al. 2019's dependency edge task): given a gold arc (dependent i, head j; the root's arc
  has no head word and is left out), its UD relation (the universal part, before ':'), from the pair feature
  ``[h_i; h_j; h_i * h_j]`` with the batched multinomial logistic regression of :mod:`probekit.probing.linear`.

Why ``[h_i; h_j; h_i * h_j]`` is the default pair feature for classification: a linear classifier on it can use
each word alone (``h_i``, ``h_j``) and their feature-wise agreement (``h_i * h_j``), it is convex to fit (the
existing L-BFGS trainer, with its L2 chosen on dev), and it has 3d inputs per class; a full bilinear form has d^2 per
class (147k for d = 384), which on EWT's 38 relations is 5.6M parameters learned from ~50k arcs. For ``dep_arc``,
where the candidates of a word compete in one softmax, the score must compare pairs, so there the bilinear form is
the probe (as in Hewitt & Liang).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from probekit._device import small_problem_threads, torch_threads
from probekit.errors import DataError
from probekit.probing.linear import fit_layers
from probekit.probing.structural import StructuralSettings, _as_tensor, _device
from probekit.results.table import classification_metrics
from probekit.tasks.relations import check_tree


@dataclass
class ArcTargets:
    """Gold heads of a split: word offsets of its sentences and each word's head (0-based within its sentence;
    the root word points at itself)."""

    offsets: np.ndarray
    heads: list

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def arc_targets(sentences: Sequence) -> ArcTargets:
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in sentences])]).astype(np.int64)
    heads = []
    for s in sentences:
        parent = check_tree(s)
        heads.append(np.where(parent < 0, np.arange(len(parent)), parent))
    return ArcTargets(offsets=offsets, heads=heads)


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
        gold[b, :n] = data.heads[s]
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
    ``{"uas": test head accuracy, "epochs": ..., "dev_loss": ...}``."""
    st = settings or StructuralSettings()
    device = _device(st.device)
    L, _, d = X_train.shape
    with torch_threads(small_problem_threads(L * d * d, device)):
        return _fit_arcs(X_train, train, X_dev, dev, X_test, test, st, device)


def _fit_arcs(X_train, train, X_dev, dev, X_test, test, st, device):
    import torch

    L, _, d = X_train.shape
    gen = torch.Generator().manual_seed(st.seed)
    A = ((torch.rand(L, d, d, generator=gen) * 0.1 - 0.05) / math.sqrt(d)).to(device).requires_grad_(True)
    Xt, Xd, Xs = (_as_tensor(X, device) for X in (X_train, X_dev, X_test))
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
            dev_loss = (tot / float(dev.offsets[-1])).cpu().numpy()
            for layer in np.flatnonzero(active):
                epochs[layer] = epoch + 1
                if dev_loss[layer] < best[layer] - 1e-4:
                    best[layer], best_epoch[layer] = dev_loss[layer], epoch
                    best_A[layer] = A[layer]
                elif best_epoch[layer] < epoch - st.patience:
                    active[layer] = False
    correct = np.zeros(L)
    with torch.no_grad():
        for i in range(0, len(test.lengths), 64):
            rows, pad, gold, mask = _arc_batch(test, np.arange(i, min(i + 64, len(test.lengths))), device)
            pred = _arc_scores(Xs, rows, pad, mask, best_A).argmax(-1)
            correct += ((pred == gold[None]) & (gold[None] >= 0)).sum((1, 2)).cpu().numpy()
    return [{"uas": float(correct[i] / test.offsets[-1]), "epochs": int(epochs[i]), "dev_loss": float(best[i])}
            for i in range(L)]


def label_pairs(sentences: Sequence, labels: Sequence[str] | None = None):
    """Gold arcs of a split for ``dep_label``: (dependent rows, head rows) in corpus word order and the class ids of
    their universal relations; the label set is ``labels`` or the sorted relations seen here."""
    dep, head, rel, start = [], [], [], 0
    for s in sentences:
        parent = check_tree(s)
        for i, p in enumerate(parent):
            if p >= 0:
                dep.append(start + i)
                head.append(start + p)
                rel.append(s.deprels[i].split(":")[0])
        start += len(s)
    labels = list(labels) if labels is not None else sorted(set(rel))
    index = {r: k for k, r in enumerate(labels)}
    y = np.array([index.get(r, -1) for r in rel], dtype=np.int64)  # -1: a relation unseen in train, left out
    return np.asarray(dep), np.asarray(head), y, labels


def pair_features(X: np.ndarray, dep: np.ndarray, head: np.ndarray) -> np.ndarray:
    """``[L, pairs, 3d]`` features ``[h_i; h_j; h_i * h_j]`` (float32) of (dependent, head) rows of ``[L, words, d]``."""
    if len(dep) == 0:
        raise DataError("dep_label: the split has no gold arcs (one-word sentences only?).")
    hi, hj = X[:, dep].astype(np.float32), X[:, head].astype(np.float32)
    return np.concatenate([hi, hj, hi * hj], axis=-1)


def fit_label_layers(X: dict, sentences: dict, *, Cs: Sequence[float] = (0.01, 0.1, 1.0), device: str | None = None,
                     seed: int = 0) -> list[dict]:
    """``dep_label`` on every layer of ``X`` (``{role: [L, words, d]}``): per layer test accuracy and macro-F1.

    The L2 strength is chosen per layer on dev, as for the word probes."""

    dep, head, y, labels = label_pairs(sentences["train"])
    F, Y = {"train": pair_features(X["train"], dep, head)}, {"train": y}
    for role in ("dev", "test"):
        d_, h_, y_, _ = label_pairs(sentences[role], labels)
        keep = y_ >= 0
        F[role], Y[role] = pair_features(X[role], d_[keep], h_[keep]), y_[keep]
    fits = fit_layers(F["train"], Y["train"], n_classes=len(labels), Cs=tuple(Cs), X_dev=F["dev"], y_dev=Y["dev"],
                      device=device, seed=seed)
    return [{**classification_metrics(Y["test"], f.predict(F["test"][i]), len(labels)), "C": f.C}
            for i, f in enumerate(fits)]
