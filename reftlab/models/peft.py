"""What reftlab knows about peft: is a model peft-wrapped, what is under it, which parameters are LoRA's.

A ``peft.PeftModel`` wraps a ``PreTrainedModel`` (``get_base_model()``) and keeps its modules
under ``base_model.model.`` (``PREFIX``); a LoRA-wrapped linear module keeps the base weight in
``base_layer`` and adds ``lora_A`` / ``lora_B`` (their parameters are named ``...lora_A.default.weight``).
transformers' own adapter support (``model.add_adapter``) puts the same modules into a plain
``PreTrainedModel`` and gives it a ``peft_config`` too, without a wrapper: ``has_adapters`` holds
for both, ``is_peft_model`` only for the wrapper.

Everything here reads attributes and names; nothing imports peft (an optional extra that takes
seconds to import). The one home for this knowledge: checkpoints (``reftlab.io``), merging,
fingerprints and ``get_reft_model`` ask these functions.

>>> from torch import nn
>>> has_adapters(nn.Linear(2, 2)), base_model(m := nn.Linear(2, 2)) is m
(False, True)
>>> is_lora_parameter("base_model.model.model.layers.2.self_attn.o_proj.lora_A.default.weight")
True
>>> base_name("base_model.model.model.layers.2.self_attn.o_proj.base_layer.weight")
'base_model.model.model.layers.2.self_attn.o_proj.weight'
>>> strip_prefix("base_model.model.model.layers[15]")
'model.layers[15]'
"""

from __future__ import annotations

from torch import Tensor, nn

PREFIX = "base_model.model."  # where a PeftModel keeps the wrapped model's modules (as paths and names)
_LORA = "lora_"  # every LoRA tensor's name holds it: lora_A, lora_B, lora_embedding_A, lora_magnitude_vector


def has_adapters(model: nn.Module) -> bool:
    """True if ``model`` carries peft adapters: a ``PeftModel``, or an HF model with adapters added in place."""
    return hasattr(model, "peft_config")


def is_peft_model(model: nn.Module) -> bool:
    """True if ``model`` is a peft wrapper around a base model (``get_base_model()``), as ``PeftModel`` is."""
    return has_adapters(model) and callable(getattr(model, "get_base_model", None))


def base_model(model: nn.Module) -> nn.Module:
    """The model a peft wrapper wraps (its modules, LoRA layers included); ``model`` itself otherwise."""
    get_base = getattr(model, "get_base_model", None)
    if callable(get_base):
        base = get_base()
        if isinstance(base, nn.Module):
            return base
    return model


def is_lora_parameter(name: str) -> bool:
    """True for a LoRA tensor's parameter name (``...lora_A.default.weight``), False for a base weight."""
    return _LORA in name


def base_name(name: str) -> str:
    """A parameter's name with peft's ``base_layer`` step removed: the name it has on the plain model's modules."""
    return name.replace(".base_layer.", ".")


def strip_prefix(path: str) -> str:
    """A module path or parameter name on a ``PeftModel`` as a path on the model it wraps."""
    return path.removeprefix(PREFIX)


def lora_parameters(model: nn.Module) -> dict[str, Tensor]:
    """Every LoRA parameter of ``model`` by name (empty for a model without adapters)."""
    return {n: p for n, p in model.named_parameters() if is_lora_parameter(n)}


def lora_modules(model: nn.Module) -> list[str]:
    """The modules LoRA wraps (each holding a ``base_layer``), as paths on ``model``, in module order."""
    return [n for n, m in model.named_modules() if "base_layer" in m._modules and any(_LORA in c for c in m._modules)]


def freeze_base(model: nn.Module) -> None:
    """Turn ``requires_grad`` off for every parameter of ``model`` except LoRA's when it carries adapters."""
    keep_lora = has_adapters(model)
    for name, p in model.named_parameters():
        if not (keep_lora and is_lora_parameter(name)):
            p.requires_grad_(False)
