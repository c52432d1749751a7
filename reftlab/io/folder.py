"""Save a ReFT model to a folder and load one back: the steps ``ReftModel.save``/``load`` run.

Saving writes everything into a temporary folder (native or pyreft files, the LoRA
adapter when the model is a peft model, the base parameters trained alongside such as a
classifier head, the README model card) and renames it into place, so a failed save
leaves the previous checkpoint intact. Loading accepts a
native folder, a pyreft folder, or a Hub repo id (through the hub client's cache);
it validates the base model before building anything. ``load_base`` loads the base
model a native checkpoint records (``ReftModel.load(dir)`` without a model).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from ..atomic import atomic_folder
from ..attach import ReftLike
from ..data.prompt_format import PromptFormat
from ..interventions import Intervention
from ..models.peft import is_peft_model
from ..models.source import classify
from ..sites import Site
from .base_params import (
    BASE_FILE,
    applied,
    read_base_parameters,
    trainable_base_parameters,
    write_base_parameters,
)
from .checkpoint import build_interventions, is_native, read_native, read_safetensors, write_native
from .fingerprint import ModelIdentity, check_identity, identify
from .hub import download
from .lora import ADAPTER_CONFIG, attach_lora, write_lora
from .modelcard import CARD_FILE, model_card
from .pyreft_format import is_pyreft, read_pyreft, write_pyreft

Format = Literal["reftlab", "pyreft"]


@dataclass(frozen=True)
class LoadedReft:
    """What a checkpoint gives back: the (possibly LoRA-wrapped) model and its sites + interventions."""

    model: Any  # nn.Module: the model to hook (peft-wrapped when the checkpoint has LoRA)
    sites: list[Site]
    interventions: list[Intervention]
    identity: ModelIdentity | None
    prompt_format: PromptFormat | None = None


def save_reft(
    reft_model: ReftLike,
    target: str | os.PathLike,
    *,
    format: Format = "reftlab",
    repo_id: str | None = None,
    version: str,
    prompt_format: PromptFormat | None = None,
) -> Path:
    """Write ``reft_model`` to ``target`` atomically; returns the folder.

    ``prompt_format`` (native format only) records how training formatted prompts.
    """
    if format not in ("reftlab", "pyreft"):
        raise ValueError(f"format={format!r}: use 'reftlab' (native) or 'pyreft' (pyreft 0.1.0's layout)")
    hooked = reft_model.hooked
    keys, ivs = list(reft_model.interventions), list(reft_model.interventions.values())
    identity = identify(hooked)
    with atomic_folder(target) as tmp:
        lora = write_lora(hooked.model, tmp) if is_peft_model(hooked.model) else None
        if format == "reftlab":
            write_base_parameters(hooked.hf_model, tmp)
            write_native(
                tmp,
                keys=keys,
                config=reft_model.config,
                interventions=ivs,
                identity=identity,
                lora=lora,
                version=version,
                prompt_format=prompt_format,
            )
        else:
            write_pyreft(tmp, reft_model.sites, ivs)
            if trainable_base_parameters(hooked.hf_model):
                warnings.warn(
                    f"format='pyreft' has no safe place for trained base parameters "
                    f"({sorted(trainable_base_parameters(hooked.hf_model))[:3]}...): they are not saved; "
                    "save with format='reftlab' to keep them",
                    stacklevel=3,
                )
        sites = [
            {
                "hook": s.hook,
                "positions": None if s.positions is None else str(s.positions),
                "kind": iv.kind,
                "rank": iv.rank,
            }
            for s, iv in zip(reft_model.sites, ivs)
        ]
        (tmp / CARD_FILE).write_text(
            model_card(
                base=identity.model_source,
                architecture=identity.architecture,
                sites=sites,
                n_params=reft_model.num_intervention_parameters(),
                repo_id=repo_id,
                folder=Path(target).resolve(),
                has_lora=lora is not None,
                fmt=format,
            )
        )
    return Path(target)


def resolve_source(
    source: str | os.PathLike, *, revision: str | None = None, cache_dir: str | os.PathLike | None = None
) -> Path:
    """A local folder for ``source``: itself, or the Hub snapshot of a repo id (``models.source`` has the rule)."""
    try:
        kind, ref = classify(source, embedded=False, what="checkpoint folder")
    except NotADirectoryError:
        raise ValueError(
            f"{source} is a file; a checkpoint is a folder (reftlab_config.json + interventions.safetensors)"
        ) from None
    if kind == "folder":
        return Path(ref)
    return download(ref, revision=revision, cache_dir=cache_dir)


def base_source(folder: Path) -> ModelIdentity:
    """The base model record of a checkpoint folder that says where its base came from; errors say what to pass."""
    if not is_native(folder):
        kind = "a pyreft checkpoint" if is_pyreft(folder) else "not a reftlab checkpoint"
        raise ValueError(
            f"{folder} is {kind}, which records no base model: pass it (ReftModel.load(dir, model); "
            "on the command line --model NAME)"
        )
    identity = read_native(folder).identity
    if identity.source is None:
        raise ValueError(
            f"checkpoint {folder} was trained on an in-memory {identity.architecture} whose source was not "
            "recorded; pass the base model: ReftModel.load(dir, model) (on the command line --model NAME)"
        )
    return identity


def load_base(
    folder: Path,
    *,
    dtype: Any = None,
    device: Any = None,
    cache_dir: str | os.PathLike | None = None,
    device_map: Any = None,
    quantization: Any = None,
    offload_folder: str | os.PathLike | None = None,
) -> Any:
    """Load the base model (and its tokenizer) that the checkpoint in ``folder`` records.

    ``device_map``, ``offload_folder`` and ``quantization`` go to ``load_model`` (a causal LM's base only).

    ``dtype`` defaults to the dtype the base had when saved. A sequence classifier is
    rebuilt on the recorded body with as many labels as the saved head has (the head's
    values come in with the checkpoint). A base folder that no longer exists, or a Hub id
    that is not cached offline, is an error naming it and the fix.
    """
    from ..models.classifier import load_classifier
    from ..models.loading import load_model

    identity = base_source(folder)
    source = identity.model_source
    options: dict[str, Any] = {
        "revision": source.revision,
        # A quantized load picks its own compute dtype (bfloat16 under bitsandbytes) unless told.
        "dtype": dtype if dtype is not None or quantization is not None else identity.dtype,
        "cache_dir": cache_dir,
    }
    try:
        if identity.architecture.endswith("ForSequenceClassification"):
            if device_map is not None or quantization is not None or offload_folder is not None:
                raise ValueError(
                    f"checkpoint {folder} was trained on a sequence classifier; device_map= and quantization= apply "
                    "to causal LMs here: load the classifier yourself and pass it (ReftModel.load(dir, model))"
                )
            hooked = load_classifier(str(source.ref), num_labels=saved_num_labels(folder), **options)
            return hooked if device is None else hooked.to(device)
        return load_model(
            str(source.ref),
            device=device,
            device_map=device_map,
            quantization=quantization,
            offload_folder=offload_folder,
            **options,
        )
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"checkpoint {folder} records its base model as {source.name!r}, which does not load here: {e}. "
            "Pass the base model yourself: ReftModel.load(dir, model) (on the command line --model NAME)"
        ) from None


def saved_num_labels(folder: Path) -> int:
    path = folder / BASE_FILE
    heads = read_safetensors(path) if path.is_file() else {}  # a head or two: small
    for name in ("score.weight", "classifier.weight", "classifier.out_proj.weight"):
        if name in heads:
            return int(heads[name].shape[0])
    raise ValueError(
        f"checkpoint {folder} was trained on a sequence classifier but holds no head weights ({BASE_FILE}); "
        "pass the base model: ReftModel.load(dir, model)"
    )


def load_reft(folder: Path, hooked: Any, *, strict: bool = False) -> LoadedReft:
    """Read and validate ``folder`` against ``hooked``; build its interventions on its device."""
    if is_native(folder):
        ckpt = read_native(folder)
        # Trained base parameters (a head) go in first, so the weights fingerprint sees the model
        # as it was saved; any failure below puts the previous values back.
        with applied(hooked.hf_model, read_base_parameters(folder, hooked.hf_model)):
            check_identity(ckpt.identity, hooked, strict=strict)
            sites = [r.site for r in ckpt.config.representations]
            _check_hooks(sites, hooked, folder)
            ivs = build_interventions(ckpt, model_dtype=hooked.dtype, device=hooked.device)
            model = attach_lora(hooked.model, folder) if ckpt.lora is not None else hooked.model
        return LoadedReft(model, sites, ivs, ckpt.identity, ckpt.prompt_format)
    if is_pyreft(folder):
        imported = read_pyreft(folder)
        model = attach_lora(hooked.model, folder) if (folder / ADAPTER_CONFIG).is_file() else hooked.model
        sites = [r.site for r in imported.config.representations]
        _check_hooks(sites, hooked, folder)
        for i, iv in enumerate(imported.interventions):
            if iv.d_model != hooked.d_model:
                raise ValueError(
                    f"pyreft checkpoint {folder}: intervention {i} expects d_model={iv.d_model}, "
                    f"but this model has d_model={hooked.d_model}"
                )
        ivs = [iv.to(hooked.device) for iv in imported.interventions]
        return LoadedReft(model, sites, ivs, None)
    raise ValueError(
        f"{folder} is not a ReFT checkpoint: expected reftlab's reftlab_config.json + interventions.safetensors, "
        "or pyreft's config.json + intkey_*.bin"
    )


def load_into(reft_model: ReftLike, folder: str | os.PathLike, *, strict: bool = False) -> None:
    """Load a native checkpoint of ``reft_model``'s own layout into its interventions, in place.

    For resuming a run: the parameters keep their identity (an optimizer holding them stays
    valid). The checkpoint must have the same intervention keys, sites and kinds; anything
    else is an error before a value is written.
    """
    folder = Path(folder)
    if not is_native(folder):
        raise FileNotFoundError(f"no reftlab checkpoint at {folder} (expected reftlab_config.json there)")
    saved = read_native(folder)
    keys = list(reft_model.interventions)
    ours = [(k, s.hook, iv.spec()) for k, s, iv in zip(keys, reft_model.sites, reft_model.interventions.values())]
    theirs = [(k, r.site.hook, r.spec()) for k, r in zip(saved.keys, saved.config.representations)]
    if ours != theirs:
        raise ValueError(
            f"checkpoint {folder} holds interventions {[t[:2] for t in theirs]}, the model has "
            f"{[o[:2] for o in ours]} (or their kinds/ranks differ); resume with the configuration it was saved from"
        )
    loaded = load_reft(folder, reft_model.hooked, strict=strict)
    with torch.no_grad():
        for mine, new in zip(reft_model.interventions.values(), loaded.interventions):
            mine.load_state_dict(new.state_dict(), strict=True)


def _check_hooks(sites: list[Site], hooked: Any, folder: Path) -> None:
    for i, site in enumerate(sites):
        if site.layer is not None and not 0 <= site.layer < hooked.n_layers:
            raise ValueError(
                f"checkpoint {folder} representations[{i}] expects layer {site.layer} (hook {site.hook!r}), "
                f"but this model has layers 0..{hooked.n_layers - 1}"
            )
        try:
            hooked.hook_point(site.hook)
        except ValueError as e:
            raise ValueError(
                f"checkpoint {folder} representations[{i}] expects hook point {site.hook!r}, "
                f"which this model lacks: {e}"
            ) from None
