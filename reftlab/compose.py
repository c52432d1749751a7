"""Composing ReFTs: multi-layer plans, several trained ReFTs on one model, and their conflicts.

The algebra, from small to large:

- at one site, **in sequence**: two representations on the same hook run in the order
  of the config (``phi_b(phi_a(h))``); **as a sum**: the ``sum`` kind,
  ``h + sum_i dropout_i(edit_i(h))``;
- **across sites and positions**: one ``ReftConfig`` holds them all;
  ``for_layers`` writes pyreft's ``-l all`` / ``-l 3;9;18`` plans, with its
  ``share_weights`` (one intervention for the first and the last positions of a layer);
- **across trained ReFTs**: ``compose([reft_a, reft_b], model)`` puts their interventions
  on one model. Two of them on the same hook at overlapping positions are an error that
  names both, unless ``on_conflict="sequence"`` (in ``order``) or ``"sum"`` says how.

Positions overlap when either is ``all`` or per call, or both take first-k or both
last-k tokens; a first-k and a last-k site are taken as disjoint (they meet only on
prompts shorter than k + k').

This module composes ``ReftModel``s, so it sits beside ``reft_model`` in the layering
(it imports it), above ``attach``.

>>> import reftlab
>>> hooked = reftlab.load_model(reftlab.tiny_llama(), reftlab.tiny_tokenizer())
>>> cfg = for_layers("1;3", n_layers=hooked.n_layers, rank=2, positions="f1+l1", share_weights=True)
>>> a, b = reftlab.get_reft_model(hooked, cfg), reftlab.get_reft_model(hooked, cfg)
>>> both = compose({"a": a, "b": b}, hooked, on_conflict="sum")
>>> print(describe(both).splitlines()[1])
blocks.1.hook_resid_post @ f1: sum rank=4 [a + b]
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from torch import nn

from .config import ReftConfig, Representation
from .interference import interference
from .interventions import Sourced, SumOfEdits
from .models.hooked import HookedModel
from .reft_model import ReftModel
from .sites import Positions, Site, parse_layers

Conflict = Literal["error", "sequence", "sum"]
_STAGE = {
    "hook_resid_pre": 0,
    "hook_attn_in": 1,
    "attn.hook_z": 2,
    "hook_attn_out": 3,
    "hook_mlp_in": 4,
    "hook_mlp_out": 5,
    "hook_resid_post": 6,
}


def for_layers(
    layers: str | int | Sequence[int],
    *,
    n_layers: int | None = None,
    component: str = "block_output",
    kind: str = "loreft",
    rank: int = 4,
    positions: str | None = None,
    share_weights: bool = False,
    **intervention_args: Any,
) -> ReftConfig:
    """One intervention per layer (pyreft's ``-l``), split by position group like pyreft.

    With positions ``"fX+lY"`` pyreft trains separate interventions for the first and the
    last positions of each layer, unless ``share_weights``: then both groups of a layer
    share one (a ``share`` group, parameters counted and trained once).

    >>> cfg = for_layers("all", n_layers=2, rank=4, positions="f7+l7", share_weights=True)
    >>> [(str(r.site), r.share) for r in cfg.representations]  # doctest: +NORMALIZE_WHITESPACE
    [('blocks.0.hook_resid_post[f7]', 'layer_0'), ('blocks.0.hook_resid_post[l7]', 'layer_0'),
     ('blocks.1.hook_resid_post[f7]', 'layer_1'), ('blocks.1.hook_resid_post[l7]', 'layer_1')]
    """
    groups: list[str | None] = [positions]
    if positions is not None:
        p = Positions.parse(positions)
        if p.first and p.last:
            groups = [f"f{p.first}", f"l{p.last}"]
    reps = []
    for layer in parse_layers(layers, n_layers):
        for group in groups:
            rep: dict[str, Any] = {
                "layer": layer,
                "component": component,
                "positions": group,
                "intervention": {"kind": kind, "rank": rank, **intervention_args},
            }
            if share_weights and len(groups) > 1:
                rep["share"] = f"layer_{layer}"
            reps.append(rep)
    return ReftConfig(representations=reps)


def positions_overlap(a: Positions | None, b: Positions | None) -> bool:
    """Whether two position policies can edit the same token (see the module docstring)."""
    if a is None or b is None or a.all or b.all:
        return True
    return bool(a.first and b.first) or bool(a.last and b.last)


def compose(
    refts: Sequence[Any] | Mapping[str, Any],
    model: HookedModel | nn.Module,
    *,
    on_conflict: Conflict = "error",
    order: Sequence[str | int] | None = None,
    interference_threshold: float | None = 30.0,
) -> ReftModel:
    """Put several ReftModels (or checkpoint folders) on ONE model, as one ReftModel.

    The result reuses the given intervention modules (training it trains them) and
    holds them all in one config, so it saves and loads as one checkpoint. ``order``
    (names or indices) is the order the ReFTs apply in, also on shared sites.
    ``interference_threshold`` (degrees; None: off) warns about overlapping subspaces
    on a shared hook, see ``reftlab.interference``. ``describe(result)`` prints the plan.
    """
    if on_conflict not in ("error", "sequence", "sum"):
        raise ValueError(f"on_conflict={on_conflict!r} must be 'error', 'sequence' or 'sum'")
    named = dict(refts) if isinstance(refts, Mapping) else {f"reft{i}": r for i, r in enumerate(refts)}
    if not named:
        raise ValueError("compose needs at least one ReftModel or checkpoint folder")
    hooked = model if isinstance(model, HookedModel) else HookedModel(model)
    loaded = {name: _as_reft(item, name, model) for name, item in named.items()}
    names = _ordered(list(loaded), order)

    entries = []  # (origin, key, representation, intervention) in application order
    for name in names:
        reft = loaded[name]
        for (key, iv), rep in zip(reft.interventions.items(), reft.config.representations):
            share = None if rep.share is None else f"{name}.{rep.share}"
            entries.append((name, f"{name}:{key}", Representation(site=rep.site, intervention=iv, share=share), iv))

    merged: list[list[int]] = [[i] for i in range(len(entries))]
    for j in range(len(entries)):
        for i in range(j):
            a, b = entries[i][2].site, entries[j][2].site
            if entries[i][0] == entries[j][0] or a.hook != b.hook or not positions_overlap(a.positions, b.positions):
                continue
            if on_conflict == "error":
                raise ValueError(
                    f"{entries[i][1]} ({entries[i][3].kind} @ {a}) and {entries[j][1]} ({entries[j][3].kind} @ {b}) "
                    "edit the same hook at overlapping positions; say how they combine: "
                    "on_conflict='sequence' (applied in `order`) or on_conflict='sum'"
                )
            if on_conflict == "sum":
                if a != b:
                    raise ValueError(
                        f"on_conflict='sum' needs identical sites; {entries[i][1]} is at {a}, {entries[j][1]} at {b}"
                    )
                sourced = [e for e in (entries[i], entries[j]) if isinstance(e[3], Sourced) and e[3].needs_source]
                if sourced:
                    raise ValueError(
                        f"on_conflict='sum' cannot hold {sourced[0][1]} ({sourced[0][3].kind}): a sourced kind replaces "
                        "what it patches with the source's vectors, so it has no edit to add; use "
                        "on_conflict='sequence' (the patch, then the ReFT on the patched vectors, in `order`)"
                    )
                _join(merged, i, j)

    reps, ivs, origins = [], [], []
    sums: dict[tuple[int, ...], SumOfEdits] = {}  # shared children -> one shared sum
    for group in merged:
        if not group:
            continue
        if len(group) == 1:
            origin, _, rep, iv = entries[group[0]]
        else:
            children = [entries[k][3] for k in group]
            iv = sums.setdefault(tuple(map(id, children)), SumOfEdits(d_model=hooked.d_model, children=children))
            rep = Representation(site=entries[group[0]][2].site, intervention=iv)
            origin = " + ".join(entries[k][0] for k in group)
        reps.append(rep)
        ivs.append(iv)
        origins.append(origin)
    composed = ReftModel(hooked, ReftConfig(representations=reps), ivs, origins=origins)
    if interference_threshold is not None:
        interference(composed, threshold=interference_threshold, warn=True)
    return composed


def describe(reft: ReftModel) -> str:
    """The plan as text: hook by hook in the order the forward pass meets them, and at each
    hook the interventions in the order they apply, with their origin when composed."""
    origins = reft.origins
    rows = list(zip(reft.interventions.items(), reft.sites))
    rows.sort(key=lambda row: _hook_rank(row[1]))  # stable: same hook keeps binding order
    lines = [f"plan: {len(rows)} interventions, {reft.num_intervention_parameters():,} parameters"]
    seen: dict[int, str] = {}
    for (key, iv), site in rows:
        pos = site.positions if site.positions is not None else "per call"
        origin = f" [{origins[key]}]" if key in origins else ""
        owner = seen.setdefault(id(iv), key)
        shared = "" if owner == key else f" (shares {owner})"
        lines.append(f"{site.hook} @ {pos}: {iv.kind} rank={iv.rank}{origin}{shared}")
    return "\n".join(lines)


def _as_reft(item: Any, name: str, model: Any) -> ReftModel:
    if isinstance(item, ReftModel):
        return item
    if isinstance(item, (str, os.PathLike)):
        return ReftModel.load(item, model)
    raise TypeError(f"{name} must be a ReftModel or a checkpoint folder, got {type(item).__name__}")


def _ordered(names: list[str], order: Sequence[str | int] | None) -> list[str]:
    if order is None:
        return names
    picked = [names[o] if isinstance(o, int) else o for o in order]
    if sorted(picked) != sorted(names):
        raise ValueError(f"order={list(order)} must name every composed ReFT exactly once: {names}")
    return picked


def _join(groups: list[list[int]], i: int, j: int) -> None:
    gi = next(g for g in groups if i in g)
    gj = next(g for g in groups if j in g)
    if gi is not gj:
        gi.extend(gj)
        gj.clear()


def _hook_rank(site: Site) -> tuple[float, int]:
    if site.layer is None:
        return (-1.0 if "embed" in site.hook else float("inf"), 0)
    return (float(site.layer), _STAGE.get(site.hook.split(".", 2)[2], 7))
