"""DiReFT as pyreft implements it: a direct edit written into an orthonormal subspace.

    phi(h) = h + R^T act(W h + b)

R in R^{r x d} has orthonormal rows. Note: the paper's DiReFT (arXiv 2404.03592,
App. on ablations, h + W2^T (W1 h + b) with no orthogonality) is pyreft's
*NodiReFT*, see ``reftlab.interventions.nodireft``. Parameters: 2 d r + r.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor, nn

from .base import (
    ACTIVATIONS,
    ZERO_PRESERVING,
    Intervention,
    check_activation,
    linear_init,
    orthonormal_rows,
    random_orthonormal,
    register,
)


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
class DiReFT(Intervention):
    """pyreft's DiReFT, ``h + R^T act(Wh + b)`` with R R^T = I.

    ``init="identity"`` zeroes W and b (needs act(0) = 0).

    >>> iv = DiReFT(d_model=8, rank=2, init="identity")
    >>> h = torch.randn(2, 8); torch.equal(iv(h), h)
    True
    """

    kind = "direft"
    orthogonal = True

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
        self.rotation = nn.Parameter(random_orthonormal(rank, d_model, dt))
        W, b = linear_init(rank, d_model, dt)
        if init == "identity":
            W, b = torch.zeros_like(W), torch.zeros_like(b)
        self.weight = nn.Parameter(W)
        self.bias = nn.Parameter(b)

    @property
    def R(self) -> Float[Tensor, "rank d_model"]:
        return orthonormal_rows(self.rotation)

    def edit(self, h: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        return direft_edit(h, self.R, self.weight, self.bias, self.act)

    def subspace(self) -> Float[Tensor, "rank d_model"]:
        return self.R

    def spec(self) -> dict[str, Any]:
        return {**self._base_spec(), "act": self.act, "init": self.init}
