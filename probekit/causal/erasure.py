"""Concept erasers per layer: LEACE (default) and INLP, fitted on a task's training features, saved like probes.

An eraser is the affine map ``x -> x - ((x - bias) @ right.T) @ left.T`` with ``left, right: [d, r]`` (``r`` = its
rank, the number of directions it removes). Both methods are stored in that one form:

* **LEACE** (Belrose et al. 2023, "LEACE: Perfect linear concept erasure in closed form"; the ``concept-erasure``
  package by EleutherAI does the algebra): the smallest edit (least squares, in the features' own covariance) after
  which the features have zero covariance with the one-hot label. Then *no* linear classifier trained on them does
  better than a constant one, which is the guarantee the sanity rows check. Its rank is at most ``classes - 1`` (1 for
  a binary task). It is the default: closed form (one covariance and one eigendecomposition per layer, no probe
  training), provably removes all linear information, and changes the vectors as little as possible, so that an
  effect on the model can be blamed on the concept rather than on the size of the edit.
* **INLP** (Ravfogel et al. 2020, "Null It Out"; the projection of Elazar et al. 2021's amnesic probing): train a
  linear probe, project its directions out (an orthogonal projection), repeat until a fresh probe is within one
  point of the majority baseline on the dev features or ``max_iter`` rounds are done. It removes more directions
  (rank ``rounds x (classes - 1)``), so it damages more; kept for comparison with the amnesic-probing literature.

:func:`random_control` is Elazar et al.'s control: the orthogonal projection out of a random subspace of the same rank
(about the same mean), so that "any edit of this size hurts" and "removing this concept hurts" can be told apart.

The eraser file (``.erasers``, one per model x task x pooling x method) is an ``.npz`` written atomically; it records
the model's weights hash and the task, and :func:`load_erasers` refuses one made for another model or task.
"""
from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from probekit._extras import require
from probekit._io import atomic_write_bytes
from probekit.errors import ConfigError, DataError, ModelError, TaskError, unknown_name
from probekit.probing.linear import check_finite, fit_layers

log = logging.getLogger(__name__)

METHODS = ("leace", "inlp")
FORMAT = "probekit-erasers"
FORMAT_VERSION = 1


@dataclass
class LayerEraser:
    """One layer's eraser ``x -> x - ((x - bias) @ right.T) @ left.T`` (float32 arrays).

    Attributes:
        layer: hidden-state layer (0 = embedding output).
        method: ``leace``, ``inlp`` or ``random`` (the control).
        left, right: ``[d_model, rank]``.
        bias: ``[d_model]`` (the training mean for LEACE and the control) or None (INLP's linear projection).
    """

    layer: int
    method: str
    left: np.ndarray
    right: np.ndarray
    bias: np.ndarray | None = None

    @property
    def rank(self) -> int:
        return int(self.left.shape[1])

    def __call__(self, X: np.ndarray) -> np.ndarray:
        """Erased copy of ``X: [n, d_model]`` (float32)."""
        X = np.asarray(X, dtype=np.float32)
        D = X - self.bias if self.bias is not None else X
        return X - (D @ self.right) @ self.left.T

    def torch_apply(self, h):
        """The same map on a torch tensor ``[n, d_model]`` (any device and dtype; computed in float32)."""
        import torch

        dev = h.device
        key = str(dev)
        cache = self.__dict__.setdefault("_torch", {})
        if key not in cache:
            cache[key] = tuple(None if a is None else torch.as_tensor(a, device=dev)
                               for a in (self.left, self.right, self.bias))
        left, right, bias = cache[key]
        x = h.float()
        d = x - bias if bias is not None else x
        return (x - (d @ right) @ left.T).to(h.dtype)


def _check_labels(y: np.ndarray, n_classes: int, what: str) -> None:
    present = np.unique(y)
    if len(present) < 2:
        raise TaskError(f"{what}: the training items have a single label (class {present.tolist()}); there is no "
                        "concept to erase. Use more training data or another task.")
    if present.min() < 0 or present.max() >= n_classes:
        raise DataError(f"{what}: labels must be 0..{n_classes - 1} with left-out items (-1) dropped, got "
                        f"{present.min()}..{present.max()}.")


def fit_leace(X: np.ndarray, y: np.ndarray, *, n_classes: int, layer: int = 0) -> LayerEraser:
    """LEACE eraser of one layer's ``X: [n, d_model]`` for labels ``y: [n]`` (fitted in float64)."""
    import torch

    LeaceFitter = require("concept_erasure", extra="erasure", purpose="LEACE erasure").LeaceFitter
    _check_labels(y, n_classes, f"Layer {layer}")
    Xt = torch.as_tensor(np.asarray(X), dtype=torch.float64)
    Z = torch.nn.functional.one_hot(torch.as_tensor(y), n_classes).to(torch.float64)
    # constrain_cov_trace=False: the trace constraint mixes in an orthogonal projection that breaks the guarantee
    # (zero covariance with the label) which the sanity rows check; the edit is still the least-squares one.
    fitter = LeaceFitter(Xt.shape[1], n_classes, dtype=torch.float64, constrain_cov_trace=False).update(Xt, Z)
    er = fitter.eraser
    keep = (er.proj_left.abs().sum(0) > 0) & (er.proj_right.abs().sum(1) > 0)  # columns the SVD cut-off zeroed
    left = er.proj_left[:, keep].numpy().astype(np.float32)
    right = er.proj_right[keep].T.numpy().astype(np.float32)
    return LayerEraser(layer, "leace", left, right, er.bias.numpy().astype(np.float32))


def fit_inlp(X: np.ndarray, y: np.ndarray, *, n_classes: int, layers: list[int], X_dev: np.ndarray | None = None,
             y_dev: np.ndarray | None = None, max_iter: int = 20, C: float = 1.0, device: str | None = None
             ) -> list[LayerEraser]:
    """INLP erasers of ``X: [layer, n, d_model]`` (all layers' probes fitted together, round by round).

    A layer stops when a probe trained on its projected features is within one point of the majority baseline on
    ``X_dev`` (without dev data: after ``max_iter`` rounds).
    """

    G, _, d = X.shape
    bases = [np.zeros((d, 0), dtype=np.float64) for _ in range(G)]
    active = list(range(G))
    majority = np.bincount(y, minlength=n_classes).argmax()
    for _ in range(max_iter):
        if not active:
            break
        Xp = np.stack([_project_out(X[g], bases[g]) for g in active])
        fits = fit_layers(Xp, y, n_classes=n_classes, fixed_C=[C] * len(active), device=device)
        still = []
        for g, f in zip(active, fits):
            if X_dev is not None:  # this round's probe is already at the majority baseline: nothing left to remove
                acc = (f.predict(_project_out(X_dev[g], bases[g])) == y_dev).mean()
                if acc <= (y_dev == majority).mean() + 0.01:
                    continue
            W = f.coef.astype(np.float64) / f.scale[:, None]  # raw-space directions [d, K]
            if W.shape[1] > 1:
                W = W - W.mean(1, keepdims=True)  # softmax ignores a shift shared by all classes
            W = W - bases[g] @ (bases[g].T @ W)
            u, s, _ = np.linalg.svd(W, full_matrices=False)
            new = u[:, s > 1e-6 * max(s.max(), 1e-30)]
            if new.shape[1]:
                bases[g] = np.concatenate([bases[g], new], axis=1)
                still.append(g)
        active = still
    return [LayerEraser(layers[g], "inlp", bases[g].astype(np.float32), bases[g].astype(np.float32), None)
            for g in range(G)]


def _project_out(X: np.ndarray, U: np.ndarray) -> np.ndarray:
    return (X - (X @ U) @ U.T).astype(np.float32) if U.shape[1] else np.asarray(X, dtype=np.float32)


def random_control(eraser: LayerEraser, *, seed: int = 0) -> LayerEraser:
    """Elazar et al.'s control for ``eraser``: orthogonal projection out of a random subspace of the same rank,
    about the same mean (the rank and the seed are all that is drawn)."""
    d, r = eraser.left.shape
    q, _ = np.linalg.qr(np.random.default_rng([seed, eraser.layer, r]).standard_normal((d, max(r, 1))))
    U = q[:, :r].astype(np.float32)
    return LayerEraser(eraser.layer, "random", U, U.copy(), eraser.bias)


@dataclass
class EraserSet:
    """The erasers of one model x task x pooling x method, with what they were fitted on."""

    model_name: str
    weights_hash: str
    task: str
    task_version: int
    labels: list[str]
    level: str
    pooling: str
    method: str
    hidden_size: int
    erasers: dict[int, LayerEraser] = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        ranks = sorted({e.rank for e in self.erasers.values()})
        return (f"EraserSet({self.method}, model={self.model_name!r}, task={self.task!r}, layers="
                f"{sorted(self.erasers)}, rank={ranks})")

    def save(self, path: str | Path) -> Path:
        """Write every layer's eraser to one ``.npz`` file, atomically. Returns the path."""
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION,
                "model": {"name": self.model_name, "weights_hash": self.weights_hash, "hidden_size": self.hidden_size},
                "task": {"name": self.task, "version": self.task_version, "labels": self.labels, "level": self.level},
                "pooling": self.pooling, "method": self.method, "info": self.info,
                "layers": {str(k): {"rank": e.rank, "method": e.method, "affine": e.bias is not None}
                           for k, e in sorted(self.erasers.items())}}
        arrays = {}
        for k, e in self.erasers.items():
            arrays[f"L{k}.left"], arrays[f"L{k}.right"] = e.left, e.right
            if e.bias is not None:
                arrays[f"L{k}.bias"] = e.bias
        buf = io.BytesIO()
        np.savez(buf, __meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
        atomic_write_bytes(Path(path), buf.getvalue())
        return Path(path)


def load_erasers(path: str | Path, *, weights_hash: str | None = None, task: str | None = None) -> EraserSet:
    """Read an eraser file; ModelError / TaskError when it was made for another model (weights hash) or task."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(bytes(z["__meta__"]).decode())
            arrays = {k: z[k] for k in z.files if k != "__meta__"}
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')!r}")
        erasers = {int(k): LayerEraser(int(k), v["method"], arrays[f"L{k}.left"], arrays[f"L{k}.right"],
                                       arrays.get(f"L{k}.bias") if v["affine"] else None)
                   for k, v in meta["layers"].items()}
    except Exception as e:  # noqa: BLE001 - missing, truncated or foreign files fail in many ways
        raise DataError(f"{path} is not a readable probekit eraser file ({type(e).__name__}: {e}); fit the erasers "
                        "again (probekit.causal.erasure.fit_erasers).") from None
    m, t = meta["model"], meta["task"]
    if weights_hash is not None and m["weights_hash"] != weights_hash:
        raise ModelError(f"{path} holds erasers fitted on {m['name']!r} (weights {m['weights_hash'][:16]}), not on "
                         f"this model (weights {weights_hash[:16]}); an eraser only fits the feature space it was "
                         "fitted on: fit new erasers for this model.")
    if task is not None and t["name"] != task:
        raise TaskError(f"{path} holds erasers of task {t['name']!r}, not {task!r}: fit erasers for {task!r}.")
    return EraserSet(m["name"], m["weights_hash"], t["name"], t["version"], t["labels"], t["level"], meta["pooling"],
                     meta["method"], m["hidden_size"], erasers, meta.get("info", {}))


def labelled_rows(task, sentences) -> tuple[np.ndarray, np.ndarray]:
    """(rows of the labelled items in store order, their class ids) of ``task`` on ``sentences``."""
    y = task.encode(sentences)
    rows = np.flatnonzero(y >= 0)
    return rows, y[rows]


def layer_features(store, layer: int, rows: np.ndarray, level: str, pooling: str | None) -> np.ndarray:
    """``[item, d_model]`` float32 features of one layer (word vectors, or sentence vectors of ``pooling``)."""
    X = store.layer(layer, rows=rows) if level == "word" else store.sentence_vectors(pooling, layer)[rows]
    check_finite(X, f"{store.path} layer {layer}")
    return X


def fit_erasers(store, task, sentences, *, layers: list[int] | None = None, method: str = "leace",
                pooling: str | None = None, dev_store=None, dev_sentences=None, weights_hash: str | None = None,
                device: str | None = None) -> EraserSet:
    """Fit one eraser per layer for ``task`` on the training store's features.

    Args:
        store: the training split's :class:`~probekit.activations.store.ActivationStore`.
        task: a :class:`~probekit.tasks.base.Task` (word or sentence level).
        sentences: the sentences of ``store``, in order (their labels).
        layers: layers to fit (0 = embedding output, negative counts from the last); default all.
        method: ``leace`` (default) or ``inlp``.
        pooling: sentence pooling for sentence tasks (default ``mean``).
        dev_store, dev_sentences: INLP's stopping rule (ignored by LEACE).
        weights_hash: recorded in the file (default: the store manifest's).
    """
    if method not in METHODS:
        raise unknown_name("erasure method", method, METHODS)
    if task.level not in ("word", "sentence"):
        raise ConfigError(f"Task {task.name} is a {task.level}-level task; erasure handles word and sentence tasks.")
    layers = [store._check_layer(k) for k in (range(store.n_layers) if layers is None else layers)]
    pool = pooling or ("mean" if task.level == "sentence" else store.manifest["word_pooling"])
    rows, y = labelled_rows(task, sentences)
    C = len(task.labels)
    _check_labels(y, C, f"Task {task.name}")
    out = EraserSet(store.manifest["model"]["name"], weights_hash or store.manifest["model"]["weights_hash"],
                    task.name, task.version, list(task.labels), task.level, pool, method, store.hidden_size,
                    info={"train_items": len(y)})
    if method == "leace":
        for k in layers:  # one layer in memory at a time
            out.erasers[k] = fit_leace(layer_features(store, k, rows, task.level, pool), y, n_classes=C, layer=k)
        return out
    X = np.stack([layer_features(store, k, rows, task.level, pool) for k in layers])
    Xd = yd = None
    if dev_store is not None:
        drows, yd = labelled_rows(task, dev_sentences)
        Xd = np.stack([layer_features(dev_store, k, drows, task.level, pool) for k in layers])
    for e in fit_inlp(X, y, n_classes=C, layers=layers, X_dev=Xd, y_dev=yd, device=device):
        out.erasers[e.layer] = e
    return out
