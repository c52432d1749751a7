"""Low-rank rotated-space interchange (pyvene's ``LowRankRotatedSpaceIntervention``): DAS with r x d R.

    phi(h, s) = h + R^T R (s - h)

R in R^{r x d} has orthonormal rows (R R^T = I) and is learned: the r coordinates of
span(R) come from the source, the orthogonal complement from the base. Parameters: r d
(d=576, r=1: 576). Shapes: ``h``, ``s`` ``[..., d_model]``; R ``[rank, d_model]``.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn

from .base import orthonormal_rows, random_orthonormal, register
from .rotated import rotated_patch
from .sourced import Sourced


@register
class LowRankRotatedSpace(Sourced):
    """DAS with a rank-r subspace: ``h + R^T R (s - h)``.

    >>> import torch
    >>> iv = LowRankRotatedSpace(d_model=6, rank=2)
    >>> h, s = torch.randn(4, 6), torch.randn(4, 6)
    >>> out = iv(h, s)
    >>> torch.allclose(out @ iv.R.T, s @ iv.R.T, atol=1e-6), iv.num_parameters()
    (True, 12)
    """

    kind = "lowrank_rotated_space"
    derives_rank = False
    rotation: nn.Parameter

    def __init__(
        self, *, d_model: int, rank: int, dropout: float = 0.0, dtype: str | torch.dtype | None = None
    ) -> None:
        super().__init__(d_model=d_model, rank=rank, dropout=dropout, dtype=dtype)
        self.rotation = nn.Parameter(random_orthonormal(rank, d_model, self.requested_dtype))

    @property
    def R(self) -> Float[Tensor, "rank d_model"]:
        """The basis, R R^T = I."""
        return orthonormal_rows(self.rotation)

    def patch(self, h: Tensor, source: Tensor | None) -> Tensor:
        assert source is not None  # _check_source refused None: needs_source is True
        return rotated_patch(h, source, self.R)

    def subspace(self) -> Float[Tensor, "rank d_model"]:
        return self.R

    def spec(self) -> dict[str, Any]:
        return self._sourced_spec()
