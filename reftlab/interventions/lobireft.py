"""LobiReFT: a learned bias written into an orthonormal subspace (pyreft's ``LobireftIntervention``).

    phi(h) = h + R^T b

R in R^{r x d} has orthonormal rows, b in R^r. The edit ignores h: a steering vector
constrained to span(R). Parameters: d r + r.
"""

from __future__ import annotations

from jaxtyping import Float
from torch import Tensor

from .base import register
from .lowrank import LowRank


def lobireft_edit(
    h: Float[Tensor, "... d_model"],
    R: Float[Tensor, "rank d_model"],
    b: Float[Tensor, " rank"],
) -> Float[Tensor, "... d_model"]:
    """R^T b, broadcast over every leading axis of h."""
    return (b @ R).expand_as(h)


@register
class LobiReFT(LowRank):
    """LobiReFT, ``h + R^T b``.

    >>> import torch
    >>> iv = LobiReFT(d_model=8, rank=2, init="identity")
    >>> h = torch.randn(2, 8); torch.equal(iv(h), h)
    True
    """

    kind = "lobireft"
    basis = "orthonormal"
    readout = "bias"
    identity = "zero"  # b = 0

    def edit(self, h: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        return lobireft_edit(h, self.R, self.bias)
