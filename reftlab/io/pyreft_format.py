"""pyreft 0.1.0's checkpoint layout, read and written without importing pyreft.

A pyreft folder holds ``config.json`` (pyvene's ``IntervenableConfig``: representations as
14-field lists, ``intervention_types`` as class-path strings, ``sorted_keys``) and one
``intkey_<key>.bin`` per intervention (``torch.save`` of its state dict). Keys per kind:

=========  ======================================================================
LoReFT     ``weight`` (r x d), ``bias`` (r), ``rotate_layer`` (d x r, = R^T)
DiReFT     ``rotate_layer.parametrizations.weight.{original (d x r), 0.base (d x d)}``,
           ``learned_source.{weight, bias}``, ``embed_dim``, ``interchange_dim``
ConsReFT,  ``rotate_layer.parametrizations...`` as DiReFT, ``learned_source`` (r, = b),
LobiReFT   ``embed_dim``, ``interchange_dim``
NoReFT,    ``proj_layer.{weight, bias}`` (P, c), ``learned_source.{weight, bias}``,
NodiReFT   ``embed_dim``, ``interchange_dim``
=========  ======================================================================

The orthogonal kinds keep torch's ``orthogonal`` parametrization state; R^T is recomputed
with torch's own parametrization module. Reading uses ``torch.load(weights_only=True)``
only, and class paths are matched by class name against ``PYREFT_KINDS``, never imported.
pyreft stores no positions, dropout or activation: imports get positions per call,
dropout 0 and the linear activation (pyreft's defaults).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn

from ..config import ReftConfig
from ..interventions import Intervention, build
from ..sites import COMPONENTS, Site

PYREFT_KINDS = {
    "LoreftIntervention": "loreft",
    "NoreftIntervention": "noreft",
    "DireftIntervention": "direft",
    "NodireftIntervention": "nodireft",
    "ConsreftIntervention": "consreft",
    "LobireftIntervention": "lobireft",
}
_KIND_CLASS = {v: k for k, v in PYREFT_KINDS.items()}
_FIELDS = (
    "layer",
    "component",
    "unit",
    "max_number_of_units",
    "low_rank_dimension",
    "intervention_type",
    "intervention",
    "subspace_partition",
    "group_key",
    "intervention_link_key",
    "moe_key",
    "source_representation",
    "hidden_source_representation",
    "latent_dim",
)
_CLASS = re.compile(r"^<class '([\w.]+)'>$")
_ROT = "rotate_layer.parametrizations.weight."


@dataclass(frozen=True)
class PyreftImport:
    config: ReftConfig
    interventions: list[Intervention]


def is_pyreft(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(folder.glob("intkey_*.bin"))


def read_pyreft(folder: Path) -> PyreftImport:
    """Import a pyreft folder as reftlab interventions (parameters in the saved dtype)."""
    cfg = json.loads((folder / "config.json").read_text())
    for field in ("representations", "intervention_types", "sorted_keys"):
        if field not in cfg:
            raise ValueError(f"{folder / 'config.json'} has no {field!r}: not a pyreft/pyvene checkpoint")
    reps, types, keys = cfg["representations"], cfg["intervention_types"], cfg["sorted_keys"]
    if not (len(reps) == len(types) == len(keys)):
        raise ValueError(f"{folder / 'config.json'}: {len(reps)} representations, {len(types)} types, {len(keys)} keys")
    sites, ivs = [], []
    links: dict[Any, Intervention] = {}  # pyreft's intervention_link_key -> the shared intervention
    for rep, type_str, key in zip(reps, types, keys):
        rep = dict(zip(_FIELDS, rep)) if isinstance(rep, list) else dict(rep)
        kind = _kind_of(type_str)
        sites.append(_site(rep))
        link = rep.get("intervention_link_key")
        if link is not None and link in links:
            ivs.append(links[link])
            continue
        path = folder / f"intkey_{key}.bin"
        if not path.is_file():
            raise FileNotFoundError(f"pyreft checkpoint {folder} lacks {path.name} for intervention {key!r}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        iv = _to_reftlab(kind, state, path)
        ivs.append(iv)
        if link is not None:
            links[link] = iv
    config = ReftConfig(representations=[{"hook": s.hook, "intervention": iv.spec()} for s, iv in zip(sites, ivs)])
    return PyreftImport(config=config, interventions=ivs)


def write_pyreft(folder: Path, sites: Sequence[Site], interventions: Sequence[Intervention]) -> list[str]:
    """Write pyreft's ``config.json`` and ``intkey_*.bin`` files; returns the pyreft keys."""
    reps, types, keys = [], [], []
    counts: dict[str, int] = {}
    for i, (site, iv) in enumerate(zip(sites, interventions)):
        if iv.kind not in _KIND_CLASS:
            raise ValueError(f"intervention {i} is a {iv.kind!r}, which pyreft has no class for")
        layer, component = _pyreft_component(site, i)
        proposal = (
            f"comp_{component.replace('.', '_')}_unit_pos_nunit_1"
            if "." in component
            else f"layer_{layer}_comp_{component}_unit_pos_nunit_1"
        )
        counts[proposal] = counts.get(proposal, -1) + 1
        key = f"{proposal}#{counts[proposal]}"
        reps.append([layer, component, "pos", 1, iv.rank] + [None] * 9)
        types.append(f"<class 'pyreft.interventions.{_KIND_CLASS[iv.kind]}'>")
        keys.append(key)
        torch.save(_to_pyreft(iv), folder / f"intkey_{key}.bin")
    import transformers

    cfg = {
        "intervention_constant_sources": [True] * len(keys),
        "intervention_dimensions": [iv.d_model for iv in interventions],
        "intervention_types": types,
        "mode": "parallel",
        "representations": reps,
        "sorted_keys": keys,
        "transformers_version": transformers.__version__,
    }
    (folder / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    return keys


def _kind_of(type_str: str) -> str:
    m = _CLASS.match(str(type_str))
    name = (m.group(1) if m else str(type_str)).rsplit(".", 1)[-1]
    if name not in PYREFT_KINDS:
        raise ValueError(
            f"pyreft intervention type {type_str!r} is not supported; supported: {', '.join(PYREFT_KINDS)}"
        )
    return PYREFT_KINDS[name]


def _site(rep: dict[str, Any]) -> Site:
    if rep.get("unit", "pos") != "pos":
        raise ValueError(f"pyreft representation with unit={rep['unit']!r}: reftlab imports unit='pos' only")
    component = rep["component"]
    if component in COMPONENTS:
        return Site.from_pyreft(layer=int(rep["layer"]), component=component)
    if isinstance(component, str) and re.search(r"\.(input|output)$", component):
        return Site(hook=component)
    raise ValueError(
        f"pyreft component {component!r} is not supported; use one of {', '.join(COMPONENTS)} or a module path"
    )


def _pyreft_component(site: Site, i: int) -> tuple[int, str]:
    if site.layer is not None and site.component is not None:
        return site.layer, site.component
    if re.search(r"\.(input|output)$", site.hook):
        m = re.search(r"layers\[(\d+)\]", site.hook)
        return (int(m.group(1)) if m else 0), site.hook
    raise ValueError(f"intervention {i} sits at {site.hook!r}, which has no pyreft component name")


def _rotation_holder(d: int, r: int) -> nn.Module:
    holder = nn.Module()
    holder.weight = nn.Parameter(torch.eye(d, r))
    return nn.utils.parametrizations.orthogonal(holder)


def _rotate_from_state(state: dict[str, Tensor]) -> Tensor:
    """R^T (d x r) from pyreft's saved orthogonal parametrization, via torch's own module."""
    original = state[_ROT + "original"]
    holder = _rotation_holder(*original.shape)
    holder.load_state_dict({k.removeprefix("rotate_layer."): v.float() for k, v in state.items() if k.startswith(_ROT)})
    with torch.no_grad():
        weight = cast(Tensor, holder.weight)  # the parametrization computes it as a plain Tensor
        return weight.detach().clone()


def _to_reftlab(kind: str, state: dict[str, Tensor], path: Path) -> Intervention:
    try:
        if kind == "loreft":
            rot, params = state["rotate_layer"], {"weight": state["weight"], "bias": state["bias"]}
        elif kind in ("direft", "consreft", "lobireft"):
            rot = _rotate_from_state(state)
            params = (
                {"weight": state["learned_source.weight"], "bias": state["learned_source.bias"]}
                if kind == "direft"
                else {"bias": state["learned_source"]}
            )
        else:
            rot = None
            params = {
                "proj": state["proj_layer.weight"],
                "weight": state["learned_source.weight"],
                "bias": state["learned_source.bias"],
            }
            if kind == "noreft" and "proj_layer.bias" in state:
                params["proj_b"] = state["proj_layer.bias"]
    except KeyError as e:
        raise ValueError(f"{path}: a pyreft {kind} state dict needs tensor {e}; has {sorted(state)}") from None
    if rot is not None:
        params["rotation"] = rot.T
    d, r = rot.shape if rot is not None else params["proj"].T.shape
    spec: dict[str, Any] = {"kind": kind, "d_model": int(d), "rank": int(r), "dtype": None}
    if kind == "noreft":
        spec["proj_bias"] = "proj_b" in params
    with torch.random.fork_rng(devices=[]):
        iv = build(spec)
    dtype = params.get("weight", params["bias"]).dtype
    iv = iv.to(dtype)
    iv.load_state_dict({k: v.to(dtype) for k, v in params.items()}, strict=True)
    return iv


def _to_pyreft(iv: Intervention) -> dict[str, Tensor]:
    state = {k: v.detach().cpu() for k, v in iv.state_dict().items()}
    dims = {"embed_dim": torch.tensor(iv.d_model), "interchange_dim": torch.tensor(iv.d_model)}
    if iv.kind == "loreft":
        return {
            "weight": state["weight"],
            "bias": state["bias"],
            "rotate_layer": iv.subspace().detach().cpu().float().T.contiguous(),
        }
    if iv.kind in ("noreft", "nodireft"):
        proj_b = state.get("proj_b", torch.zeros(iv.rank, dtype=state["proj"].dtype))
        out = {
            **dims,
            "proj_layer.weight": state["proj"],
            "learned_source.weight": state["weight"],
            "learned_source.bias": state["bias"],
        }
        if iv.kind == "nodireft" or "proj_b" in state:
            out["proj_layer.bias"] = proj_b
        return out
    holder = _rotation_holder(iv.d_model, iv.rank)
    with torch.no_grad():
        holder.weight = iv.subspace().detach().cpu().float().T.contiguous()  # right_inverse fills original/base
    rot = {"rotate_layer." + k: v.clone() for k, v in holder.state_dict().items()}
    if iv.kind == "direft":
        return {**dims, **rot, "learned_source.weight": state["weight"], "learned_source.bias": state["bias"]}
    return {**dims, **rot, "learned_source": state["bias"].float()}
