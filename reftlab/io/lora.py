"""The LoRA part of a ReFT + LoRA model, kept in peft's own format next to the ReFT part.

``write_lora`` calls peft's ``save_pretrained`` (``adapter_config.json`` +
``adapter_model.safetensors``), so ``peft.PeftModel.from_pretrained(base, folder)`` loads
it alone. ``attach_lora`` puts it back: it wraps a plain HF model with peft, or loads the
weights into a peft model that already has a matching adapter.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from torch import nn

from ..models.peft import is_peft_model

if TYPE_CHECKING:  # peft takes seconds to import; the functions import it when they need it
    from peft import PeftModel

ADAPTER_CONFIG, ADAPTER_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"


def write_lora(model: nn.Module, folder: Path) -> dict[str, str]:
    """Save the peft adapter of ``model`` into ``folder``; returns the file record for the config."""
    peft_model = cast("PeftModel", model)  # the caller checked is_peft_model(model)
    adapters = list(peft_model.peft_config)
    if adapters != ["default"]:
        raise ValueError(f"reftlab saves one peft adapter named 'default'; this model has {adapters}")
    peft_model.save_pretrained(str(folder), safe_serialization=True)
    (folder / "README.md").unlink(missing_ok=True)  # peft's card; reftlab writes its own
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        if not (folder / name).is_file():
            raise RuntimeError(f"peft's save_pretrained did not write {name} into {folder}")
    return {"adapter_config": ADAPTER_CONFIG, "weights": ADAPTER_WEIGHTS}


def attach_lora(model: nn.Module, folder: Path) -> nn.Module:
    """``model`` with the adapter in ``folder``: peft-wrapped if plain, weights loaded if already peft."""
    from peft import LoraConfig, PeftModel, set_peft_model_state_dict
    from safetensors.torch import load_file

    if not is_peft_model(model):
        return PeftModel.from_pretrained(model, str(folder), is_trainable=True)
    saved = LoraConfig.from_pretrained(str(folder))
    have = cast(PeftModel, model).peft_config.get("default")  # is_peft_model(model) holds here
    for field in ("r", "lora_alpha", "target_modules", "layers_to_transform", "use_rslora"):
        if have is None or _norm(getattr(saved, field)) != _norm(getattr(have, field)):
            raise ValueError(
                f"the checkpoint's LoRA adapter has {field}={getattr(saved, field)!r}, but the model's peft adapter has "
                f"{getattr(have, field, None)!r}; pass the plain base model and let ReftModel.load wrap it"
            )
    result = set_peft_model_state_dict(model, load_file(str(folder / ADAPTER_WEIGHTS)))
    unexpected = list(getattr(result, "unexpected_keys", None) or [])  # torch's load result (peft types it loosely)
    if unexpected:
        raise ValueError(f"LoRA weights in {folder} do not fit the model: unexpected {unexpected[:4]}")
    return model


def _norm(value: Any) -> Any:
    return sorted(value) if isinstance(value, (set, list, tuple)) else value
