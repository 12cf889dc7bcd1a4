"""Optional dependencies: one import helper whose error names the pip extra that provides the package.

The core (stores, probes, tables, figures) needs none of these; each serves one feature:
``[baselines]`` adapters (tuning baselines), ``[annotate]`` spaCy (raw text, ``predict`` on strings), ``[gguf]`` gguf and
accelerate (GGUF models such as ``smollm2-135m``), ``[ray]`` the Ray sweep executor, ``[track]`` MLflow, TensorBoard
and W&B logging, ``[hf]`` Hugging Face ``datasets`` as probing data.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from probekit.errors import ConfigError

#: the distribution's name on the package index (the import name is ``probekit``)
DISTRIBUTION = "probekit-nlp"

#: pip package of each optional module where the two names differ
_PIP_NAMES = {"ray": "ray[default]"}


class MissingExtraError(ConfigError):
    """An optional package is not installed; the message names the extra that installs it."""


def require(module: str, *, extra: str, purpose: str = "") -> ModuleType:
    """``import module``, or a :class:`MissingExtraError` that says ``pip install 'probekit-nlp[extra]'``.

    Only a missing module becomes that error; an installed package that fails to import raises as it is, since
    installing the extra again would not help.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        top = module.split(".")[0]
        if e.name is not None and e.name.split(".")[0] != top:
            raise
        pip = _PIP_NAMES.get(module, top)
        what = f"{purpose} needs" if purpose else "This needs"
        raise MissingExtraError(f"{what} the optional package {pip!r}, which is not installed: "
                                f"pip install '{DISTRIBUTION}[{extra}]'.") from None
