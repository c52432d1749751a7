"""Zero ablation (pyvene's ``ZeroIntervention``).

    phi(h) = 0

Shapes: ``h`` ``[..., d_model]``. No parameters, no source.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from .base import register
from .sourced import Sourced


def zero_patch(h: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
    """Zeros of h's shape.

    >>> import torch
    >>> zero_patch(torch.ones(1, 2)).tolist()
    [[0.0, 0.0]]
    """
    return torch.zeros_like(h)


@register
class ZeroAblation(Sourced):
    """``phi(h) = 0`` at the bound positions.

    >>> import torch
    >>> ZeroAblation(d_model=3)(torch.ones(2, 3)).abs().sum().item()
    0.0
    """

    kind = "zero_ablation"
    needs_source = False

    def __init__(
        self, *, d_model: int, rank: int | None = None, dropout: float = 0.0, dtype: str | torch.dtype | None = None
    ) -> None:
        super().__init__(d_model=d_model, rank=d_model if rank is None else rank, dropout=dropout, dtype=dtype)
        if self.rank != d_model:
            raise ValueError(f"zero_ablation zeroes the whole space: rank={rank} must be d_model={d_model}")

    def patch(self, h: Tensor, source: Tensor | None) -> Tensor:
        return zero_patch(h)

    def spec(self) -> dict[str, Any]:
        return self._sourced_spec()
