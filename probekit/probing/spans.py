"""Span representations: one vector per span of words, pooled from the word vectors of every layer of a group.

A span is a range of words ``start .. end - 1`` of one sentence (the items of a ``span`` task,
:meth:`probekit.tasks.base.Task.items`). The word vectors come from the activation store, one per syntactic word
of the whole sentence, so a span is never cut by the model window. Poolings (:data:`POOLINGS`):

* ``mean``: the mean of the span's word vectors;
* ``max``: their feature-wise maximum;
* ``endpoints``: ``[h_start; h_end-1]``, the first and last word (Tenney et al. 2019 and Lee et al. 2017 use the
  endpoints; a one-word span repeats its word);
* ``attention``: Tenney et al. 2019's self-attentive pooling (from Lee et al. 2017): weights
  ``softmax_t(w . h_t)`` over the span's words, the pooled vector ``sum_t a_t h_t``; ``w`` is learned jointly with
  the classifier (:func:`fit_attention_layers`), one ``w`` per layer.

The fixed poolings give features for the linear probe (:mod:`probekit.probing.linear`); ``attention`` is its own
small model, trained for all layers of a group at once.
"""
from __future__ import annotations

import numpy as np

from probekit._device import resolve_device, small_problem_threads, torch_threads
from probekit.errors import ConfigError, DataError
from probekit.probing.features import standardise_torch
from probekit.tasks.base import RelationItems

POOLINGS = ("mean", "max", "endpoints", "attention")
#: The poolings computed here as fixed features (``attention`` is learned).
FIXED_POOLINGS = ("mean", "max", "endpoints")


def check_pooling(name: str) -> str:
    if name not in POOLINGS:
        raise ConfigError(f"Unknown span pooling {name!r}; choose one of {', '.join(POOLINGS)}.")
    return name


def span_rows(items: RelationItems) -> tuple[np.ndarray, np.ndarray]:
    """Store rows ``[start, end)`` of every span item."""
    if items.level != "span":
        raise DataError(f"span features need the items of a span task, got a {items.level} task's.")
    return items.rows("a"), items.rows("b")


def span_features(X: np.ndarray, items: RelationItems, pooling: str) -> np.ndarray:
    """``[L, spans, d]`` (``2d`` for ``endpoints``) float32 span vectors of ``X`` (``[L, words, d]``)."""
    check_pooling(pooling)
    if pooling not in FIXED_POOLINGS:
        raise ConfigError(f"span pooling {pooling!r} is learned (fit_attention_layers), not a fixed feature.")
    start, end = span_rows(items)
    if len(start) == 0:
        raise DataError("span features: the split has no spans.")
    if pooling == "endpoints":
        return np.concatenate([X[:, start], X[:, end - 1]], axis=-1).astype(np.float32)
    L, _, d = X.shape
    out = np.empty((L, len(start), d), dtype=np.float32)
    if pooling == "mean":
        for layer in range(L):  # prefix sums in float64, one layer at a time: exact enough, lean on memory
            c = np.zeros((X.shape[1] + 1, d))
            np.cumsum(X[layer], axis=0, dtype=np.float64, out=c[1:])
            out[layer] = (c[end] - c[start]) / (end - start)[:, None]
        return out
    length = end - start
    for n in np.unique(length):  # spans of one length at a time: a [L, spans, n, d] gather, max over n
        k = np.flatnonzero(length == n)
        idx = start[k][:, None] + np.arange(n)[None, :]
        out[:, k] = X[:, idx].max(axis=2)
    return out


def _padded(items: RelationItems, device: str):
    """(rows ``[spans, m]`` with padding pointing at row 0, mask ``[spans, m]``) for the attention pooling."""
    import torch

    start, end = span_rows(items)
    m = int((end - start).max())
    idx = start[:, None] + np.arange(m)[None, :]
    mask = idx < end[:, None]
    return torch.as_tensor(np.where(mask, idx, 0), device=device), torch.as_tensor(mask, device=device)


def fit_attention_layers(X: dict, items: dict, *, n_classes: int, epochs: int = 30, lr: float = 1e-3,
                         batch_size: int = 256, weight_decay: float = 1e-4, patience: int = 3, seed: int = 0,
                         device: str | None = None) -> list[dict]:
    """Self-attentive span pooling + a linear classifier, every layer of ``X`` (``{role: [L, words, d]}``) at once.

    Features are standardised per layer with the training words' mean and standard deviation. Adam (``lr``,
    ``weight_decay``), mini-batches of ``batch_size`` spans; each layer keeps the parameters of its best dev epoch
    (dev cross-entropy) and stops when that epoch is more than ``patience`` epochs back. Returns per layer
    ``{"pred": [test spans] class ids, "epochs", "dev_loss", "n_params"}``.
    """
    device = resolve_device(device)
    L, _, d = X["train"].shape
    with torch_threads(small_problem_threads(L * d * n_classes * 64, device)):
        return _fit_attention(X, items, n_classes, epochs, lr, batch_size, weight_decay, patience, seed, device)


def _fit_attention(X, items, n_classes, epochs, lr, batch_size, weight_decay, patience, seed, device):
    import torch
    import torch.nn.functional as F

    L, _, d = X["train"].shape
    Xt = {r: torch.as_tensor(np.asarray(X[r], dtype=np.float32), device=device) for r in X}
    _, mean, scale = standardise_torch(Xt["train"], ddof=1, small_to_one=False)
    Xt = {r: (v - mean) / scale for r, v in Xt.items()}
    pads = {r: _padded(items[r], device) for r in X}
    ys = {r: torch.as_tensor(items[r].y, device=device) for r in X}
    gen = torch.Generator().manual_seed(seed)
    w = torch.zeros(L, d, device=device, requires_grad=True)  # zero init: the pooling starts as the mean
    W = (torch.randn(L, d, n_classes, generator=gen) * 0.01).to(device).requires_grad_(True)
    b = torch.zeros(L, 1, n_classes, device=device, requires_grad=True)
    params = [w, W, b]
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)

    def logits(role, sel):
        rows, mask = pads[role][0][sel], pads[role][1][sel]
        H = Xt[role][:, rows]  # [L, s, m, d]
        a = torch.einsum("lsmd,ld->lsm", H, w).masked_fill(~mask[None], float("-inf")).softmax(-1)
        pooled = torch.einsum("lsm,lsmd->lsd", a, H)
        return torch.matmul(pooled, W) + b  # [L, s, C]

    def loss(role, sel):
        z = logits(role, sel)
        return F.cross_entropy(z.reshape(-1, n_classes), ys[role][sel].repeat(L), reduction="none").view(L, -1)

    n = len(items["train"].y)
    best = np.full(L, np.inf)
    best_epoch = np.full(L, -1)
    kept = [p.detach().clone() for p in params]
    active = np.ones(L, bool)
    done_epochs = np.zeros(L, dtype=np.int64)
    rng = np.random.default_rng(seed)
    for epoch in range(epochs):
        if not active.any():
            break
        act = torch.as_tensor(active, device=device, dtype=torch.float32)
        order = torch.as_tensor(rng.permutation(n), device=device)
        for i in range(0, n, batch_size):
            opt.zero_grad()
            (loss("train", order[i:i + batch_size]).mean(1) * act).sum().backward()
            opt.step()
        with torch.no_grad():
            nd = len(items["dev"].y)
            dev_loss = sum(loss("dev", torch.arange(j, min(j + 1024, nd), device=device)).sum(1)
                           for j in range(0, nd, 1024)).cpu().numpy() / nd
            for layer in np.flatnonzero(active):
                done_epochs[layer] = epoch + 1
                if dev_loss[layer] < best[layer] - 1e-4:
                    best[layer], best_epoch[layer] = dev_loss[layer], epoch
                    for k, p in zip(kept, params):
                        k[layer] = p[layer]
                elif best_epoch[layer] < epoch - patience:
                    active[layer] = False
    with torch.no_grad():
        for k, p in zip(kept, params):
            p.copy_(k)
        nt = len(items["test"].y)
        pred = torch.cat([logits("test", torch.arange(j, min(j + 1024, nt), device=device)).argmax(-1)
                          for j in range(0, nt, 1024)], dim=1).cpu().numpy()
    n_params = d + d * n_classes + n_classes
    return [{"pred": pred[i], "epochs": int(done_epochs[i]), "dev_loss": float(best[i]), "n_params": n_params}
            for i in range(L)]
