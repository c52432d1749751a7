"""Sum of edits: several interventions read the same h and their edits add up.

    phi(h) = h + dropout( sum_i dropout_i(edit_i(h)) )

Each child keeps its own parameters, dropout and subspace; the sum adds none of its
own. Its rank is the sum of the children's ranks and its subspace stacks theirs. The
children must share an arity (all read single positions, or all read k-groups).
Parameters: the sum of the children's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import torch
from jaxtyping import Float
from torch import Tensor, nn

from .base import Intervention, build, register


def child_interventions(
    children: Sequence[Intervention | Mapping[str, Any]], d_model: int, who: str
) -> list[Intervention]:
    """Build children given as modules or specs (a spec's missing ``d_model`` is filled in)."""
    built = [c if isinstance(c, Intervention) else build({"d_model": d_model, **c}) for c in children]
    for i, c in enumerate(built):
        if c.d_model != d_model:
            raise ValueError(f"{who} child {i} ({c.kind}) has d_model={c.d_model}, expected {d_model}")
    return built


@register
class SumOfEdits(Intervention):
    """``h + sum_i dropout_i(edit_i(h))``: a sum composition at one site.

    >>> from reftlab.interventions import LoReFT
    >>> a, b = LoReFT(d_model=8, rank=2), LoReFT(d_model=8, rank=1)
    >>> s = SumOfEdits(d_model=8, children=[a, b])
    >>> h = torch.randn(4, 8)
    >>> torch.allclose(s(h), h + a.edit(h) + b.edit(h)), s.rank, s.num_parameters() == a.num_parameters() + b.num_parameters()
    (True, 3, True)
    """

    kind = "sum"
    derives_rank = True  # rank comes from the children; a spec need not give it

    def __init__(
        self,
        *,
        d_model: int,
        children: Sequence[Intervention | Mapping[str, Any]],
        rank: int | None = None,
        dropout: float = 0.0,
        dtype: str | torch.dtype | None = None,
    ) -> None:
        if not children:
            raise ValueError("sum needs at least one child intervention (children=[spec_or_module, ...])")
        built = child_interventions(children, d_model, "sum")
        total = sum(c.rank for c in built)
        if rank is not None and rank != total:
            raise ValueError(f"sum: rank={rank} but the children's ranks add up to {total}")
        arities = {c.arity for c in built}
        if len(arities) != 1:
            raise ValueError(f"sum: children read different numbers of positions (arities {sorted(arities)})")
        super().__init__(d_model=d_model, rank=total, dropout=dropout, dtype=dtype)
        self.arity = arities.pop()
        self.parts = nn.ModuleList(built)

    @property
    def members(self) -> list[Intervention]:
        """The children, in order (``parts`` holds them as registered submodules)."""
        return [cast(Intervention, c) for c in self.parts]  # built from interventions only

    def edit(self, h: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        edits = [c.dropout(c.edit(h.to(c.param_dtype))).to(h.dtype) for c in self.members]
        return torch.stack(edits).sum(dim=0)

    def subspace(self) -> Float[Tensor, "rank d_model"]:
        return torch.cat([c.subspace() for c in self.members])

    def spec(self) -> dict[str, Any]:
        return {**self._base_spec(), "children": [c.spec() for c in self.members]}

    def extra_repr(self) -> str:
        return f"{len(self.parts)} children, " + super().extra_repr()
