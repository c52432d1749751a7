"""Writing a trained ReFT to a folder: ``config.json`` (the ReftConfig) + ``interventions.safetensors``.

Deliberately minimal and in one place: the full checkpoint format (``ReftModel.save``) can
replace ``save_trained`` without touching its callers.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .checkpoint import trainable_model_params, write_folder_atomically


def save_trained(reft_model: Any, directory: str | os.PathLike) -> Path:
    """Write the interventions (``{key}.{param}``) and any unfrozen base parameters
    (``base.{name}``) as safetensors, plus the ReftConfig as JSON; atomically."""
    tensors = dict(reft_model.interventions.state_dict())
    tensors.update({f"base.{k}": p.data for k, p in trainable_model_params(reft_model).items()})
    return write_folder_atomically(Path(directory), {
        "interventions.safetensors": tensors,
        "config.json": reft_model.config.to_json(),
    })
