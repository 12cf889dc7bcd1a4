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


def emulation_warning(device: str, precision: str) -> str | None:
    """A one-line warning where ``precision`` runs emulated on ``device``, correct but far slower than fp32 (the
    bf16 figures: docs/design.md 23): bf16 on a CPU without bf16 matrix units, fp16 on a CPU without AMX-FP16. None
    elsewhere."""
    import torch

    if not device.startswith("cpu"):
        return None
    if precision == "bf16" and not bf16_matrix_units(device):
        return ("precision bf16 on this CPU: correct, but it has no bf16 matrix units (AMX or AVX512-BF16), so its "
                "bf16 matmuls are emulated, about 100x slower than fp32: use fp32.")
    if precision == "fp16" and not getattr(torch.cpu, "_is_amx_fp16_supported", lambda: False)():
        return ("precision fp16 on this CPU: correct, but its fp16 matmuls are emulated and far slower than fp32 "
                "(use bf16 or fp32).")
    return None


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


#: The torch dtype (by name) of each autocast precision.
_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}


def autocast(device: str, precision: str):
    """A no-op for fp32, else ``torch.autocast`` on the device's type in the precision's dtype."""
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.split(":")[0], dtype=getattr(torch, _DTYPES[precision]))


@contextlib.contextmanager
def matmul_weights_cast(model, precision: str):
    """Hold the float32 weights and biases of ``model``'s linear layers (``nn.Linear`` and GPT-2's ``Conv1D``) in
    the autocast dtype of ``precision`` while the block runs, and give the float32 ones back after it.

    Autocast casts a frozen weight again at every call (its cast cache keeps only weights that require grad); cast
    once, the same values reach the same kernels, so the outputs are bitwise those of plain autocast
    (tests/test_precision.py). A parameter that any other module shares (a tied embedding) is left alone: it is read
    outside autocast's matmuls too. No-op for fp32.
    """
    import torch

    if precision == "fp32":
        yield model
        return
    dtype = getattr(torch, _DTYPES[precision])
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear) or type(m).__name__ == "Conv1D"]
    linear_ids = {id(m) for m in linear}
    shared = {id(p) for m in model.modules() if id(m) not in linear_ids for p in m.parameters(recurse=False)}
    swapped = {}  # id -> (parameter, its float32 data)
    for m in linear:
        for p in m.parameters(recurse=False):
            if p.dtype == torch.float32 and id(p) not in shared and id(p) not in swapped:
                swapped[id(p)] = (p, p.data)
                p.data = p.data.to(dtype)
    try:
        yield model
    finally:
        for p, data in swapped.values():
            p.data = data


@contextlib.contextmanager
def forward_context(model, device: str, precision: str):
    """How every frozen forward pass of probekit runs (extraction, the intervention, attention maps): the linear
    weights held in the autocast dtype (:func:`matmul_weights_cast`, entered first, outside inference mode), then
    ``torch.inference_mode`` and :func:`autocast`."""
    import torch

    with matmul_weights_cast(model, precision), torch.inference_mode(), autocast(device, precision):
        yield model
