"""MLP probes with one or two hidden layers (sklearn estimator contract).

Hewitt & Liang (2019) compare linear probes with MLP-1 and MLP-2 probes; the more expressive
probe usually scores higher on the task *and* on the control task, so always report selectivity
(:mod:`probekit.probing.control`) next to accuracy.

:class:`MLPProbe` follows the scikit-learn estimator contract: ``__init__`` only stores its
arguments, :meth:`MLPProbe.fit` sets attributes ending in ``_`` and returns ``self``.
Features are standardised inside the probe (mean/std fitted on the training data). Training is
Adam on shuffled minibatches with optional dev-set early stopping; with a fixed ``seed`` two fits
on CPU give bitwise identical parameters (the global torch RNG is not touched).
"""
from __future__ import annotations

import copy
import logging
import time
from typing import Callable

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from probekit._device import resolve_device
from probekit.errors import ConfigError, DataError
from probekit.probing.features import log_softmax, moments_numpy, softmax
from probekit.probing.registry import (
    FitSettings,
    LayerResult,
    ProbeFamily,
    register_probe,
)

log = logging.getLogger(__name__)

__all__ = ["MLPProbe", "MLPFamily", "mlp_fit_predict_proba"]

#: The experiment's MLP probe settings before the config's ``mlp`` key is applied.
EXPERIMENT_DEFAULTS = {"hidden_size": 256, "dropout": 0.1, "weight_decay": 0.0, "max_epochs": 20, "patience": 3,
                       "batch_size": 512}


class MLPProbe(ClassifierMixin, BaseEstimator):
    """A multi-layer perceptron probe ``x -> softmax(W_out h)``, ``h = MLP(standardise(x))``.

    Args:
        hidden_layers: number of hidden layers (1 = "MLP-1", 2 = "MLP-2"; 0 = a linear softmax probe).
        hidden_size: width of each hidden layer.
        dropout: dropout probability after each hidden ReLU (and 0 on the input).
        weight_decay: L2 coefficient (AdamW-style decoupled decay is *not* used: plain Adam with
            ``weight_decay`` added to the gradient, as in ``torch.optim.Adam``).
        lr: Adam learning rate.
        batch_size: minibatch size.
        max_epochs: upper bound on passes over the training data.
        patience: early stopping: stop after this many epochs without improvement of the monitored
            quantity (dev loss when dev data is given to :meth:`fit`, else training loss); the
            parameters of the best epoch are restored when dev data is given.
        tol: minimal improvement of the monitored loss that counts.
        seed: seeds initialisation, shuffling and dropout (a private RNG; global state untouched).
        device: ``None``/``"auto"`` = CUDA if available else CPU; or ``"cpu"``, ``"cuda"``, ``"cuda:1"``.
        standardize: standardise features with the training mean/std (constant features: std 1).

    Attributes (after fit):
        classes_: ``[n_classes]`` sorted class labels seen in training.
        n_features_in_: input width d.
        mean_, scale_: ``float32[d]`` standardisation statistics.
        n_epochs_: epochs actually run; best_epoch_: epoch whose parameters were kept (1-based).
        train_loss_curve_, dev_loss_curve_, dev_accuracy_curve_: per-epoch curves (dev ones empty
            without dev data).
        train_seconds_: wall time of :meth:`fit`.
        device_: the device the model lives on.
    """

    def __init__(self, *, hidden_layers: int = 1, hidden_size: int = 256, dropout: float = 0.1,
                 weight_decay: float = 0.0, lr: float = 1e-3, batch_size: int = 512,
                 max_epochs: int = 50, patience: int = 4, tol: float = 1e-4, seed: int = 0,
                 device: str | None = None, standardize: bool = True):
        self.hidden_layers = hidden_layers
        self.hidden_size = hidden_size
        self.dropout = dropout
        self.weight_decay = weight_decay
        self.lr = lr
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.tol = tol
        self.seed = seed
        self.device = device
        self.standardize = standardize

    # ------------------------------------------------------------------ helpers
    def _check_params(self) -> None:
        if int(self.hidden_layers) < 0:
            raise ConfigError(f"hidden_layers must be >= 0, got {self.hidden_layers}.")
        if int(self.hidden_size) < 1:
            raise ConfigError(f"hidden_size must be >= 1, got {self.hidden_size}.")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}.")
        if float(self.weight_decay) < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}.")
        if float(self.lr) <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}.")
        if int(self.batch_size) < 1 or int(self.max_epochs) < 1 or int(self.patience) < 1:
            raise ConfigError(f"batch_size, max_epochs and patience must be >= 1, got "
                              f"{self.batch_size}, {self.max_epochs}, {self.patience}.")

    def _build(self, d: int, k: int):
        import torch.nn as nn

        layers: list = []
        width = d
        for _ in range(int(self.hidden_layers)):
            layers += [nn.Linear(width, int(self.hidden_size)), nn.ReLU()]
            if self.dropout > 0:
                layers.append(nn.Dropout(float(self.dropout)))
            width = int(self.hidden_size)
        layers.append(nn.Linear(width, k))
        return nn.Sequential(*layers)

    def _to_tensor(self, X: np.ndarray):
        import torch

        Xt = torch.as_tensor(np.ascontiguousarray(X, dtype=np.float32))
        Xt = Xt.to(self.device_)
        return (Xt - self._mean_t) / self._scale_t

    # ------------------------------------------------------------------ API
    def fit(self, X, y, X_dev=None, y_dev=None) -> "MLPProbe":
        """Train the probe.

        Args:
            X: ``[n, d]`` features (any float dtype; used as float32).
            y: ``[n]`` labels (any hashable sklearn-style labels).
            X_dev, y_dev: optional ``[n_dev, d]``, ``[n_dev]`` dev data for early stopping; dev labels
                not seen in training are ignored for the dev loss/accuracy.

        Returns:
            self
        """
        import torch
        import torch.nn.functional as F

        t0 = time.perf_counter()
        self._check_params()
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32], ensure_min_samples=1)
        check_classification_targets(y)
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        k = len(self.classes_)
        self.device_ = resolve_device(self.device)
        X32 = np.asarray(X, dtype=np.float32)
        if self.standardize:
            mean, scale = moments_numpy(X32)
        else:
            mean = np.zeros(X32.shape[1], np.float32)
            scale = np.ones(X32.shape[1], np.float32)
        self.mean_, self.scale_ = mean, scale
        self._mean_t = torch.as_tensor(mean, device=self.device_)
        self._scale_t = torch.as_tensor(scale, device=self.device_)

        has_dev = X_dev is not None and y_dev is not None
        if has_dev:
            X_dev = validate_data(self, X_dev, reset=False, dtype=[np.float64, np.float32])
            y_dev = np.asarray(y_dev)
            pos = np.searchsorted(self.classes_, y_dev)
            pos = np.clip(pos, 0, k - 1)
            known = self.classes_[pos] == y_dev
            Xd = self._to_tensor(X_dev[known])
            yd = torch.as_tensor(pos[known].astype(np.int64), device=self.device_)
            has_dev = len(yd) > 0

        Xt = self._to_tensor(X32)
        yt = torch.as_tensor(y_idx.astype(np.int64), device=self.device_)
        n = len(yt)
        self.train_loss_curve_: list[float] = []
        self.dev_loss_curve_: list[float] = []
        self.dev_accuracy_curve_: list[float] = []
        devices = [torch.device(self.device_).index or 0] if self.device_.startswith("cuda") else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(int(self.seed))
            gen = torch.Generator(device="cpu").manual_seed(int(self.seed))
            model = self._build(X32.shape[1], max(k, 1)).to(self.device_)
            if k == 1:  # a single class: nothing to learn, predict it with probability 1
                self.model_ = model.eval()
                self.n_epochs_ = self.best_epoch_ = 0
                self.train_seconds_ = time.perf_counter() - t0
                return self
            opt = torch.optim.Adam(model.parameters(), lr=float(self.lr), weight_decay=float(self.weight_decay))
            bs = int(self.batch_size)
            best = float("inf")
            best_state = None
            bad = 0
            self.best_epoch_ = 0
            epoch = 0
            for epoch in range(1, int(self.max_epochs) + 1):
                model.train()
                perm = torch.randperm(n, generator=gen).to(self.device_)
                total = torch.zeros((), device=self.device_)
                for start in range(0, n, bs):
                    idx = perm[start:start + bs]
                    loss = F.cross_entropy(model(Xt[idx]), yt[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total += loss.detach() * len(idx)
                train_loss = float(total) / n
                self.train_loss_curve_.append(train_loss)
                if has_dev:
                    model.eval()
                    with torch.no_grad():
                        logits = torch.cat([model(Xd[s:s + 8192]) for s in range(0, len(yd), 8192)])
                        dev_loss = float(F.cross_entropy(logits, yd))
                        dev_acc = float((logits.argmax(1) == yd).float().mean())
                    self.dev_loss_curve_.append(dev_loss)
                    self.dev_accuracy_curve_.append(dev_acc)
                    monitored = dev_loss
                else:
                    monitored = train_loss
                if not np.isfinite(monitored):
                    raise DataError(f"MLP probe training diverged (loss {monitored}) at epoch {epoch}; "
                                    f"lower lr (= {self.lr}) or check the features for inf/NaN.")
                if monitored < best - float(self.tol):
                    best, bad, self.best_epoch_ = monitored, 0, epoch
                    if has_dev:
                        best_state = {k_: v.detach().clone() for k_, v in model.state_dict().items()}
                else:
                    bad += 1
                    if bad >= int(self.patience):
                        break
            if best_state is not None:
                model.load_state_dict(best_state)
            if not has_dev:
                self.best_epoch_ = epoch
        self.n_epochs_ = epoch
        self.model_ = model.eval()
        self.train_seconds_ = time.perf_counter() - t0
        log.debug("MLPProbe fit: n=%d d=%d k=%d epochs=%d best=%d %.2fs on %s", n, X32.shape[1], k,
                  self.n_epochs_, self.best_epoch_, self.train_seconds_, self.device_)
        return self

    def _logits(self, X) -> np.ndarray:
        """Logits ``float64[n, k]``. On CPU inference runs in float64 (a double copy of the model),
        so a row's output does not depend on which other rows share its batch."""
        import torch

        check_is_fitted(self, "model_")
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        if len(self.classes_) == 1:
            return np.zeros((X.shape[0], 1), np.float64)
        on_cpu = not str(self.device_).startswith("cuda")
        if on_cpu:
            model = copy.deepcopy(self.model_).double().eval()  # not cached: predict leaves self unchanged
            dtype = torch.float64
        else:
            model, dtype = self.model_, torch.float32
        mean, scale = self._mean_t.to(dtype), self._scale_t.to(dtype)
        out = []
        with torch.no_grad():
            for s in range(0, X.shape[0], 8192):
                xb = torch.as_tensor(np.asarray(X[s:s + 8192]), device=self.device_).to(dtype)
                out.append(model((xb - mean) / scale).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.classes_)), np.float64)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities ``float64[n, n_classes]``, columns in the order of ``classes_``."""
        return softmax(self._logits(X))

    def predict_log_proba(self, X) -> np.ndarray:
        """Natural-log class probabilities ``float64[n, n_classes]``."""
        return log_softmax(self._logits(X))

    def decision_function(self, X) -> np.ndarray:
        """Raw logits ``float64[n, n_classes]`` (``[n]`` for two classes, sklearn convention)."""
        z = self._logits(X).astype(np.float64)
        if z.shape[1] == 2:
            return z[:, 1] - z[:, 0]
        return z

    def predict(self, X) -> np.ndarray:
        """Most probable class ``[n]`` (labels from ``classes_``)."""
        z = self._logits(X)
        return self.classes_[np.argmax(z, axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags


def mlp_fit_predict_proba(n_classes: int, **params) -> Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """Adapter for :func:`probekit.probing.mdl.online_codelength`: ``(X_tr, y_tr, X_next) -> float64[len(X_next), K]``.

    ``y_tr`` holds class ids in ``[0, n_classes)``; classes absent from ``y_tr`` get probability 0
    here (``online_codelength`` smooths every distribution so they still cost a finite number of bits).
    ``params`` go to :class:`MLPProbe`.
    """
    def fit_predict_proba(X_tr: np.ndarray, y_tr: np.ndarray, X_next: np.ndarray) -> np.ndarray:
        probe = MLPProbe(**params).fit(X_tr, y_tr)
        out = np.zeros((len(X_next), n_classes), np.float64)
        out[:, probe.classes_.astype(np.int64)] = probe.predict_proba(X_next)
        return out

    return fit_predict_proba


@register_probe("mlp2", hidden_layers=2)
@register_probe("mlp1", hidden_layers=1)
class MLPFamily(ProbeFamily):
    """The ``mlp1`` / ``mlp2`` probe families: one :class:`MLPProbe` per layer, early-stopped on dev, seeded (its
    initialisation, shuffling and dropout depend on the seed); control tasks are fitted like the task, per seed."""

    def __init__(self, name: str, hidden_layers: int):
        super().__init__(name)
        self.hidden_layers = hidden_layers

    def settings_key(self, settings: FitSettings):
        return settings.mlp

    def fit(self, X, y, *, n_classes, settings: FitSettings, seed, reg=None) -> list[LayerResult]:
        params = {**EXPERIMENT_DEFAULTS, **(settings.mlp or {})}
        out = []
        for i in range(X["train"].shape[0]):
            m = MLPProbe(hidden_layers=self.hidden_layers, seed=seed, device=settings.device, **params)
            m.fit(X["train"][i], y["train"], X["dev"][i], y["dev"])
            n_params = sum(p.numel() for p in m.model_.parameters()) if hasattr(m, "model_") else None
            out.append(LayerResult(m.predict(X["dev"][i]), m.predict(X["test"][i]), n_params,
                                   params.get("weight_decay"), m.predict_proba(X["test"][i]).max(1)))
        return out
