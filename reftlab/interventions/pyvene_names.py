"""pyvene's constructor names for the causal kinds, so a pyvene script ports by one import.

``RotatedSpaceIntervention(embed_dim=...)`` builds reftlab's ``RotatedSpace(d_model=...)``.
These are factories, as ``pyreft_names`` are: the object returned is the native kind.
pyvene reads ``embed_dim`` (and ``low_rank_dimension``) from keyword arguments; the other
keywords it accepts for every kind (``subspace_partition``, ``use_fast``, ...) are refused
here rather than ignored: reftlab patches the whole subspace of the kind.
"""

from __future__ import annotations

import torch

from .boundless import BoundlessRotatedSpace
from .lowrank_rotated import LowRankRotatedSpace
from .rotated import RotatedSpace
from .vanilla import Vanilla
from .zero import ZeroAblation


def VanillaIntervention(*, embed_dim: int, dtype: torch.dtype | str | None = None) -> Vanilla:
    """pyvene's ``VanillaIntervention``: phi(h, s) = s."""
    return Vanilla(d_model=embed_dim, dtype=dtype)


def RotatedSpaceIntervention(
    *, embed_dim: int, interchange_dim: int | None = None, dtype: torch.dtype | str | None = None
) -> RotatedSpace:
    """pyvene's ``RotatedSpaceIntervention``: h + R_k^T R_k (s - h), k = ``interchange_dim`` (default d)."""
    return RotatedSpace(d_model=embed_dim, interchange_dim=interchange_dim, dtype=dtype)


def LowRankRotatedSpaceIntervention(
    *, embed_dim: int, low_rank_dimension: int, dtype: torch.dtype | str | None = None
) -> LowRankRotatedSpace:
    """pyvene's ``LowRankRotatedSpaceIntervention``: h + R^T R (s - h), R r x d."""
    return LowRankRotatedSpace(d_model=embed_dim, rank=low_rank_dimension, dtype=dtype)


def BoundlessRotatedSpaceIntervention(
    *, embed_dim: int, dtype: torch.dtype | str | None = None
) -> BoundlessRotatedSpace:
    """pyvene's ``BoundlessRotatedSpaceIntervention``: h + R^T (m * R (s - h)), m a learned soft boundary."""
    return BoundlessRotatedSpace(d_model=embed_dim, dtype=dtype)


def ZeroIntervention(*, embed_dim: int, dtype: torch.dtype | str | None = None) -> ZeroAblation:
    """pyvene's ``ZeroIntervention``: phi(h) = 0."""
    return ZeroAblation(d_model=embed_dim, dtype=dtype)
