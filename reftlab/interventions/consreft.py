"""ConsReFT: pin the subspace coordinates to a learned constant (pyreft's ``ConsreftIntervention``).

    phi(h) = h + R^T (b - R h)

R in R^{r x d} has orthonormal rows, b in R^r. Every input leaves with R phi(h) = b,
so no initialisation makes it the identity. Parameters: d r + r.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn

from .base import Intervention, orthonormal_rows, random_orthonormal, register


def consreft_edit(
    h: Float[Tensor, "... d_model"],
    R: Float[Tensor, "rank d_model"],
    b: Float[Tensor, " rank"],
) -> Float[Tensor, "... d_model"]:
    """R^T (b - R h): after the edit, R h equals b."""
    return (b - h @ R.T) @ R


@register
class ConsReFT(Intervention):
    """ConsReFT, ``h + R^T(b - Rh)``: a constant in a learned orthonormal subspace.

    >>> iv = ConsReFT(d_model=8, rank=2)
    >>> out = iv(torch.randn(3, 8))
    >>> torch.allclose(out @ iv.R.T, iv.bias.expand(3, 2), atol=1e-5)
    True
    """

    kind = "consreft"
    orthogonal = True

    def __init__(
        self,
        *,
        d_model: int,
        rank: int,
        dropout: float = 0.0,
        init: str = "random",
        dtype: str | torch.dtype | None = None,
    ) -> None:
        super().__init__(d_model=d_model, rank=rank, dropout=dropout, dtype=dtype)
        if init != "random":
            raise ValueError(
                f"init={init!r}: ConsReFT sets R h = b for every h, so no parameters make it the identity; "
                "use init='random' or an identity-capable kind (loreft, noreft, direft, nodireft, lobireft)"
            )
        dt = self.requested_dtype or torch.float32
        self.rotation = nn.Parameter(random_orthonormal(rank, d_model, dt))
        self.bias = nn.Parameter(torch.rand(rank, dtype=dt))  # pyreft's init

    @property
    def R(self) -> Float[Tensor, "rank d_model"]:
        return orthonormal_rows(self.rotation)

    def edit(self, h: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        return consreft_edit(h, self.R, self.bias)

    def subspace(self) -> Float[Tensor, "rank d_model"]:
        return self.R

    def spec(self) -> dict[str, Any]:
        return self._base_spec()
