"""Rotated-space interchange, DAS (Geiger et al. 2024, arXiv 2303.02536; pyvene's ``RotatedSpaceIntervention``).

    phi(h, s) = h + R_k^T R_k (s - h)

R in R^{d x d} is orthonormal (R R^T = I) and learned; R_k holds its first k rows
(``interchange_dim``): the first k rotated coordinates are taken from the source, the
other d - k from the base. k = d copies the source (the vanilla patch), k = 0 is the
identity; both are computed as such (exactly), not through R^T R. Parameters: d^2 (the free ``rotation``, mapped to R by ``orthonormal_rows``).
Shapes: ``h``, ``s`` ``[..., d_model]``; R_k ``[k, d_model]``.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn

from .base import orthonormal_rows, random_orthonormal, register
from .sourced import Sourced


def rotated_patch(
    h: Float[Tensor, "... d_model"], source: Float[Tensor, "... d_model"], R: Float[Tensor, "k d_model"]
) -> Float[Tensor, "... d_model"]:
    """h + R^T R (s - h): the coordinates of span(R) from the source, the rest from the base.

    >>> import torch
    >>> R = torch.eye(3)[:1]; h = torch.zeros(3); s = torch.tensor([1.0, 2.0, 3.0])
    >>> rotated_patch(h, s, R).tolist()
    [1.0, 0.0, 0.0]
    """
    return h + ((source - h) @ R.T) @ R


@register
class RotatedSpace(Sourced):
    """DAS: interchange the first ``interchange_dim`` coordinates of R h (R a d x d rotation).

    >>> import torch
    >>> iv = RotatedSpace(d_model=4, interchange_dim=0)
    >>> h, s = torch.randn(3, 4), torch.randn(3, 4)
    >>> torch.equal(iv(h, s), h)
    True
    """

    kind = "rotated_space"
    rotation: nn.Parameter

    def __init__(
        self,
        *,
        d_model: int,
        rank: int | None = None,
        interchange_dim: int | None = None,
        dropout: float = 0.0,
        dtype: str | torch.dtype | None = None,
    ) -> None:
        super().__init__(d_model=d_model, rank=d_model if rank is None else rank, dropout=dropout, dtype=dtype)
        if self.rank != d_model:
            raise ValueError(
                f"rotated_space learns a full d x d rotation: rank={rank} must be d_model={d_model} (or omitted); "
                "for a rank-r rotation use lowrank_rotated_space"
            )
        self.rotation = nn.Parameter(random_orthonormal(d_model, d_model, self.requested_dtype))
        self.set_interchange_dim(d_model if interchange_dim is None else interchange_dim)

    def set_interchange_dim(self, interchange_dim: int | Tensor) -> None:
        """k, the number of rotated coordinates taken from the source (pyvene's setter)."""
        k = int(interchange_dim)
        if not 0 <= k <= self.d_model:
            raise ValueError(f"interchange_dim={k} must be in [0, d_model={self.d_model}]")
        self.interchange_dim = k

    @property
    def R(self) -> Float[Tensor, "d_model d_model"]:
        """The rotation, R R^T = I."""
        return orthonormal_rows(self.rotation)

    def patch(self, h: Tensor, source: Tensor | None) -> Tensor:
        assert source is not None  # _check_source refused None: needs_source is True
        if self.interchange_dim == 0:  # R_0 is empty: the base, exactly
            return h.clone()
        if self.interchange_dim == self.d_model:  # R^T R = I: the source, exactly (not I up to rounding)
            return source.clone()
        return rotated_patch(h, source, self.R[: self.interchange_dim])

    def subspace(self) -> Float[Tensor, "rank d_model"]:
        """R_k, the rows whose coordinates are patched (``[interchange_dim, d_model]``)."""
        return self.R[: self.interchange_dim]

    def spec(self) -> dict[str, Any]:
        return self._sourced_spec(interchange_dim=self.interchange_dim)
