"""Boundless DAS (Wu et al. 2023, arXiv 2305.08809; pyvene's ``BoundlessRotatedSpaceIntervention``).

    phi(h, s) = h + R^T (m * R (s - h))
    m_i       = sigmoid(i / T) * sigmoid((beta d - i) / T),   i = 0 .. d-1,  beta = clamp(b, 1e-3, 1)

R in R^{d x d} is a learned rotation (R R^T = I), b the learned boundary (init 0.5) and T
the temperature (a buffer, annealed by the caller with ``set_temperature``): a soft
version of "the first beta d rotated coordinates come from the source". Parameters:
d^2 + 1. Shapes: ``h``, ``s`` ``[..., d_model]``; m ``[d_model]``.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn

from .base import orthonormal_rows, random_orthonormal, register
from .sourced import Sourced


def boundary_mask(d_model: int, boundary: Float[Tensor, ""], temperature: Float[Tensor, ""]) -> Float[Tensor, " d"]:
    """m_i = sigmoid(i / T) sigmoid((clamp(b, 1e-3, 1) d - i) / T), pyvene's ``sigmoid_boundary`` from 0.

    >>> import torch
    >>> m = boundary_mask(4, torch.tensor(0.5), torch.tensor(0.01))
    >>> [round(x, 3) for x in m.tolist()]
    [0.5, 1.0, 0.5, 0.0]
    """
    i = torch.arange(d_model, dtype=boundary.dtype, device=boundary.device)
    upper = boundary.clamp(1e-3, 1.0) * d_model
    return torch.sigmoid(i / temperature) * torch.sigmoid((upper - i) / temperature)


def boundless_patch(
    h: Float[Tensor, "... d_model"],
    source: Float[Tensor, "... d_model"],
    R: Float[Tensor, "d_model d_model"],
    mask: Float[Tensor, " d_model"],
) -> Float[Tensor, "... d_model"]:
    """h + R^T (m * R (s - h)): a soft interchange of the rotated coordinates.

    >>> import torch
    >>> h, s = torch.zeros(2), torch.ones(2)
    >>> boundless_patch(h, s, torch.eye(2), torch.tensor([1.0, 0.0])).tolist()
    [1.0, 0.0]
    """
    return h + (((source - h) @ R.T) * mask) @ R


@register
class BoundlessRotatedSpace(Sourced):
    """Boundless DAS: a rotation and a learned soft boundary over its coordinates.

    >>> import torch
    >>> iv = BoundlessRotatedSpace(d_model=4)
    >>> iv.num_parameters(), iv.boundary.item(), iv.temperature.item()
    (17, 0.5, 50.0)
    """

    kind = "boundless_rotated_space"
    rotation: nn.Parameter
    boundary: nn.Parameter
    temperature: Tensor

    def __init__(
        self,
        *,
        d_model: int,
        rank: int | None = None,
        dropout: float = 0.0,
        dtype: str | torch.dtype | None = None,
    ) -> None:
        super().__init__(d_model=d_model, rank=d_model if rank is None else rank, dropout=dropout, dtype=dtype)
        if self.rank != d_model:
            raise ValueError(f"boundless_rotated_space learns a d x d rotation: rank={rank} must be d_model={d_model}")
        dt = self.requested_dtype or torch.float32
        self.rotation = nn.Parameter(random_orthonormal(d_model, d_model, dt))
        self.boundary = nn.Parameter(torch.tensor(0.5, dtype=dt))
        self.register_buffer("temperature", torch.tensor(50.0, dtype=dt))

    @property
    def R(self) -> Float[Tensor, "d_model d_model"]:
        return orthonormal_rows(self.rotation)

    def mask(self) -> Float[Tensor, " d_model"]:
        """The soft boundary m over the rotated coordinates."""
        return boundary_mask(self.d_model, self.boundary, self.temperature)

    def set_temperature(self, temperature: float | Tensor) -> None:
        """pyvene's setter: anneal T (large: a soft mask; small: close to a hard boundary)."""
        self.temperature.fill_(float(temperature))

    def get_temperature(self) -> Tensor:
        return self.temperature

    def get_boundary_parameters(self) -> nn.Parameter:
        return self.boundary

    def patch(self, h: Tensor, source: Tensor | None) -> Tensor:
        assert source is not None  # _check_source refused None: needs_source is True
        return boundless_patch(h, source, self.R, self.mask())

    def subspace(self) -> Float[Tensor, "rank d_model"]:
        """The rotated directions whose mask is above 1/2 (at least one)."""
        keep = self.mask().detach() > 0.5
        keep[0] = True
        return self.R[keep]

    def spec(self) -> dict[str, Any]:
        return self._sourced_spec()
