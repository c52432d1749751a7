"""LoReFT: low-rank linear subspace ReFT (Wu et al. 2024, arXiv 2404.03592, eq. 2).

    phi(h) = h + R^T (act(W h + b) - R h)

R in R^{r x d} has orthonormal rows, W in R^{r x d}, b in R^r; act is the identity in
the paper. Parameters: 2 d r + r (d=576, r=4: 4,612).
"""

from __future__ import annotations

from jaxtyping import Float
from torch import Tensor

from .base import ACTIVATIONS, register
from .lowrank import LowRank


def loreft_edit(
    h: Float[Tensor, "... d_model"],
    R: Float[Tensor, "rank d_model"],
    W: Float[Tensor, "rank d_model"],
    b: Float[Tensor, " rank"],
    act: str = "linear",
) -> Float[Tensor, "... d_model"]:
    """R^T (act(W h + b) - R h): the edit moves R h to act(W h + b) inside span(R).

    >>> import torch
    >>> R = torch.eye(2, 3); h = torch.randn(5, 3)
    >>> torch.allclose(loreft_edit(h, R, R, torch.zeros(2)), torch.zeros(5, 3))
    True
    """
    return (ACTIVATIONS[act](h @ W.T + b) - h @ R.T) @ R


@register
class LoReFT(LowRank):
    """LoReFT, ``h + R^T(act(Wh + b) - Rh)`` with R R^T = I.

    ``init="identity"`` sets W = R and b = 0, so the intervention starts as the exact
    identity (gradients still flow to W and b).

    >>> import torch
    >>> iv = LoReFT(d_model=16, rank=2, init="identity")
    >>> h = torch.randn(3, 16)
    >>> torch.equal(iv(h), h)
    True
    """

    kind = "loreft"
    basis = "orthonormal"
    readout = "linear"
    identity = "copy"

    def edit(self, h: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        return loreft_edit(h, self.R, self.weight, self.bias, self.act)
