"""Tuning baselines: full fine-tuning, prompt tuning, prefix tuning, adapters and LoRA.

Word-level token classification on the same tasks, splits and subword alignment as the probes,
so that "what a frozen layer encodes" can be compared with "what the model can learn".
torch/transformers/adapters are imported on first use.
"""
from __future__ import annotations

import importlib

_LAZY = {
    "BaselineConfig": "probekit.baselines.config",
    "METHODS": "probekit.baselines.config",
    "run_baseline": "probekit.baselines.train",
    "run_baselines": "probekit.baselines.train",
    "run_path": "probekit.baselines.records",
    "read_run": "probekit.baselines.records",
    "write_run": "probekit.baselines.records",
    "BaselineRun": "probekit.baselines.records",
    "word_metrics": "probekit.baselines.train",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'probekit.baselines' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
