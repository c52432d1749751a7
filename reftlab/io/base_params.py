"""Base-model parameters trained alongside the interventions (a classifier or reward head).

pyreft users unfreeze a head (``reft_model.model.score``/``classifier``) and train it with
the ReFT; its values then belong to the checkpoint. ``BASE_FILE`` holds every base
parameter that requires grad at save time (LoRA tensors excepted: peft saves those),
keyed by its name in the HF model (``score.weight``). Loading validates every name,
shape and dtype against the model before one value is written, and ``applied`` writes
them in place, restoring the previous values if anything after it fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from ..models.peft import is_lora_parameter
from .checkpoint import read_safetensors

BASE_FILE = "base_parameters.safetensors"
_META = {"format": "pt", "reftlab_format": "base_parameters"}


def trainable_base_parameters(hf_model: nn.Module) -> dict[str, Tensor]:
    """The base model's parameters that require grad (not LoRA's), by name."""
    return {n: p for n, p in hf_model.named_parameters() if p.requires_grad and not is_lora_parameter(n)}


def write_base_parameters(hf_model: nn.Module, folder: Path) -> list[str]:
    """Write ``BASE_FILE`` into ``folder`` when the base has trainable parameters; returns their names."""
    params = trainable_base_parameters(hf_model)
    if params:
        tensors = {n: p.detach().to("cpu").contiguous() for n, p in params.items()}
        save_file(tensors, str(folder / BASE_FILE), metadata=_META)
    return sorted(params)


def read_base_parameters(folder: Path, hf_model: nn.Module) -> dict[str, Tensor]:
    """The saved base parameters of ``folder`` (empty when it has none), checked against ``hf_model``."""
    path = folder / BASE_FILE
    if not path.is_file():
        return {}
    saved = read_safetensors(path)
    own = dict(hf_model.named_parameters())
    for name, t in saved.items():
        if name not in own:
            raise ValueError(
                f"{path} holds base parameter {name!r}, which this model lacks; load the checkpoint onto the "
                f"model class it was trained with ({type(hf_model).__name__} has e.g. {sorted(own)[-3:]})"
            )
        if tuple(t.shape) != tuple(own[name].shape):
            raise ValueError(
                f"{path}: base parameter {name!r} has shape {tuple(t.shape)}, the model's has "
                f"{tuple(own[name].shape)} (e.g. another num_labels); load it onto the model it was trained with"
            )
        if not t.dtype.is_floating_point:
            raise ValueError(f"{path}: base parameter {name!r} has dtype {t.dtype}; the file is not reftlab's")
    return saved


@contextmanager
def applied(hf_model: nn.Module, tensors: dict[str, Tensor]) -> Iterator[None]:
    """Copy ``tensors`` into ``hf_model``'s parameters; if the block raises, put the old values back."""
    if not tensors:
        yield
        return
    own = dict(hf_model.named_parameters())
    backup = {n: own[n].detach().clone() for n in tensors}
    with torch.no_grad():
        for n, t in tensors.items():
            own[n].copy_(t.to(device=own[n].device, dtype=own[n].dtype))
    try:
        yield
    except BaseException:
        with torch.no_grad():
            for n, t in backup.items():
                own[n].copy_(t)
        raise
