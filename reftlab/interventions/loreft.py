"""LoReFT: low-rank linear subspace ReFT (Wu et al. 2024, arXiv 2404.03592, eq. 2).

    phi(h) = h + R^T (act(W h + b) - R h)

R in R^{r x d} has orthonormal rows, W in R^{r x d}, b in R^r; act is the identity in
the paper. Parameters: 2 d r + r (d=576, r=4: 4,612).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor, nn

from .base import (
    ACTIVATIONS,
    Intervention,
    check_activation,
    linear_init,
    orthonormal_rows,
    random_orthonormal,
    register,
)


def loreft_edit(
    h: Float[Tensor, "... d_model"],
    R: Float[Tensor, "rank d_model"],
    W: Float[Tensor, "rank d_model"],
    b: Float[Tensor, " rank"],
    act: str = "linear",
) -> Float[Tensor, "... d_model"]:
    """R^T (act(W h + b) - R h): the edit moves R h to act(W h + b) inside span(R).

    >>> R = torch.eye(2, 3); h = torch.randn(5, 3)
    >>> torch.allclose(loreft_edit(h, R, R, torch.zeros(2)), torch.zeros(5, 3))
    True
    """
    return (ACTIVATIONS[act](h @ W.T + b) - h @ R.T) @ R


@register
class LoReFT(Intervention):
    """LoReFT, ``h + R^T(act(Wh + b) - Rh)`` with R R^T = I.

    ``init="identity"`` sets W = R and b = 0, so the intervention starts as the exact
    identity (gradients still flow to W and b).

    >>> iv = LoReFT(d_model=16, rank=2, init="identity")
    >>> h = torch.randn(3, 16)
    >>> torch.equal(iv(h), h)
    True
    """

    kind = "loreft"
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
        self.init = init
        dt = self.requested_dtype
        # Unconstrained parameter; R = orthonormal_rows(rotation) (see base.orthonormal_rows).
        self.rotation = nn.Parameter(random_orthonormal(rank, d_model, dt))
        W, b = linear_init(rank, d_model, dt)
        if init == "identity":
            if self.act != "linear":
                raise ValueError(f"init='identity' needs act='linear' (act(Rh) != Rh for act={self.act!r})")
            W, b = orthonormal_rows(self.rotation.detach()).clone(), torch.zeros_like(b)
        self.weight = nn.Parameter(W)
        self.bias = nn.Parameter(b)

    @property
    def R(self) -> Float[Tensor, "rank d_model"]:
        return orthonormal_rows(self.rotation)

    def edit(self, h: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        return loreft_edit(h, self.R, self.weight, self.bias, self.act)

    def subspace(self) -> Float[Tensor, "rank d_model"]:
        return self.R

    def spec(self) -> dict[str, Any]:
        return {**self._base_spec(), "act": self.act, "init": self.init}
