"""Where a model's weights go when one device is not enough: spread over the visible GPUs (``device_map: auto``,
accelerate) and/or quantized (bitsandbytes 8/4-bit). Both need CUDA; on the CPU the error says what to use instead.
"""
from __future__ import annotations

from probekit._extras import require
from probekit.errors import ModelError, unknown_name

#: bitsandbytes quantisations the weights can be loaded in (``quantization``; CUDA only).
QUANTIZATIONS = ("8bit", "4bit")


def gpu_loading(device_map: str | None, quantization: str | None, dtype) -> dict:
    """``from_pretrained`` arguments for ``device_map`` (``auto``: layers spread over the visible GPUs) and
    ``quantization`` (bitsandbytes ``8bit``/``4bit``, computing in ``dtype``); empty when neither is asked.
    Both need CUDA: without it, a ModelError that says what to use instead."""
    if device_map is None and quantization is None:
        return {}
    import torch

    asked = " and ".join(x for x in (device_map and f"device_map={device_map}",
                                     quantization and f"quantization={quantization}") if x)
    if not torch.cuda.is_available():
        raise ModelError(f"{asked} needs a CUDA GPU, and torch sees none here (torch {torch.__version__}). On the CPU "
                         "leave them out (null) and use weights_dtype: bfloat16 to halve the memory.")
    if device_map not in (None, "auto"):
        raise unknown_name("device_map", device_map, ("auto",), ModelError)
    require("accelerate", extra="gpu", purpose=asked)
    kw: dict = {"device_map": device_map or "auto"}
    if quantization is not None:
        if quantization not in QUANTIZATIONS:
            raise unknown_name("quantization", quantization, QUANTIZATIONS, ModelError)
        require("bitsandbytes", extra="gpu", purpose=asked)
        from transformers import BitsAndBytesConfig

        kw["quantization_config"] = (BitsAndBytesConfig(load_in_8bit=True) if quantization == "8bit" else
                                     BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=dtype,
                                                        bnb_4bit_quant_type="nf4"))
    return kw
