"""pyreft's constructor names, so that a pyreft script ports unchanged.

``LoreftIntervention(embed_dim=..., low_rank_dimension=...)`` builds reftlab's
``LoReFT(d_model=..., rank=...)``. These are factories, not subclasses: the object
they return is the native kind. Unlike pyreft, ``dtype=None`` (the default) means
"follow the model" (float32 on a half-precision model) rather than bfloat16.
"""

from __future__ import annotations

import torch

from .consreft import ConsReFT
from .direft import DiReFT
from .lobireft import LobiReFT
from .loreft import LoReFT
from .nodireft import NodiReFT
from .noreft import NoReFT


def LoreftIntervention(
    *,
    embed_dim: int,
    low_rank_dimension: int,
    dropout: float = 0.0,
    act_fn: str | None = None,
    dtype: torch.dtype | str | None = None,
    identity_init: bool = False,
) -> LoReFT:
    """pyreft's ``LoreftIntervention``: h + R^T(act(Wh + b) - Rh)."""
    return LoReFT(
        d_model=embed_dim,
        rank=low_rank_dimension,
        dropout=dropout,
        act=act_fn,
        init="identity" if identity_init else "random",
        dtype=dtype,
    )


def NoreftIntervention(
    *,
    embed_dim: int,
    low_rank_dimension: int,
    add_bias: bool = True,
    dropout: float = 0.0,
    act_fn: str | None = None,
    dtype: torch.dtype | str | None = None,
) -> NoReFT:
    """pyreft's ``NoreftIntervention``: h + P^T(act(Wh + b) - (Ph + c)); ``add_bias`` gives c."""
    return NoReFT(
        d_model=embed_dim,
        rank=low_rank_dimension,
        dropout=dropout,
        act=act_fn,
        proj_bias=add_bias,
        dtype=dtype,
    )


def DireftIntervention(
    *,
    embed_dim: int,
    low_rank_dimension: int,
    dropout: float = 0.0,
    act_fn: str | None = None,
    dtype: torch.dtype | str | None = None,
) -> DiReFT:
    """pyreft's ``DireftIntervention``: h + R^T act(Wh + b), R orthonormal."""
    return DiReFT(d_model=embed_dim, rank=low_rank_dimension, dropout=dropout, act=act_fn, dtype=dtype)


def NodireftIntervention(
    *,
    embed_dim: int,
    low_rank_dimension: int,
    add_bias: bool = True,
    dropout: float = 0.0,
    act_fn: str | None = None,
    dtype: torch.dtype | str | None = None,
) -> NodiReFT:
    """pyreft's ``NodireftIntervention`` (the paper's DiReFT): h + P^T act(Wh + b).

    ``add_bias`` is accepted for compatibility; pyreft never uses that bias in the output.
    """
    del add_bias  # pyreft allocates it but never reads it
    return NodiReFT(d_model=embed_dim, rank=low_rank_dimension, dropout=dropout, act=act_fn, dtype=dtype)


def ConsreftIntervention(
    *,
    embed_dim: int,
    low_rank_dimension: int,
    dropout: float = 0.0,
    dtype: torch.dtype | str | None = None,
) -> ConsReFT:
    """pyreft's ``ConsreftIntervention``: h + R^T(b - Rh)."""
    return ConsReFT(d_model=embed_dim, rank=low_rank_dimension, dropout=dropout, dtype=dtype)


def LobireftIntervention(
    *,
    embed_dim: int,
    low_rank_dimension: int,
    dropout: float = 0.0,
    dtype: torch.dtype | str | None = None,
) -> LobiReFT:
    """pyreft's ``LobireftIntervention``: h + R^T b."""
    return LobiReFT(d_model=embed_dim, rank=low_rank_dimension, dropout=dropout, dtype=dtype)
