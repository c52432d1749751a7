"""Interchange interventions: a source run captured at the sites, then the base run patched from it.

For sourced interventions (``reftlab.interventions.Sourced``: vanilla, rotated-space DAS,
...) a call is two forwards of the *plain* model:

1. the source batch runs with a grabbing ``Edit`` at each sourced intervention's site and
   source positions; the pass stops (``_SourceDone``) once the deepest site was reached,
   so the layers above it and the unembedding never run;
2. the base batch runs with every intervention attached; each sourced one is bound to the
   vectors its site saw in the source (``Sourced.bind``), paired with the base positions in
   order: the j-th valid base position of example i takes the j-th valid source position
   of example i.

Positions are given per side; a side without positions takes the other side's. Positions
``"all"`` (or None on a site without positions) patch every position: the source and the
base must then have the same length. Hooks are installed only through ``reftlab.attach``.
``ReftModel.run(..., source=SourceBatch(...))`` and pyvene's
``reft_model(base, sources=[source], unit_locations={"sources->base": (src, base)})`` use this.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from ..attach import Binding, ReftLike, attach
from ..inputs import as_base, unit_locations_to_positions
from ..interventions import Sourced, dataset_mean
from ..models.hooked import HookedModel
from ..sites import positions_per_intervention


@dataclass(frozen=True)
class SourceBatch:
    """The source side of an interchange: its inputs and the positions read at each site.

    ``positions`` takes what ``ReftModel.run`` takes (a spec such as ``"l1"`` or ``"all"``, a
    ``[batch, n]`` index tensor, or a list/dict per intervention); None: the base's positions.
    """

    input_ids: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"] | None = None
    positions: Any = None

    def mask(self) -> Tensor:
        return torch.ones_like(self.input_ids) if self.attention_mask is None else self.attention_mask


class _SourceDone(Exception):
    """Every grab has its value: the rest of the source pass is not needed."""


class _Grab:
    """Identity ``Edit`` that keeps (detached) what its hook gathered; the last of a group stops the pass."""

    kind = "source"
    arity = 1

    def __init__(self, group: list["_Grab"]) -> None:
        self.value: Tensor | None = None
        self.group = group
        group.append(self)

    def __call__(self, h: Tensor) -> Tensor:
        self.value = h.detach()
        if all(g.value is not None for g in self.group):
            raise _SourceDone
        return h


def capture(
    hooked: HookedModel,
    input_ids: Int[Tensor, "batch pos"],
    attention_mask: Int[Tensor, "batch pos"] | None,
    sites: Sequence[tuple[str, Tensor | None]],
) -> list[Tensor]:
    """One forward of the plain model; what each ``(hook, positions)`` saw, gathered as a binding gathers.

    ``positions`` ``[batch, n]`` (-1 empty) gives ``[N, d_model]`` (valid slots, row-major);
    None gives the whole ``[batch, pos, d_model]``. The pass stops after the deepest site.
    """
    group: list[_Grab] = []
    grabs = [_Grab(group) for _ in sites]
    if not grabs:
        return []
    bindings = [Binding(hook, g, pos) for (hook, pos), g in zip(sites, grabs)]
    try:
        with torch.no_grad(), attach(hooked, bindings):
            hooked.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    except _SourceDone:
        pass
    out = []
    for (hook, _), g in zip(sites, grabs):
        if g.value is None:
            raise RuntimeError(f"the source run did not reach {hook}")
        out.append(g.value)
    return out


def sourced_bindings(reft_model: ReftLike, bindings: list[Binding], source: SourceBatch) -> list[Binding]:
    """``bindings`` (the base's, one per intervention) with each sourced intervention bound to its source.

    Interventions that need no source keep their binding. Errors name the intervention when
    the two sides do not pair up (batch sizes, counts of positions per example, lengths).
    """
    keys = list(reft_model.interventions)
    if len(bindings) != len(keys):
        raise ValueError(f"{len(bindings)} bindings for {len(keys)} interventions")
    needs = [isinstance(iv, Sourced) and iv.needs_source for iv in reft_model.interventions.values()]
    refuse_sourceless(reft_model)
    base_batch = _batch_size(bindings)
    if base_batch is not None and source.input_ids.shape[0] != base_batch:
        raise ValueError(
            f"the source batch has {source.input_ids.shape[0]} examples but the base {base_batch}; "
            "give one source per base example"
        )
    given = positions_per_intervention(source.positions, keys)
    per: list[Any] = []
    for need, pos, b in zip(needs, given, bindings):
        if not need:
            per.append("all")  # not read: the source side of a sourceless intervention
        elif pos is not None:
            per.append(pos)
        else:  # the base's positions; "every position" when the base has none
            per.append("all" if b.positions is None else b.positions)
    src_bindings = reft_model.bindings(per, source.mask())
    wanted = [(sb.hook, sb.positions) for need, sb in zip(needs, src_bindings) if need]
    vectors = iter(capture(reft_model.hooked, source.input_ids, source.mask(), wanted))
    out = []
    for key, need, b, sb in zip(keys, needs, bindings, src_bindings):
        if not need:
            out.append(b)
            continue
        _check_pairing(key, b.positions, sb.positions)
        iv = b.intervention
        assert isinstance(iv, Sourced)  # needs[i] says so
        out.append(Binding(b.hook, iv.bind(next(vectors)), b.positions, b.rows, b.after_prompt))
    return out


def refuse_sourceless(reft_model: ReftLike) -> None:
    """A source given to a model none of whose interventions reads one is an error, not ignored."""
    if any(isinstance(iv, Sourced) and iv.needs_source for iv in reft_model.interventions.values()):
        return
    kinds = sorted({iv.kind for iv in reft_model.interventions.values()})
    raise ValueError(
        f"a source was given but this model's interventions ({', '.join(kinds)}) are sourceless: none reads it; "
        "drop sources/source=, or add a sourced kind (vanilla, rotated_space, lowrank_rotated_space, "
        "boundless_rotated_space; see docs/causal.md)"
    )


def _batch_size(bindings: Sequence[Binding]) -> int | None:
    for b in bindings:
        if b.positions is not None:
            return int(b.positions.shape[0])
    return None


def _check_pairing(key: str, base: Tensor | None, src: Tensor | None) -> None:
    if (base is None) != (src is None):
        raise ValueError(
            f"intervention {key!r}: one side patches every position and the other given positions; "
            "give positions on both sides, or 'all' on both"
        )
    if base is None or src is None:
        return
    nb, ns = (base >= 0).sum(1), (src.to(base.device) >= 0).sum(1)
    if not torch.equal(nb, ns):
        i = int((nb != ns).nonzero()[0])
        raise ValueError(
            f"intervention {key!r}: example {i} has {int(nb[i])} base positions but {int(ns[i])} source positions; "
            "the j-th base position takes the j-th source position, so give as many on each side"
        )


def site_activations(
    model: HookedModel | ReftLike,
    input_ids: Int[Tensor, "batch pos"],
    attention_mask: Int[Tensor, "batch pos"] | None,
    hook: str,
    positions: Int[Tensor, "batch n"] | None = None,
) -> Tensor:
    """The plain model's representations at ``hook``: ``[N, d_model]`` at ``positions`` (valid slots),
    or every attended position when None. What a mean or resample ablation is built from.
    """
    hooked = model if isinstance(model, HookedModel) else model.hooked
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    (seen,) = capture(hooked, input_ids, mask, [(hook, positions)])
    if positions is None:
        return seen[mask.bool().to(seen.device)]  # [N, d_model], padding dropped
    return seen


def site_mean(
    model: HookedModel | ReftLike,
    input_ids: Int[Tensor, "batch pos"],
    attention_mask: Int[Tensor, "batch pos"] | None,
    hook: str,
    positions: Int[Tensor, "batch n"] | None = None,
) -> Tensor:
    """The mean representation at ``hook`` over the batch (``[d_model]``, ``dataset_mean``), for ``MeanAblation``."""
    return dataset_mean(site_activations(model, input_ids, attention_mask, hook, positions))


def pyvene_sources(sources: Any, unit_locations: Any, n_interventions: int) -> tuple[SourceBatch, Any]:
    """pyvene's ``sources=[source]`` and ``{"sources->base": (source_locs, base_locs)}`` ->
    ``(SourceBatch, base positions)`` for ``ReftModel.run``.

    One source batch serves every sourced intervention (pyvene's list of one); locations are
    ``[num_interventions][batch][n]`` on each side (one entry broadcast to every intervention);
    ``None`` on a side takes the other side's.
    """
    if isinstance(sources, Mapping):
        sources = [sources]
    if not isinstance(sources, (list, tuple)) or not sources:
        raise TypeError(
            f"sources must be a list with one tokenized source batch (a dict), got {type(sources).__name__}"
        )
    if len(sources) > 1 and any(s is not sources[0] for s in sources[1:]):
        raise ValueError(
            f"got {len(sources)} source batches; reftlab patches every sourced intervention from one source batch "
            "(sources=[source]); for different sources run the model once per source"
        )
    src = as_base(sources[0])
    if unit_locations is None:
        return SourceBatch(src["input_ids"], src.get("attention_mask")), None
    if not isinstance(unit_locations, Mapping) or set(unit_locations) != {"sources->base"}:
        raise ValueError("unit_locations must be {'sources->base': (source_locations, base_locations)}")
    value = unit_locations["sources->base"]
    if not isinstance(value, tuple) or len(value) != 2:
        raise ValueError("unit_locations['sources->base'] must be the pair (source_locations, base_locations)")
    src_locs, base_locs = value
    if src_locs is None and base_locs is None:
        raise ValueError("unit_locations['sources->base'] is (None, None); give the positions of at least one side")
    as_list = [
        None if locs is None else unit_locations_to_positions({"sources->base": (None, locs)}, n_interventions)
        for locs in (src_locs, base_locs)
    ]
    src_pos, base_pos = as_list[0] or as_list[1], as_list[1] or as_list[0]
    return SourceBatch(src["input_ids"], src.get("attention_mask"), src_pos), base_pos
