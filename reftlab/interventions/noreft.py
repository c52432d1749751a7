"""NoReFT: LoReFT without the orthonormality constraint (pyreft's ``NoreftIntervention``).

    phi(h) = h + P^T (act(W h + b) - (P h + c))

P in R^{r x d} is unconstrained; c in R^r is an optional projection bias (pyreft's
``add_bias``). Parameters: 2 d r + r (+ r with the projection bias).
"""

from __future__ import annotations

from jaxtyping import Float
from torch import Tensor

from .base import ACTIVATIONS, register
from .lowrank import LowRank


def noreft_edit(
    h: Float[Tensor, "... d_model"],
    P: Float[Tensor, "rank d_model"],
    c: Float[Tensor, " rank"] | None,
    W: Float[Tensor, "rank d_model"],
    b: Float[Tensor, " rank"],
    act: str = "linear",
) -> Float[Tensor, "... d_model"]:
    """P^T (act(W h + b) - (P h + c)); with W = P and b = c it is zero."""
    proj = h @ P.T if c is None else h @ P.T + c
    return (ACTIVATIONS[act](h @ W.T + b) - proj) @ P


@register
class NoReFT(LowRank):
    """NoReFT, ``h + P^T(act(Wh + b) - (Ph + c))`` with P free.

    >>> import torch
    >>> iv = NoReFT(d_model=8, rank=2, init="identity")
    >>> h = torch.randn(4, 8); torch.equal(iv(h), h)
    True
    """

    kind = "noreft"
    basis = "free"
    readout = "linear"
    identity = "copy"
    uses_proj_bias = True

    def edit(self, h: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        return noreft_edit(h, self.proj, self.proj_b, self.weight, self.bias, self.act)
