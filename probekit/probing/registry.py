"""Probe families: each announces its name where it is defined, and the runner looks it up here.

A family is one module of :mod:`probekit.probing` with a class decorated by :func:`register_probe`; it says

* its ``levels`` (``word``, ``sentence``),
* how it fits every layer of a loaded layer group at once (:meth:`ProbeFamily.fit`),
* whether that fit depends on the seed (``seed_dependent``; when not, the runner fits once for every seed),
* how its control tasks are fitted (:meth:`ProbeFamily.fit_controls`; ``joint_controls``: the control tasks of all
  seeds as one problem, so a seed's numbers depend on the seed list),
* whether it gives an MDL codelength (``has_mdl``, :meth:`ProbeFamily.codelength`),
* what of the experiment's settings its results depend on (:meth:`ProbeFamily.settings_key`, part of unit keys).

Adding a family is one new module here: the runner, the sweep and the report find it through :func:`get_probe`.
Every module of the package is imported at the first lookup (not when this module is imported, so that reading a
config stays cheap).
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from probekit.errors import ConfigError, unknown_name

_FAMILIES: dict[str, "ProbeFamily"] = {}
_LOADED = False


@dataclass(frozen=True)
class FitSettings:
    """The experiment's settings a probe fit reads: the inverse L2 strengths tried by linear probes (scikit-learn's
    ``C``, chosen per layer on dev), the MLP settings (config key ``mlp``) and the device (None = CUDA if any)."""

    inv_l2_grid: tuple[float, ...] = (0.01, 0.1, 1.0)
    mlp: dict | None = None
    device: str | None = None


@dataclass(frozen=True)
class LayerResult:
    """One layer's fitted probe, as the runner scores it: predicted class ids on dev (None when not scored) and
    test (``int64[n]``), the trainable parameter count and the regularisation used (``reg``: the linear probe's
    inverse L2 strength, the MLP's weight decay)."""

    pred_dev: np.ndarray | None
    pred_test: np.ndarray
    n_params: int | None
    reg: float | None
    #: the probability the probe gives its predicted class on each test item (the per-word predictions file)
    proba_test: np.ndarray | None = None
    #: iterations of the final solve, for families solved iteratively to a tolerance (a ``fit_iterations`` row)
    iterations: int | None = None


class ProbeFamily:
    """Base of the probe families (see the module doc). Subclasses set the class attributes and :meth:`fit`."""

    levels: tuple[str, ...] = ("word", "sentence")
    seed_dependent: bool = True
    joint_controls: bool = False
    has_mdl: bool = False
    #: the family raises a clear error itself for inf/NaN features (else the runner checks each loaded group)
    checks_own_inputs: bool = False

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    def settings_key(self, settings: FitSettings):
        """What of ``settings`` (besides the inverse L2 grid, keyed for all) changes this family's numbers."""
        return None

    def fit(self, X: dict, y: dict, *, n_classes: int, settings: FitSettings, seed: int,
            reg: Sequence[float | None] | None = None) -> list[LayerResult]:
        """Fit one probe per layer of ``X["train"]`` (``[G, n, d_model]``) on ``y["train"]``, choosing on
        ``X["dev"]``/``y["dev"]``; ``reg``: one regularisation per layer to use instead of choosing (controls)."""
        raise NotImplementedError

    def fit_controls(self, X: dict, controls: dict[int, dict], *, seeds: Sequence[int], n_classes: int,
                     settings: FitSettings, chosen: Sequence[float | None]) -> dict[int, list[LayerResult]]:
        """Probes on the control labels ``controls[seed][role]`` of ``seeds`` (of every seed in ``controls`` when
        ``joint_controls``), at the regularisation ``chosen`` for the task: ``{seed: [LayerResult per layer]}``."""
        return {s: self.fit(X, controls[s], n_classes=n_classes, settings=settings, seed=s, reg=chosen)
                for s in seeds}

    def codelength(self, X_train, y_train: np.ndarray, *, n_classes: int, seed: int, device: str | None) -> list:
        """MDL online codelength per layer of ``X_train [G, n, d_model]`` (:class:`~probekit.probing.mdl.MDLResult`)."""
        raise ConfigError(f"Probe {self.name!r} has no MDL codelength.")


def register_probe(name: str, **kwargs) -> Callable[[type], type]:
    """Class decorator: register ``cls(name, **kwargs)`` as the probe family ``name`` (one class may register
    several names, e.g. ``mlp1`` and ``mlp2``)."""
    def deco(cls: type) -> type:
        if name in _FAMILIES and type(_FAMILIES[name]) is not cls:
            raise ConfigError(f"Probe family {name!r} is registered twice ({type(_FAMILIES[name]).__name__} and "
                              f"{cls.__name__}); give one of them another name.")
        _FAMILIES[name] = cls(name, **kwargs)
        return cls

    return deco


def _load_builtin() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    package = importlib.import_module("probekit.probing")
    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"probekit.probing.{info.name}")


def get_probe(name: str) -> ProbeFamily:
    """The registered family ``name``; an unknown name is a ConfigError with the closest names."""
    _load_builtin()
    if name not in _FAMILIES:
        raise unknown_name("probe", name, _FAMILIES)
    return _FAMILIES[name]


def probe_names() -> list[str]:
    """Every registered family's name, sorted."""
    _load_builtin()
    return sorted(_FAMILIES)
