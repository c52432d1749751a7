"""reftlab's native checkpoint: one JSON config plus one safetensors file.

Layout of a folder (``CONFIG_FILE``, ``WEIGHTS_FILE``)::

    reftlab_config.json        format, format_version, reftlab_version,
                               base_model (see ``fingerprint.ModelIdentity``: name, source,
                                 revision, dtype, architecture, sizes, fingerprints),
                               prompt_format: null or {"chat_template": bool|str,
                                 "system_prompt": str|null} (how training formatted prompts),
                               representations: [{key, hook, positions, intervention, tied_to}],
                               lora: null or {"adapter_config": ..., "weights": ...}
    interventions.safetensors  "interventions.<key>.<parameter>" -> tensor

``format_version`` 2 added ``prompt_format`` and the base model's name, source,
revision and dtype; version-1 folders still load (no prompt format; the base model's
source inferred from ``name_or_path``).

``intervention`` is the kind's ``.spec()`` (every constructor argument); kinds resolve
through the registry (``reftlab.interventions.build``), never a class path. Tensors are
the raw parameters in their own dtype (for orthogonal kinds the free ``rotation``, r x d;
nothing d x d), so loading is bitwise exact. An intervention shared by several
representations is stored once; the others name it in ``tied_to``. Reading never
unpickles and rejects unknown fields, missing fields and newer format versions.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..config import ReftConfig
from ..data.prompt_format import PromptFormat
from ..interventions import Intervention, build
from .fingerprint import ModelIdentity

FORMAT_NAME = "reftlab"
FORMAT_VERSION = 2
CONFIG_FILE = "reftlab_config.json"
WEIGHTS_FILE = "interventions.safetensors"
PREFIX = "interventions."
_TOP_V1 = ("format", "format_version", "reftlab_version", "base_model", "representations", "lora")
_TOP = (*_TOP_V1[:4], "prompt_format", *_TOP_V1[4:])
_REP = ("key", "hook", "positions", "intervention", "tied_to")


@dataclass(frozen=True, kw_only=True)
class NativeCheckpoint:
    """A parsed, validated checkpoint folder (tensors still on the CPU)."""

    folder: Path
    reftlab_version: str
    identity: ModelIdentity
    config: ReftConfig
    keys: tuple[str, ...]
    tied_to: tuple[str | None, ...]
    tensors: dict[str, dict[str, torch.Tensor]]
    lora: dict[str, str] | None
    prompt_format: PromptFormat | None = None
    format_version: int = FORMAT_VERSION


def write_native(
    folder: Path,
    *,
    keys: Sequence[str],
    config: ReftConfig,
    interventions: Sequence[Intervention],
    identity: ModelIdentity,
    lora: dict[str, str] | None,
    version: str,
    prompt_format: PromptFormat | None = None,
) -> None:
    """Write ``CONFIG_FILE`` and ``WEIGHTS_FILE`` into ``folder`` (the caller makes it atomic)."""
    owner: dict[int, str] = {}
    reps, tensors = [], {}
    for key, rep, iv in zip(keys, config.representations, interventions):
        tied = owner.get(id(iv))
        if tied is None:
            owner[id(iv)] = key
            for name, t in iv.state_dict().items():
                tensors[f"{PREFIX}{key}.{name}"] = t.detach().to("cpu").contiguous()
        reps.append({"key": key, **rep.site.to_json(), "intervention": iv.spec(), "tied_to": tied})
    data = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "reftlab_version": version,
        "base_model": identity.to_json(),
        "prompt_format": None if prompt_format is None else prompt_format.to_json(),
        "representations": reps,
        "lora": lora,
    }
    (folder / CONFIG_FILE).write_text(json.dumps(data, indent=2) + "\n")
    save_file(tensors, str(folder / WEIGHTS_FILE), metadata={"format": "pt", "reftlab_format": FORMAT_NAME})


def is_native(folder: Path) -> bool:
    return (folder / CONFIG_FILE).is_file()


def read_native(folder: Path) -> NativeCheckpoint:
    """Parse and validate a folder; errors name the file, the field and the fix."""
    cfg_path = folder / CONFIG_FILE
    try:
        data = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{cfg_path} is not valid JSON ({e}); the checkpoint is corrupted, save it again") from None
    if not isinstance(data, dict):
        raise ValueError(f"{cfg_path} must hold a JSON object, got {type(data).__name__}")
    if data.get("format") != FORMAT_NAME:
        raise ValueError(f"{cfg_path}: format={data.get('format')!r}, expected {FORMAT_NAME!r}")
    version = data.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"{cfg_path}: format_version={version!r} must be a positive int")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{cfg_path} has format_version {version}, written by reftlab {data.get('reftlab_version')}; this reftlab "
            f"reads format_version <= {FORMAT_VERSION}: upgrade reftlab (pip install -U reftlab)"
        )
    _exact_keys(data, _TOP if version >= 2 else _TOP_V1, f"{cfg_path} (format_version {version})")
    try:
        identity = ModelIdentity.from_json(data["base_model"], version)
        raw_format = data.get("prompt_format")
        prompt_format = None if raw_format is None else PromptFormat.from_json(raw_format)
    except ValueError as e:
        raise ValueError(f"{cfg_path}: {e}") from None
    reps = data["representations"]
    if not isinstance(reps, list) or not reps:
        raise ValueError(f"{cfg_path}: 'representations' must be a non-empty list")
    for i, rep in enumerate(reps):
        _exact_keys(rep, _REP, f"{cfg_path} representations[{i}]")
    keys = tuple(r["key"] for r in reps)
    if len(set(keys)) != len(keys):
        raise ValueError(f"{cfg_path}: representation keys repeat: {list(keys)}")
    for r in reps:
        if r["tied_to"] is not None and r["tied_to"] not in keys:
            raise ValueError(f"{cfg_path}: {r['key']} is tied_to unknown key {r['tied_to']!r}")
    config = ReftConfig(
        representations=[
            {"hook": r["hook"], "positions": r["positions"], "intervention": r["intervention"]} for r in reps
        ]
    )
    tensors = _read_tensors(
        folder / WEIGHTS_FILE,
        [k for k, r in zip(keys, reps) if r["tied_to"] is None],
        specs={r["key"]: r["intervention"] for r in reps},
    )
    lora = data["lora"]
    if lora is not None and (not isinstance(lora, dict) or set(lora) != {"adapter_config", "weights"}):
        raise ValueError(f"{cfg_path}: 'lora' must be null or {{'adapter_config', 'weights'}}, got {lora!r}")
    return NativeCheckpoint(
        folder=folder,
        reftlab_version=str(data["reftlab_version"]),
        identity=identity,
        config=config,
        keys=keys,
        tied_to=tuple(r["tied_to"] for r in reps),
        tensors=tensors,
        lora=lora,
        prompt_format=prompt_format,
        format_version=version,
    )


def build_interventions(
    ckpt: NativeCheckpoint, *, model_dtype: torch.dtype, device: torch.device
) -> list[Intervention]:
    """Rebuild every intervention from its spec and load its saved parameters exactly."""
    built: dict[str, Intervention] = {}
    out = []
    for key, rep, tied in zip(ckpt.keys, ckpt.config.representations, ckpt.tied_to):
        if tied is not None:
            out.append(built[tied])
            continue
        with torch.random.fork_rng(devices=[]):  # the random init is overwritten: leave the RNG alone
            iv = build(rep.spec())
        state = ckpt.tensors[key]
        saved_dtype = next(iter(state.values())).dtype if state else model_dtype
        iv = iv.to(dtype=iv.requested_dtype or saved_dtype)
        expected = {n: tuple(t.shape) for n, t in iv.state_dict().items()}
        got = {n: tuple(t.shape) for n, t in state.items()}
        if expected != got:
            raise ValueError(
                f"{ckpt.folder / WEIGHTS_FILE}: tensors of {key!r} are {got}, but its spec "
                f"{rep.spec()} needs {expected}; the checkpoint is inconsistent"
            )
        iv.load_state_dict(state, strict=True)
        built[key] = iv.to(device)
        out.append(built[key])
    return out


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint's safetensors file; a clear error when it is missing or damaged."""
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint weights {path} are missing; the folder is incomplete, save it again")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(
            f"{path} is unreadable (truncated or corrupted safetensors: {e}); save the checkpoint again"
        ) from None


def _read_tensors(
    path: Path, keys: list[str], specs: dict[str, Any] | None = None
) -> dict[str, dict[str, torch.Tensor]]:
    flat = read_safetensors(path)
    out: dict[str, dict[str, torch.Tensor]] = {k: {} for k in keys}
    for name, t in flat.items():
        key, _, param = name.removeprefix(PREFIX).partition(".")  # keys hold no dots; params may (nested kinds)
        if not name.startswith(PREFIX) or key not in out:
            raise ValueError(
                f"{path} holds an unexpected tensor {name!r}; expected keys under {PREFIX}<{'|'.join(keys)}>"
            )
        out[key][param] = t
    empty = [k for k, v in out.items() if not v and _has_tensors((specs or {}).get(k))]
    if empty:
        raise ValueError(f"{path} has no tensors for {empty}; the checkpoint is incomplete")
    return out


def _exact_keys(data: Any, expected: Sequence[str], where: str) -> None:
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a JSON object")
    missing, extra = sorted(set(expected) - set(data)), sorted(set(data) - set(expected))
    if missing or extra:
        raise ValueError(
            f"{where}: missing fields {missing}, unknown fields {extra}; expected exactly {list(expected)}"
        )


def _has_tensors(spec: Any) -> bool:
    """Whether an intervention built from ``spec`` saves any tensor (vanilla and zero ablation save none)."""
    if not isinstance(spec, dict):
        return True
    try:
        with torch.random.fork_rng(devices=[]):
            return bool(build(spec).state_dict())
    except (TypeError, ValueError):
        return True  # a bad spec is reported where the interventions are built
