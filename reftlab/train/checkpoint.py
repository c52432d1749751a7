"""Resumable training checkpoints: safetensors for tensors, JSON for the rest, written atomically.

A checkpoint is a folder ``step-{N}`` holding

- ``tensors.safetensors``: ``intervention.{key}.{param}`` (the interventions),
  ``trainable.{name}`` (base-model parameters the user unfroze, e.g. LoRA),
  ``optimizer.{i}.{field}`` (per-parameter AdamW state), ``rng.torch`` (+ ``rng.cuda.{i}``;
  a multi-process run adds every rank's ``rng.torch.rank{r}``);
- ``state.json``: step, epoch, batch position, loss history, optimizer hyper-parameters,
  scheduler counters, Python's RNG state and the TrainConfig.

The folder is written under a temporary name and renamed into place, so a crash never
leaves a half-written ``step-N``. Nothing is unpickled on load.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..atomic import atomic_folder, write_json
from ..attach import ReftLike

STEP_PREFIX = "step-"


def trainable_model_params(reft_model: ReftLike) -> dict[str, nn.Parameter]:
    """Base-model parameters with ``requires_grad`` (LoRA, an unfrozen head), by name."""
    return {n: p for n, p in reft_model.model.named_parameters() if p.requires_grad}


def save_checkpoint(
    directory: str | os.PathLike,
    *,
    reft_model: ReftLike,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    step: int,
    state: dict[str, Any],
    keep: int = 0,
    extra_tensors: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``{directory}/step-{step}``; keep only the ``keep`` most recent (0: all).

    ``extra_tensors`` go into ``tensors.safetensors`` as they are (a multi-process run's
    per-rank RNG states, ``rng.torch.rank{r}``).
    """
    tensors: dict[str, torch.Tensor] = dict(extra_tensors or {})
    for key, t in reft_model.interventions.state_dict().items():
        tensors[f"intervention.{key}"] = t
    for name, p in trainable_model_params(reft_model).items():
        tensors[f"trainable.{name}"] = p.data
    opt = optimizer.state_dict()
    for i, st in opt["state"].items():
        for field, value in st.items():
            tensors[f"optimizer.{i}.{field}"] = value if torch.is_tensor(value) else torch.tensor(value)
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in opt["param_groups"]]
    py_state = random.getstate()
    meta = {
        **state,
        "step": step,
        "optimizer_param_groups": groups,
        "scheduler": {"last_epoch": scheduler.last_epoch, "_step_count": getattr(scheduler, "_step_count", 0)},
        "python_random": [py_state[0], list(py_state[1]), py_state[2]],
    }
    path = Path(directory) / f"{STEP_PREFIX}{step}"
    with atomic_folder(path) as tmp:
        save_file(
            {k: v.detach().contiguous().clone().cpu() for k, v in tensors.items()}, str(tmp / "tensors.safetensors")
        )
        write_json(tmp / "state.json", meta)
    if keep:
        for old in list_checkpoints(directory)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return path


def list_checkpoints(directory: str | os.PathLike) -> list[Path]:
    """``step-N`` folders of ``directory``, oldest first."""
    d = Path(directory)
    if not d.is_dir():
        return []
    found = [
        p for p in d.iterdir() if p.is_dir() and p.name.startswith(STEP_PREFIX) and p.name[len(STEP_PREFIX) :].isdigit()
    ]
    return sorted(found, key=lambda p: int(p.name[len(STEP_PREFIX) :]))


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A ``step-N`` folder as given, or the latest one inside a checkpoint directory."""
    p = Path(path)
    if (p / "state.json").is_file():
        return p
    found = list_checkpoints(p)
    if not found:
        raise FileNotFoundError(f"no checkpoint at {p}: expected a step-N folder or a folder holding step-N folders")
    return found[-1]


def load_checkpoint(
    path: str | os.PathLike, *, reft_model: ReftLike, optimizer: torch.optim.Optimizer, scheduler: Any
) -> dict[str, Any]:
    """Restore interventions, unfrozen params, optimizer, scheduler and RNG; return ``state.json``."""
    folder = resolve_checkpoint(path)
    meta = json.loads((folder / "state.json").read_text())
    tensors = load_file(str(folder / "tensors.safetensors"))
    ivs = {k[len("intervention.") :]: v for k, v in tensors.items() if k.startswith("intervention.")}
    missing, unexpected = reft_model.interventions.load_state_dict(ivs, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {folder} does not fit this model: missing {sorted(missing)}, unexpected {sorted(unexpected)}; "
            "resume with the same ReftConfig"
        )
    params = trainable_model_params(reft_model)
    saved = {k[len("trainable.") :]: v for k, v in tensors.items() if k.startswith("trainable.")}
    if set(saved) != set(params):
        raise ValueError(
            f"checkpoint {folder} has trainable base parameters {sorted(saved)}, the model {sorted(params)}"
        )
    with torch.no_grad():
        for name, value in saved.items():
            params[name].copy_(value)
    opt_state: dict[int, dict[str, Any]] = {}
    for k, v in tensors.items():
        if k.startswith("optimizer."):
            _, i, field = k.split(".", 2)
            opt_state.setdefault(int(i), {})[field] = v
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in meta["optimizer_param_groups"]]
    optimizer.load_state_dict({"state": opt_state, "param_groups": groups})
    scheduler.last_epoch = meta["scheduler"]["last_epoch"]
    scheduler._step_count = meta["scheduler"]["_step_count"]
    scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]  # the saved groups carry the current lr
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    py = meta["python_random"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    return meta
