"""Vanilla interchange: copy the source's representation at the site (pyvene's ``VanillaIntervention``).

    phi(h, s) = s

Shapes: ``h``, ``s`` are ``[..., d_model]``. No parameters. Patching the whole residual
stream at every position of a layer from a source reproduces the source's run above it.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from .base import register
from .sourced import Sourced


def vanilla_patch(
    h: Float[Tensor, "... d_model"], source: Float[Tensor, "... d_model"]
) -> Float[Tensor, "... d_model"]:
    """The source's vector, in place of the base's.

    >>> import torch
    >>> vanilla_patch(torch.zeros(2, 3), torch.ones(2, 3)).tolist()
    [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    """
    return source.clone()


@register
class Vanilla(Sourced):
    """Interchange of the whole space: ``phi(h, s) = s``.

    >>> import torch
    >>> iv = Vanilla(d_model=4)
    >>> h, s = torch.randn(3, 4), torch.randn(3, 4)
    >>> torch.equal(iv(h, s), s), iv.num_parameters()
    (True, 0)
    """

    kind = "vanilla"

    def __init__(
        self, *, d_model: int, rank: int | None = None, dropout: float = 0.0, dtype: str | torch.dtype | None = None
    ) -> None:
        super().__init__(d_model=d_model, rank=d_model if rank is None else rank, dropout=dropout, dtype=dtype)
        if self.rank != d_model:
            raise ValueError(f"vanilla patches the whole space: rank={rank} must be d_model={d_model} (or omitted)")

    def patch(self, h: Tensor, source: Tensor | None) -> Tensor:
        assert source is not None  # _check_source refused None: needs_source is True
        return vanilla_patch(h, source)

    def spec(self) -> dict[str, Any]:
        return self._sourced_spec()
