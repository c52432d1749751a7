"""Quantized frozen bases: short names for transformers' quantization configs, and what a model carries.

``load_model(name, quantization=...)`` accepts

- ``"nf4"`` / ``"fp4"``: bitsandbytes 4-bit weights (double quantization), computing in the
  load ``dtype`` (default bfloat16); ``"int8"``: bitsandbytes LLM.int8(). CUDA GPUs.
- ``"torchao-int8"``: torchao's weight-only int8 (``Int8WeightOnlyConfig``): int8 weights
  with per-row scales, activations in the load dtype. Runs on the CPU and on GPUs.
- any transformers quantization config object (``BitsAndBytesConfig``, ``TorchAoConfig``,
  ``QuantoConfig``, ...), passed through to ``from_pretrained`` as it is.

Only the frozen base is quantized: interventions keep the compute dtype and are trained as
usual, and the quantized ``Linear`` modules stay at their paths, so every hook point taps
the same module it taps on the full-precision model.

    >>> quantization_config("fp8")
    Traceback (most recent call last):
    ValueError: quantization='fp8' is not one of nf4, fp4, int8, torchao-int8; or pass a transformers quantization config (BitsAndBytesConfig, TorchAoConfig, ...)
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch
from torch import nn

BITSANDBYTES = ("nf4", "fp4", "int8")
NAMES = (*BITSANDBYTES, "torchao-int8")


def quantization_config(spec: Any, dtype: torch.dtype | str | None = None) -> Any:
    """The transformers config for ``spec`` (a name above, or a config object, returned as is)."""
    if not isinstance(spec, str):
        if not hasattr(spec, "quant_method"):
            raise ValueError(
                f"quantization={spec!r} is neither a name ({', '.join(NAMES)}) nor a transformers quantization config"
            )
        return spec
    if spec not in NAMES:
        raise ValueError(
            f"quantization={spec!r} is not one of {', '.join(NAMES)}; "
            "or pass a transformers quantization config (BitsAndBytesConfig, TorchAoConfig, ...)"
        )
    if spec in BITSANDBYTES:
        _require("bitsandbytes", spec, "pip install bitsandbytes (CUDA GPUs); on a CPU use quantization='torchao-int8'")
        from transformers import BitsAndBytesConfig

        if spec == "int8":
            return BitsAndBytesConfig(load_in_8bit=True)
        compute = dtype if isinstance(dtype, torch.dtype) else torch.bfloat16
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=spec,
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute,
        )
    _require("torchao", spec, "pip install 'reftlab[quant]' (torchao)")
    from torchao.quantization import Int8WeightOnlyConfig
    from transformers import TorchAoConfig

    return TorchAoConfig(Int8WeightOnlyConfig())


def default_dtype(spec: Any) -> torch.dtype:
    """The load dtype when none is given: bfloat16 under bitsandbytes (its compute dtype), else float32."""
    method = spec if isinstance(spec, str) else str(_value(getattr(spec, "quant_method", "")))
    return torch.bfloat16 if method in (*BITSANDBYTES, "bitsandbytes") else torch.float32


def describe(model: nn.Module) -> str | None:
    """A short label of how ``model``'s weights are quantized (``"bitsandbytes nf4"``), or None.

    >>> from reftlab.models import tiny_llama
    >>> describe(tiny_llama()) is None
    True
    """
    config = getattr(getattr(model, "config", None), "quantization_config", None)
    if config is None:
        return None
    data = config if isinstance(config, dict) else config.to_dict()
    method = str(_value(data.get("quant_method", "unknown")))
    if method == "bitsandbytes":
        if data.get("load_in_4bit"):
            return f"bitsandbytes {data.get('bnb_4bit_quant_type', 'fp4')}"
        return "bitsandbytes int8"
    if method == "torchao":
        kind = getattr(config, "quant_type", None) or data.get("quant_type")
        if isinstance(kind, dict):  # serialised: {"default": {"_type": "Int8WeightOnlyConfig", ...}}
            kind = kind.get("default", kind).get("_type", "")
        return f"torchao {kind if isinstance(kind, str) else type(kind).__name__}".strip()
    if method == "gguf":
        return None  # transformers dequantizes GGUF files on load: the weights are plain floats
    return method


def _value(x: Any) -> Any:
    return getattr(x, "value", x)  # transformers' QuantizationMethod is a str Enum


def _require(package: str, spec: str, fix: str) -> None:
    if importlib.util.find_spec(package) is None:
        raise ImportError(f"quantization={spec!r} needs the {package!r} package: {fix}")
