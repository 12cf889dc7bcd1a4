"""Extraction precision: what ``auto`` means on the machine that runs, and the autocast context for the others.

The store key records the precision that runs (:meth:`probekit.activations.extract.Extractor.settings`), never the
one asked for, so ``auto`` on two machines gives two keys when it resolves to two precisions.
"""
from __future__ import annotations

import contextlib

from probekit.errors import ConfigError, unknown_name

#: Extraction precisions: ``auto`` resolves to one of the others on the machine that runs (:func:`resolve_precision`).
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: Whether ``auto`` takes bf16 where the hardware has bf16 matrix units. Off: bf16 moved a quickstart probe accuracy by
#: 0.26 points (more than the 0.1 allowed; docs/design.md 19), so bf16 is an option, not the default.
AUTO_BF16 = False


def bf16_matrix_units(device: str) -> bool:
    """Whether ``device`` multiplies bf16 matrices in hardware, as torch reports it: a CUDA GPU with bf16; a CPU
    with AMX tiles or AVX512-BF16 (oneDNN's bf16 kernels). Elsewhere bf16 is emulated and slower than fp32."""
    import torch

    if device.startswith("cuda"):
        return bool(torch.cuda.is_bf16_supported())
    if device.startswith("cpu"):
        cpu = getattr(torch, "cpu", None)
        return any(bool(getattr(cpu, f, lambda: False)()) for f in ("_is_amx_tile_supported",
                                                                     "_is_avx512_bf16_supported"))
    return False


def resolve_precision(device: str, precision: str | None = "auto") -> str:
    """The precision extraction really runs in on ``device``: ``fp32`` (no autocast), ``bf16`` or ``fp16`` (autocast).

    ``auto`` (or None) is fp32 unless :data:`AUTO_BF16` is set and the device has bf16 matrix units. An explicit
    ``bf16`` on a GPU without bf16 is an error, not a silent fp16: the store key records what runs.
    """
    if precision is None:
        precision = "auto"
    if precision not in PRECISIONS:
        raise unknown_name("precision", precision, PRECISIONS, ConfigError)
    if precision == "auto":
        return "bf16" if AUTO_BF16 and bf16_matrix_units(device) else "fp32"
    if precision == "bf16" and device.startswith("cuda") and not bf16_matrix_units(device):
        raise ConfigError(f"precision bf16 asked for, but the GPU {device} has no bf16: use fp16 or fp32.")
    if precision != "fp32" and not device.startswith(("cuda", "cpu")):
        raise ConfigError(f"precision {precision} (autocast) is supported on cpu and cuda, not on {device}: "
                          "use fp32.")
    return precision


def autocast(device: str, precision: str):
    """A no-op for fp32, else ``torch.autocast`` on the device's type in the precision's dtype."""
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.split(":")[0], dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
