"""probekit: layer-wise probing of pretrained language models.

Heavy libraries (torch, transformers) are imported on first use, so ``import probekit`` and
``probekit --help`` are fast.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "ProbekitError": "probekit.errors",
    "Sentence": "probekit.data.conllu_io",
    "read_conllu": "probekit.data.conllu_io",
    "write_conllu": "probekit.data.conllu_io",
    "load_split": "probekit.data.datasets",
    "get_task": "probekit.tasks.base",
    "list_tasks": "probekit.tasks.base",
    "load_model": "probekit.activations.models",
    "load_sentences": "probekit.api",
    "extract_store": "probekit.api",
    "probe": "probekit.api",
    "summarize": "probekit.api",
    "plot_layers": "probekit.api",
    "ExperimentConfig": "probekit.config",
    "run_experiment": "probekit.runner.experiment",
    "load_results": "probekit.results.table",
    "ActivationStore": "probekit.activations.store",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'probekit' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
