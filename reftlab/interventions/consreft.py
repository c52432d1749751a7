"""ConsReFT: pin the subspace coordinates to a learned constant (pyreft's ``ConsreftIntervention``).

    phi(h) = h + R^T (b - R h)

R in R^{r x d} has orthonormal rows, b in R^r. Every input leaves with R phi(h) = b,
so no initialisation makes it the identity. Parameters: d r + r.
"""

from __future__ import annotations

from jaxtyping import Float
from torch import Tensor

from .base import register
from .lowrank import LowRank


def consreft_edit(
    h: Float[Tensor, "... d_model"],
    R: Float[Tensor, "rank d_model"],
    b: Float[Tensor, " rank"],
) -> Float[Tensor, "... d_model"]:
    """R^T (b - R h): after the edit, R h equals b."""
    return (b - h @ R.T) @ R


@register
class ConsReFT(LowRank):
    """ConsReFT, ``h + R^T(b - Rh)``: a constant in a learned orthonormal subspace.

    >>> import torch
    >>> iv = ConsReFT(d_model=8, rank=2)
    >>> out = iv(torch.randn(3, 8))
    >>> torch.allclose(out @ iv.R.T, iv.bias.expand(3, 2), atol=1e-5)
    True
    """

    kind = "consreft"
    basis = "orthonormal"
    readout = "bias"
    identity = None  # R phi(h) = b for every h

    def edit(self, h: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        return consreft_edit(h, self.R, self.bias)
