"""NodiReFT: a direct low-rank edit with no orthogonality; the paper's DiReFT.

    phi(h) = h + P^T act(W h + b)

This is the DiReFT of arXiv 2404.03592 (h + W2^T (W1 h + b)), named NodiReFT in
pyreft. P in R^{r x d} is free. Parameters: 2 d r + r.
"""

from __future__ import annotations

from jaxtyping import Float
from torch import Tensor

from .base import ACTIVATIONS, register
from .lowrank import LowRank


def nodireft_edit(
    h: Float[Tensor, "... d_model"],
    P: Float[Tensor, "rank d_model"],
    W: Float[Tensor, "rank d_model"],
    b: Float[Tensor, " rank"],
    act: str = "linear",
) -> Float[Tensor, "... d_model"]:
    """P^T act(W h + b)."""
    return ACTIVATIONS[act](h @ W.T + b) @ P


@register
class NodiReFT(LowRank):
    """pyreft's NodiReFT (the paper's DiReFT), ``h + P^T act(Wh + b)``.

    >>> import torch
    >>> iv = NodiReFT(d_model=8, rank=2, init="identity")
    >>> h = torch.randn(2, 8); torch.equal(iv(h), h)
    True
    """

    kind = "nodireft"
    basis = "free"
    readout = "linear"
    identity = "zero"

    def edit(self, h: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        return nodireft_edit(h, self.proj, self.weight, self.bias, self.act)
