"""NodiReFT: a direct low-rank edit with no orthogonality; the paper's DiReFT.

    phi(h) = h + P^T act(W h + b)

This is the DiReFT of arXiv 2404.03592 (h + W2^T (W1 h + b)), named NodiReFT in
pyreft. P in R^{r x d} is free. Parameters: 2 d r + r.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor, nn

from .base import ACTIVATIONS, ZERO_PRESERVING, Intervention, check_activation, linear_init, register


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
class NodiReFT(Intervention):
    """pyreft's NodiReFT (the paper's DiReFT), ``h + P^T act(Wh + b)``.

    >>> iv = NodiReFT(d_model=8, rank=2, init="identity")
    >>> h = torch.randn(2, 8); torch.equal(iv(h), h)
    True
    """

    kind = "nodireft"
    orthogonal = False

    def __init__(
        self,
        *,
        d_model: int,
        rank: int,
        dropout: float = 0.0,
        act: str | None = None,
        init: Literal["random", "identity"] = "random",
        dtype: str | torch.dtype | None = None,
    ) -> None:
        super().__init__(d_model=d_model, rank=rank, dropout=dropout, dtype=dtype)
        self.act = check_activation(act)
        if init not in ("random", "identity"):
            raise ValueError(f"init={init!r} must be 'random' or 'identity'")
        if init == "identity" and self.act not in ZERO_PRESERVING:
            raise ValueError(
                f"init='identity' needs act(0) = 0; act={self.act!r} is not; use one of {sorted(ZERO_PRESERVING)}"
            )
        self.init = init
        dt = self.requested_dtype
        P, _ = linear_init(rank, d_model, dt)
        self.proj = nn.Parameter(P)
        W, b = linear_init(rank, d_model, dt)
        if init == "identity":
            W, b = torch.zeros_like(W), torch.zeros_like(b)
        self.weight = nn.Parameter(W)
        self.bias = nn.Parameter(b)

    def edit(self, h: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        return nodireft_edit(h, self.proj, self.weight, self.bias, self.act)

    def subspace(self) -> Float[Tensor, "rank d_model"]:
        return self.proj

    def spec(self) -> dict[str, Any]:
        return {**self._base_spec(), "act": self.act, "init": self.init}
