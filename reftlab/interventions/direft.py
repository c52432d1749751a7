"""DiReFT as pyreft implements it: a direct edit written into an orthonormal subspace.

    phi(h) = h + R^T act(W h + b)

R in R^{r x d} has orthonormal rows. Note: the paper's DiReFT (arXiv 2404.03592,
App. on ablations, h + W2^T (W1 h + b) with no orthogonality) is pyreft's
*NodiReFT*, see ``reftlab.interventions.nodireft``. Parameters: 2 d r + r.
"""

from __future__ import annotations

from jaxtyping import Float
from torch import Tensor

from .base import ACTIVATIONS, register
from .lowrank import LowRank


def direft_edit(
    h: Float[Tensor, "... d_model"],
    R: Float[Tensor, "rank d_model"],
    W: Float[Tensor, "rank d_model"],
    b: Float[Tensor, " rank"],
    act: str = "linear",
) -> Float[Tensor, "... d_model"]:
    """R^T act(W h + b)."""
    return ACTIVATIONS[act](h @ W.T + b) @ R


@register
class DiReFT(LowRank):
    """pyreft's DiReFT, ``h + R^T act(Wh + b)`` with R R^T = I.

    ``init="identity"`` zeroes W and b (needs act(0) = 0).

    >>> import torch
    >>> iv = DiReFT(d_model=8, rank=2, init="identity")
    >>> h = torch.randn(2, 8); torch.equal(iv(h), h)
    True
    """

    kind = "direft"
    basis = "orthonormal"
    readout = "linear"
    identity = "zero"

    def edit(self, h: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        return direft_edit(h, self.R, self.weight, self.bias, self.act)
