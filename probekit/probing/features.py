"""What probes are trained on: labelled items, feature blocks of layer groups, standardisation, softmax.

Every probe trainer (experiments, saved bundles, the baselines' probe reference, the notebook API) reads its
features through :func:`feature_groups`: layers are cut into groups whose float32 ``[layer, item, d_model]`` block
stays under one memory budget (:data:`MEMORY_BUDGET`), and each group is loaded from the activation store for the
labelled items only.

Standardisation. Probes fit on features standardised per layer with the training mean and scale. The linear probe
(:func:`standardise`) uses ``ddof = 1`` in float32; the MDL probe (:func:`standardise_torch`, ``ddof = 0``, and its
preconditioner, ``ddof = 1``) and the MLP probe (:func:`moments_numpy`, ``ddof = 0`` accumulated in float64) keep
their own, because their results were recorded with them: making them one would move numbers in results.csv.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from probekit.errors import DataError

#: Largest float32 feature block (bytes) loaded for probe training at once; layers are grouped under it.
MEMORY_BUDGET = 3 << 30
ROLES = ("train", "dev", "test")


# ----------------------------------------------------------------------------------------------- labelled items

@dataclass(frozen=True)
class Labelled:
    """The items of one split that a task labels: ``rows`` (item indices into the store, ``int64[n]``) and their
    labels ``y`` (class ids, ``int64[n]``); ``left_out`` counts the items the task gives no label (-1)."""

    rows: np.ndarray
    y: np.ndarray
    left_out: int

    def sample(self, keep: np.ndarray) -> "Labelled":
        """These items restricted to the positions ``keep`` (sorted)."""
        return Labelled(self.rows[keep], self.y[keep], self.left_out)


def labelled(task, sentences) -> Labelled:
    """The labelled items of ``sentences`` for ``task`` (word or sentence level, as the task says)."""
    y_all = task.encode(sentences)
    rows = np.flatnonzero(y_all >= 0)
    return Labelled(rows, y_all[rows], int((y_all < 0).sum()))


# ----------------------------------------------------------------------------------------------- feature blocks

def layer_groups(layers: list[int], n_rows: int, d: int, budget: int = MEMORY_BUDGET, *,
                 itemsize: int = 4) -> list[list[int]]:
    """``layers`` cut into consecutive groups whose ``[group, n_rows, d]`` block of ``itemsize``-byte values (float32
    by default) fits in ``budget`` bytes."""
    size = max(1, budget // max(1, n_rows * d * itemsize))
    return [layers[i:i + size] for i in range(0, len(layers), size)]


def load_features(store, layers: list[int], rows: np.ndarray, level: str, pooling: str | None) -> np.ndarray:
    """``[len(layers), len(rows), d_model]`` float32 features of the items ``rows`` (words or sentences)."""
    if level == "word":
        return store.layers(layers, rows=rows)
    return np.stack([store.sentence_vectors(pooling, layer)[rows] for layer in layers])


class FeatureCache:
    """The last feature block loaded from each store, reused by the next request for the same layers, rows and
    pooling (word tasks that label every word read the same block). Probes never write into their features
    (tests/test_linear.py checks the linear probe), so one block can serve several tasks."""

    def __init__(self) -> None:
        self._blocks: dict[str, tuple] = {}

    def get(self, store, layers: list[int], rows: np.ndarray, level: str, pooling: str | None) -> np.ndarray:
        key = (tuple(layers), hashlib.sha256(np.ascontiguousarray(rows).tobytes()).hexdigest(), level, pooling)
        hit = self._blocks.get(str(store.path))
        if hit is not None and hit[0] == key:
            return hit[1]
        self._blocks.pop(str(store.path), None)  # free the old block before loading the new one
        X = load_features(store, layers, rows, level, pooling)
        self._blocks[str(store.path)] = (key, X)
        return X


def feature_groups(stores: dict, rows: dict[str, np.ndarray], layers: list[int], *, level: str,
                   pooling: str | None, budget: int = MEMORY_BUDGET, cache: FeatureCache | None = None
                   ) -> Iterator[tuple[list[int], dict[str, np.ndarray]]]:
    """``(group, {role: [len(group), n_role, d_model] float32})`` for each layer group of ``layers``.

    ``stores`` and ``rows`` are keyed by split role (``train`` first decides the grouping); roles without a store
    are skipped.
    """
    d = stores["train"].hidden_size
    for group in layer_groups(layers, len(rows["train"]), d, budget):
        load = cache.get if cache is not None else load_features
        yield group, {role: load(stores[role], group, rows[role], level, pooling) for role in rows if role in stores}


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


def as_tensor(X, device: str):
    """A feature block (numpy, any dtype) as a torch tensor on ``device``, in its own dtype (float16 stays float16):
    a C-contiguous copy only when ``X`` is not, and on the CPU a tensor that shares ``X``'s memory (do not write to
    it). The structural and pair probes move their blocks with it."""
    import torch

    return torch.as_tensor(np.ascontiguousarray(X), device=device)


# ----------------------------------------------------------------------------------------------- standardisation

def standardise(X, device: str):
    """The linear probe's standardisation: (standardised float32 copy of ``X [G, N, d]``, mean [G, 1, d],
    scale [G, 1, d]), scale = the per-feature standard deviation with ``ddof = 1``, at least 1e-6.
    ``X`` is not modified. The sum of squares runs layer by layer through one reused buffer (lean on memory)."""
    import torch

    Xr = torch.as_tensor(X, dtype=torch.float32, device=device)
    mean = Xr.mean(1, keepdim=True)
    # as_tensor returns X itself (a float32 tensor) or a view of it (a float32 array on the CPU): never write to those
    shares = Xr is X or (isinstance(X, np.ndarray) and Xr.device.type == "cpu" and np.may_share_memory(X, Xr.numpy()))
    Xt = Xr - mean if shares else Xr.sub_(mean)
    sq = torch.empty_like(Xt[0])
    var = torch.stack([torch.mul(x, x, out=sq).sum(0) for x in Xt]) / max(Xt.shape[1] - 1, 1)
    scale = var.sqrt_().unsqueeze(1).clamp_min(1e-6)
    return Xt.div_(scale), mean, scale


def standardise_torch(X, *, ddof: int, small_to_one: bool):
    """(``(X - mean) / scale``, mean [G, 1, d], scale [G, 1, d]) of a torch ``X [G, N, d]`` (torch's ``std``, over
    items, with ``ddof``). Scales at most 1e-6 become 1 (``small_to_one``) or 1e-6."""
    import torch

    mean = X.mean(dim=1, keepdim=True)
    scale = X.std(dim=1, keepdim=True, correction=ddof)
    scale = torch.where(scale > 1e-6, scale, torch.ones_like(scale)) if small_to_one else scale.clamp_min(1e-6)
    return (X - mean) / scale, mean, scale


def moments_numpy(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 (mean [d], scale [d]) of ``X [N, d]``, accumulated in float64, ``ddof = 0``; scales at most 1e-12
    become 1 (a constant feature)."""
    mean = X.mean(axis=0, dtype=np.float64).astype(np.float32)
    scale = X.std(axis=0, dtype=np.float64).astype(np.float32)
    scale[~(scale > 1e-12)] = 1.0
    return mean, scale


# ----------------------------------------------------------------------------------------------- probabilities

def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax of logits ``z [n, k]`` (float64), computed from ``z - max``."""
    z = np.asarray(z, dtype=np.float64) - np.max(z, axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def log_softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax of logits ``z [n, k]`` (float64)."""
    z = np.asarray(z, dtype=np.float64) - np.max(z, axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))
