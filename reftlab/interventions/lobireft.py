"""LobiReFT: a learned bias written into an orthonormal subspace (pyreft's ``LobireftIntervention``).

    phi(h) = h + R^T b

R in R^{r x d} has orthonormal rows, b in R^r. The edit ignores h: a steering vector
constrained to span(R). Parameters: d r + r.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor, nn

from .base import Intervention, orthonormal_rows, random_orthonormal, register


def lobireft_edit(
    h: Float[Tensor, "... d_model"],
    R: Float[Tensor, "rank d_model"],
    b: Float[Tensor, " rank"],
) -> Float[Tensor, "... d_model"]:
    """R^T b, broadcast over every leading axis of h."""
    return (b @ R).expand_as(h)


@register
class LobiReFT(Intervention):
    """LobiReFT, ``h + R^T b``.

    >>> iv = LobiReFT(d_model=8, rank=2, init="identity")
    >>> h = torch.randn(2, 8); torch.equal(iv(h), h)
    True
    """

    kind = "lobireft"
    orthogonal = True

    def __init__(
        self,
        *,
        d_model: int,
        rank: int,
        dropout: float = 0.0,
        init: Literal["random", "identity"] = "random",
        dtype: str | torch.dtype | None = None,
    ) -> None:
        super().__init__(d_model=d_model, rank=rank, dropout=dropout, dtype=dtype)
        if init not in ("random", "identity"):
            raise ValueError(f"init={init!r} must be 'random' or 'identity'")
        self.init = init
        dt = self.requested_dtype or torch.float32
        self.rotation = nn.Parameter(random_orthonormal(rank, d_model, dt))
        b = torch.zeros(rank, dtype=dt) if init == "identity" else torch.rand(rank, dtype=dt)
        self.bias = nn.Parameter(b)

    @property
    def R(self) -> Float[Tensor, "rank d_model"]:
        return orthonormal_rows(self.rotation)

    def edit(self, h: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        return lobireft_edit(h, self.R, self.bias)

    def subspace(self) -> Float[Tensor, "rank d_model"]:
        return self.R

    def spec(self) -> dict[str, Any]:
        return {**self._base_spec(), "init": self.init}
