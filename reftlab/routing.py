"""Per-example routing: one batch, one base model, each example with its own ReFTs.

    routed = reftlab.route({"emoji": reft_a, "french": reft_b}, model)
    out = routed.run(input_ids, attention_mask, routes=["emoji", None, ["emoji", "french"]])

Every example's output equals running it alone with its own interventions. Each ReFT's
bindings are installed once for the whole batch with a ``rows`` mask (``[batch]`` bool)
holding the examples routed to it; the attach layer edits only those rows (positional
bindings get -1 in the other rows; ``"all"`` bindings edit the routed rows' every token,
generated ones included, as a lone unpadded run does). An example routed to several
ReFTs gets them in the order its route lists them (a sequence on shared hooks, as
``compose`` in that order): examples are grouped by their ordered tuple of names, and each
group's bindings are installed in its own order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import torch
from jaxtyping import Bool, Int
from torch import Tensor, nn
from transformers import PreTrainedModel

from .attach import Binding, attach
from .interventions import Sourced
from .models.hooked import HookedModel
from .reft_model import ReftModel
from .sites import PositionsArg

# positions for every ReFT alike, or a dict by ReFT name (each value as ReftModel.run takes them)
RoutedPositions = PositionsArg | Mapping[str, PositionsArg]


class Routed:
    """Several ReftModels sharing one base model; ``routes`` picks per example.

    ``positions`` is what ``ReftModel.run`` takes (one spec for all), or a dict from ReFT
    name to that ReFT's positions.
    """

    def __init__(self, refts: Mapping[str, ReftModel], model: HookedModel | nn.Module) -> None:
        if not refts:
            raise ValueError("route needs at least one named ReftModel: route({'name': reft}, model)")
        for name, reft in refts.items():
            if not isinstance(reft, ReftModel):
                raise TypeError(f"route: {name!r} must be a ReftModel, got {type(reft).__name__}")
            sourced = [iv.kind for iv in reft.interventions.values() if isinstance(iv, Sourced) and iv.needs_source]
            if sourced:
                raise ValueError(
                    f"route: {name!r} holds a sourced kind ({sourced[0]}) that patches from a source, and routing "
                    "runs no source pass; run it alone with reft_model.run(..., source=SourceBatch(...)), or route "
                    "sourceless kinds (ReFTs, zero/mean/resample ablations)"
                )
        self.hooked = model if isinstance(model, HookedModel) else HookedModel(model)
        self.refts = dict(refts)

    @property
    def model(self) -> PreTrainedModel:
        return self.hooked.model

    def route_groups(self, routes: Sequence[Any], batch: int) -> dict[tuple[str, ...], Bool[Tensor, " batch"]]:
        """``routes`` (one entry per example: None, a name or a list of names) -> a row mask per
        ordered tuple of ReFT names (examples without a ReFT belong to none)."""
        if len(routes) != batch:
            raise ValueError(
                f"routes has {len(routes)} entries for a batch of {batch}; give one per example (None: no ReFT)"
            )
        groups: dict[tuple[str, ...], Bool[Tensor, " batch"]] = {}
        for i, r in enumerate(routes):
            names = () if r is None else (r,) if isinstance(r, str) else tuple(r)
            for name in names:
                if name not in self.refts:
                    raise ValueError(f"routes[{i}] names {name!r}; known ReFTs: {list(self.refts)}")
            if len(set(names)) < len(names):
                raise ValueError(f"routes[{i}] names a ReFT twice ({list(names)}); name each ReFT once")
            if names:
                groups.setdefault(names, torch.zeros(batch, dtype=torch.bool))[i] = True
        return groups

    def bindings(
        self,
        routes: Sequence[Any],
        attention_mask: Int[Tensor, "batch pos"],
        positions: RoutedPositions = None,
        prompt_lengths: Any = None,
    ) -> list[Binding]:
        """Per group of examples routed to the same ReFTs in the same order, those ReFTs' bindings in
        that order, limited to the group's rows: on a shared hook each example sees its own order."""
        groups = self.route_groups(routes, attention_mask.shape[0])
        resolved: dict[str, list[Binding]] = {}
        for name in {n for names in groups for n in names}:
            reft = self.refts[name]
            pos = self._positions_of(name, positions)
            own = reft.bindings(pos, attention_mask, prompt_lengths)
            # "all" resolves to None (every token) only under a full mask; a padded batch must
            # still edit every token of the routed rows, as each example alone would be.
            every = reft.bindings(pos, torch.ones_like(attention_mask)) if prompt_lengths is None else own
            resolved[name] = [
                Binding(b.hook, b.intervention, None if e.positions is None else b.positions)
                for b, e in zip(own, every)
            ]
        out = []
        for names, rows in groups.items():
            rows = rows.to(attention_mask.device)
            out += [Binding(b.hook, b.intervention, b.positions, rows=rows) for name in names for b in resolved[name]]
        return out

    def _positions_of(self, name: str, positions: RoutedPositions) -> PositionsArg:
        """ReFT ``name``'s entry of a dict by ReFT name, else ``positions`` for every ReFT alike."""
        if isinstance(positions, Mapping) and set(positions) <= set(self.refts):
            return positions.get(name)
        return cast(PositionsArg, positions)  # not keyed by ReFT names: one value (or a dict by key) for all

    def run(
        self,
        input_ids: Int[Tensor, "batch pos"],
        attention_mask: Int[Tensor, "batch pos"] | None = None,
        *,
        routes: Sequence[Any],
        positions: RoutedPositions = None,
        prompt_lengths: Any = None,
        labels: Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        """Forward with each example's ReFTs; returns the HF model's output."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        bindings = self.bindings(routes, attention_mask, positions, prompt_lengths)
        with attach(self.hooked, bindings):
            return self.model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **kwargs)

    def generate(
        self,
        input_ids: Int[Tensor, "batch pos"],
        attention_mask: Int[Tensor, "batch pos"] | None = None,
        *,
        routes: Sequence[Any],
        positions: RoutedPositions = None,
        **generate_kwargs: Any,
    ) -> Int[Tensor, "batch total"]:
        """HF ``generate`` with each example's ReFTs on its prompt (left-pad the batch)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        bindings = self.bindings(routes, attention_mask, positions)
        with attach(self.hooked, bindings, min_length=input_ids.shape[1]):
            out: Tensor = self.hooked.generate(input_ids=input_ids, attention_mask=attention_mask, **generate_kwargs)
            return out

    def __repr__(self) -> str:
        lines = [f"Routed over {self.hooked!r}"]
        for name, reft in self.refts.items():
            kinds = ", ".join(f"{iv.kind}@{site}" for iv, site in zip(reft.interventions.values(), reft.sites))
            lines.append(f"  {name}: {kinds} ({reft.num_intervention_parameters():,} params)")
        return "\n".join(lines)


def route(refts: Mapping[str, ReftModel], model: HookedModel | nn.Module) -> Routed:
    """Serve several ReftModels from one base model, each example choosing its own.

    >>> import reftlab, torch
    >>> tok = reftlab.tiny_tokenizer(); hooked = reftlab.load_model(reftlab.tiny_llama(), tok)
    >>> cfg = reftlab.ReftConfig(representations={"layer": 1, "component": "block_output", "positions": "l1",
    ...                                           "intervention": {"kind": "loreft", "rank": 2}})
    >>> a, b = reftlab.get_reft_model(hooked, cfg), reftlab.get_reft_model(hooked, cfg)
    >>> routed = reftlab.route({"a": a, "b": b}, hooked)
    >>> ids = torch.tensor([tok("hi there")["input_ids"]] * 3)
    >>> out = routed.run(ids, routes=["a", None, "b"]).logits
    >>> torch.allclose(out[0], a.run(ids[:1]).logits[0], atol=1e-5), torch.allclose(out[1], hooked.model(ids[1:2]).logits[0], atol=1e-5)
    (True, True)
    """
    return Routed(refts, model)
