"""Where a module computes on a base dispatched by accelerate (``device_map``: sharded, offloaded).

``from_pretrained(..., device_map=...)`` records ``hf_device_map``: module-name prefixes ->
a GPU index, ``"cpu"`` or ``"disk"``. accelerate runs a module mapped to a GPU on that GPU;
a module mapped to ``"cpu"`` or ``"disk"`` keeps its weights there (``disk``: memory-mapped
files in ``offload_folder``) and runs on the *main* device, the first GPU of the map (the
CPU when the map holds only ``cpu``/``disk``). A hidden state leaves a module on its
execution device, so an intervention at a site belongs on the execution device of the
module its hook point taps.

    >>> execution_device({"model.layers.0": 0, "model.layers.1": "cpu", "lm_head": 1}, "model.layers.1.mlp")
    device(type='cuda', index=0)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

OFFLOADED = ("cpu", "disk")


def device_map_of(hf: nn.Module) -> dict[str, Any] | None:
    """The accelerate device map of a dispatched model, or None for a model in one place."""
    dmap = getattr(hf, "hf_device_map", None)
    return dict(dmap) if isinstance(dmap, Mapping) and dmap else None


def main_device(device_map: Mapping[str, Any]) -> torch.device:
    """accelerate's main device: the first mapped accelerator, else the CPU."""
    on_device = [d for d in device_map.values() if d not in OFFLOADED]
    return _device(on_device[0]) if on_device else torch.device("cpu")


def execution_device(device_map: Mapping[str, Any], module_name: str) -> torch.device:
    """Where the module called ``module_name`` runs under ``device_map`` (see the module docstring)."""
    owner = max(
        (k for k in device_map if k == "" or module_name == k or module_name.startswith(k + ".")),
        key=len,
        default=None,
    )
    if owner is None:
        return main_device(device_map)
    where = device_map[owner]
    return main_device(device_map) if where in OFFLOADED else _device(where)


def module_name(root: nn.Module, module: nn.Module) -> str:
    """The dotted name of ``module`` inside ``root``; an error if it is not there."""
    for name, m in root.named_modules():
        if m is module:
            return name
    raise ValueError(f"{type(module).__name__} is not a submodule of the {type(root).__name__}")


def _device(where: Any) -> torch.device:
    return torch.device("cuda", where) if isinstance(where, int) else torch.device(where)
