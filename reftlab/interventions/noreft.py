"""NoReFT: LoReFT without the orthonormality constraint (pyreft's ``NoreftIntervention``).

    phi(h) = h + P^T (act(W h + b) - (P h + c))

P in R^{r x d} is unconstrained; c in R^r is an optional projection bias (pyreft's
``add_bias``). Parameters: 2 d r + r (+ r with the projection bias).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor, nn

from .base import ACTIVATIONS, Intervention, check_activation, linear_init, register


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
class NoReFT(Intervention):
    """NoReFT, ``h + P^T(act(Wh + b) - (Ph + c))`` with P free.

    >>> iv = NoReFT(d_model=8, rank=2, init="identity")
    >>> h = torch.randn(4, 8); torch.equal(iv(h), h)
    True
    """

    kind = "noreft"
    orthogonal = False

    def __init__(
        self,
        *,
        d_model: int,
        rank: int,
        dropout: float = 0.0,
        act: str | None = None,
        proj_bias: bool = True,
        init: Literal["random", "identity"] = "random",
        dtype: str | torch.dtype | None = None,
    ) -> None:
        super().__init__(d_model=d_model, rank=rank, dropout=dropout, dtype=dtype)
        self.act = check_activation(act)
        if init not in ("random", "identity"):
            raise ValueError(f"init={init!r} must be 'random' or 'identity'")
        self.init, self.proj_bias = init, bool(proj_bias)
        dt = self.requested_dtype
        P, c = linear_init(rank, d_model, dt)
        self.proj = nn.Parameter(P)
        self.proj_b = nn.Parameter(c) if self.proj_bias else None
        W, b = linear_init(rank, d_model, dt)
        if init == "identity":
            if self.act != "linear":
                raise ValueError(f"init='identity' needs act='linear', got act={self.act!r}")
            W = P.clone()
            b = c.clone() if self.proj_bias else torch.zeros_like(b)
        self.weight = nn.Parameter(W)
        self.bias = nn.Parameter(b)

    def edit(self, h: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        return noreft_edit(h, self.proj, self.proj_b, self.weight, self.bias, self.act)

    def subspace(self) -> Float[Tensor, "rank d_model"]:
        return self.proj

    def spec(self) -> dict[str, Any]:
        return {**self._base_spec(), "act": self.act, "proj_bias": self.proj_bias, "init": self.init}
