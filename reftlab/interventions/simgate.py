"""Similarity-gated edit: a child's edit, scaled by a gate on a cosine similarity.

    phi(h) = h + dropout( g(sim) * delta(h) )

    delta(h) = dropout_c(edit_c(h))          any single-position kind's edit (the child)
    sim      = cos(h, k)                     source="key":  k in R^d learned (arity 1)
             = cos(h_0, h_1)                 source="pair": a group of ``arity`` >= 2
                                             positions; the edit goes to slot ``write``
    g(sim)   = sigmoid(a * sim + c)          gate="learned": scalars a, c learned
             = 1[sim > threshold]            gate="threshold": fixed, no parameters

With source="pair" the group is ``[h_0, h_1, ...]``: the similarity is read between
slots 0 and 1, and only slot ``write`` is edited (e.g. arity 3, write 2: the last token
edited when two other tokens match). Parameters: the child's, plus d for the key, plus
2 for a learned gate. Shapes: ``[..., d_model]`` (key) or ``[..., arity, d_model]`` (pair).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor, nn

from .base import Intervention, register
from .sum import child_interventions


def similarity_gate(
    sim: Float[Tensor, "..."], scale: Tensor | None, bias: Tensor | None, threshold: float
) -> Float[Tensor, "..."]:
    """sigmoid(scale * sim + bias), or the step 1[sim > threshold] when scale is None.

    >>> similarity_gate(torch.tensor([0.2, 0.9]), None, None, 0.5).tolist()
    [0.0, 1.0]
    """
    if scale is None:
        return (sim > threshold).to(sim.dtype)
    return torch.sigmoid(scale * sim + bias)


@register
class SimilarityGated(Intervention):
    """``h + g(cos sim) * delta(h)`` around a child intervention.

    >>> from reftlab.interventions import DiReFT
    >>> iv = SimilarityGated(d_model=8, child=DiReFT(d_model=8, rank=2), source="pair", gate="threshold")
    >>> h = torch.randn(2, 8); same, other = torch.stack([h, h], 1), torch.stack([h, -h], 1)
    >>> iv.gate(same).tolist(), iv.gate(other).tolist()
    ([1.0, 1.0], [0.0, 0.0])
    """

    kind = "simgate"
    derives_rank = True

    def __init__(
        self,
        *,
        d_model: int,
        child: Intervention | Mapping[str, Any],
        rank: int | None = None,
        source: Literal["key", "pair"] = "key",
        arity: int | None = None,
        write: int | None = None,
        gate: Literal["learned", "threshold"] = "learned",
        threshold: float = 0.5,
        init_scale: float = 10.0,
        init_bias: float = -5.0,
        dropout: float = 0.0,
        dtype: str | torch.dtype | None = None,
    ) -> None:
        (built,) = child_interventions([child], d_model, "simgate")
        if built.arity != 1:
            raise ValueError(f"simgate's child must read single positions; {built.kind} has arity {built.arity}")
        if rank is not None and rank != built.rank:
            raise ValueError(f"simgate: rank={rank} but its child has rank {built.rank}")
        if source not in ("key", "pair"):
            raise ValueError(
                f"source={source!r} must be 'key' (learned key, arity 1) or 'pair' (slots 0 and 1 of a group)"
            )
        if gate not in ("learned", "threshold"):
            raise ValueError(f"gate={gate!r} must be 'learned' (sigmoid(a*sim+c)) or 'threshold' (1[sim > threshold])")
        arity = (1 if source == "key" else 2) if arity is None else arity
        if (source == "key") != (arity == 1) or not isinstance(arity, int) or arity < 1:
            raise ValueError(f"arity={arity!r}: source='key' reads one position (arity 1), 'pair' a group of >= 2")
        write = (arity - 1) if write is None else write
        if not 0 <= write < arity:
            raise ValueError(f"write={write!r} must be a slot index in [0, arity={arity})")
        super().__init__(d_model=d_model, rank=built.rank, dropout=dropout, dtype=dtype)
        self.child = built
        self.source, self.arity, self.write, self.gate_kind = source, arity, write, gate
        self.threshold, self.init_scale, self.init_bias = float(threshold), float(init_scale), float(init_bias)
        dt = built.param_dtype
        if source == "key":
            self.key = nn.Parameter(nn.functional.normalize(torch.randn(d_model), dim=0).to(dt))
        if gate == "learned":
            self.gate_scale = nn.Parameter(torch.tensor(self.init_scale, dtype=dt))
            self.gate_bias = nn.Parameter(torch.tensor(self.init_bias, dtype=dt))

    def similarity(self, h: Tensor) -> Float[Tensor, "..."]:
        """cos(h, key) for source="key" (``[..., d]``), cos(h_0, h_1) for "pair" (``[..., arity, d]``)."""
        if self.source == "key":
            return nn.functional.cosine_similarity(h, self.key.to(h.dtype).expand_as(h), dim=-1)
        if h.ndim < 2 or h.shape[-2] != self.arity:
            raise ValueError(
                f"simgate(source='pair') expects groups [..., {self.arity}, {self.d_model}], got {tuple(h.shape)}"
            )
        return nn.functional.cosine_similarity(h[..., 0, :], h[..., 1, :], dim=-1)

    def gate(self, h: Tensor) -> Float[Tensor, "..."]:
        """g(sim) per vector (key) or per group (pair), in [0, 1]."""
        learned = self.gate_kind == "learned"
        return similarity_gate(
            self.similarity(h),
            self.gate_scale if learned else None,
            self.gate_bias if learned else None,
            self.threshold,
        )

    def edit(self, h: Tensor) -> Tensor:
        g = self.gate(h)
        if self.source == "key":
            return g[..., None] * self.child.dropout(self.child.edit(h))
        delta = g[..., None] * self.child.dropout(self.child.edit(h[..., self.write, :]))  # [..., d_model]
        slot = torch.zeros(self.arity, 1, dtype=h.dtype, device=h.device)
        slot[self.write] = 1
        return slot * delta[..., None, :]  # [..., arity, d_model], zero outside slot ``write``

    def subspace(self) -> Float[Tensor, "rank d_model"]:
        return self.child.subspace()

    def spec(self) -> dict[str, Any]:
        return {
            **self._base_spec(),
            "child": self.child.spec(),
            "source": self.source,
            "arity": self.arity,
            "write": self.write,
            "gate": self.gate_kind,
            "threshold": self.threshold,
            "init_scale": self.init_scale,
            "init_bias": self.init_bias,
        }
