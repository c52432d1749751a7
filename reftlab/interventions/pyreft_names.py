"""pyreft's constructor names, so that a pyreft script ports unchanged.

``LoreftIntervention(embed_dim=..., low_rank_dimension=...)`` builds reftlab's
``LoReFT(d_model=..., rank=...)``. These are factories, not subclasses: the object
they return is the native kind. Unlike pyreft, ``dtype=None`` (the default) means
"follow the model" (float32 on a half-precision model) rather than bfloat16.

pyreft's paper runner passes one keyword set to every kind (``embed_dim``,
``low_rank_dimension``, ``dropout``, ``dtype``, ``act_fn``, ``device``, ``add_bias``), so
each factory accepts all of them: ``device`` places the parameters; ``add_bias`` and
``act_fn`` act where pyreft's kind uses them and are ignored where pyreft ignores them
(an ``act_fn`` other than None on a kind without an activation is an error).

The kinds with an orthonormal R (LoReFT, DiReFT, ConsReFT, LobiReFT) parametrise it as
pyreft does, ``orthogonal="householder"`` (torch's orthogonal parametrization: Householder
reflectors on a fixed d x d orthogonal base), so a ported script's optimizer takes pyreft's
steps and its loss curve is pyreft's (``benchmarks/pyreft_parity.py``; reftlab's own "qr"
map learns slower on pyreft's scripts). ``orthogonal="qr"`` (reftlab only) picks the
native map, which needs no d x d buffer.
"""

from __future__ import annotations

from typing import TypeVar

import torch

from .base import Intervention
from .consreft import ConsReFT
from .direft import DiReFT
from .lobireft import LobiReFT
from .loreft import LoReFT
from .lowrank import Orthogonal
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
    device: torch.device | str | None = None,
    add_bias: bool = True,
    orthogonal: Orthogonal = "householder",
) -> LoReFT:
    """pyreft's ``LoreftIntervention``: h + R^T(act(Wh + b) - Rh) (``add_bias`` ignored, as in pyreft)."""
    iv = LoReFT(
        d_model=embed_dim,
        rank=low_rank_dimension,
        dropout=dropout,
        act=act_fn,
        init="identity" if identity_init else "random",
        dtype=dtype,
        orthogonal=orthogonal,
    )
    return _placed(iv, device)


def NoreftIntervention(
    *,
    embed_dim: int,
    low_rank_dimension: int,
    add_bias: bool = True,
    dropout: float = 0.0,
    act_fn: str | None = None,
    dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
) -> NoReFT:
    """pyreft's ``NoreftIntervention``: h + P^T(act(Wh + b) - (Ph + c)); ``add_bias`` gives c."""
    iv = NoReFT(
        d_model=embed_dim,
        rank=low_rank_dimension,
        dropout=dropout,
        act=act_fn,
        proj_bias=add_bias,
        dtype=dtype,
    )
    return _placed(iv, device)


def DireftIntervention(
    *,
    embed_dim: int,
    low_rank_dimension: int,
    dropout: float = 0.0,
    act_fn: str | None = None,
    dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
    add_bias: bool = True,
    orthogonal: Orthogonal = "householder",
) -> DiReFT:
    """pyreft's ``DireftIntervention``: h + R^T act(Wh + b), R orthonormal (``add_bias`` ignored, as in pyreft)."""
    iv = DiReFT(
        d_model=embed_dim, rank=low_rank_dimension, dropout=dropout, act=act_fn, dtype=dtype, orthogonal=orthogonal
    )
    return _placed(iv, device)


def NodireftIntervention(
    *,
    embed_dim: int,
    low_rank_dimension: int,
    add_bias: bool = True,
    dropout: float = 0.0,
    act_fn: str | None = None,
    dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
) -> NodiReFT:
    """pyreft's ``NodireftIntervention`` (the paper's DiReFT): h + P^T act(Wh + b).

    ``add_bias`` is accepted for compatibility; pyreft never uses that bias in the output.
    """
    del add_bias  # pyreft allocates it but never reads it
    iv = NodiReFT(d_model=embed_dim, rank=low_rank_dimension, dropout=dropout, act=act_fn, dtype=dtype)
    return _placed(iv, device)


def ConsreftIntervention(
    *,
    embed_dim: int,
    low_rank_dimension: int,
    dropout: float = 0.0,
    dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
    act_fn: str | None = None,
    add_bias: bool = True,
    orthogonal: Orthogonal = "householder",
) -> ConsReFT:
    """pyreft's ``ConsreftIntervention``: h + R^T(b - Rh) (``add_bias`` ignored, as in pyreft)."""
    _no_activation("ConsreftIntervention", act_fn)
    iv = ConsReFT(d_model=embed_dim, rank=low_rank_dimension, dropout=dropout, dtype=dtype, orthogonal=orthogonal)
    return _placed(iv, device)


def LobireftIntervention(
    *,
    embed_dim: int,
    low_rank_dimension: int,
    dropout: float = 0.0,
    dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
    act_fn: str | None = None,
    add_bias: bool = True,
    orthogonal: Orthogonal = "householder",
) -> LobiReFT:
    """pyreft's ``LobireftIntervention``: h + R^T b (``add_bias`` ignored, as in pyreft)."""
    _no_activation("LobireftIntervention", act_fn)
    iv = LobiReFT(d_model=embed_dim, rank=low_rank_dimension, dropout=dropout, dtype=dtype, orthogonal=orthogonal)
    return _placed(iv, device)


_Kind = TypeVar("_Kind", bound=Intervention)


def _placed(iv: _Kind, device: torch.device | str | None) -> _Kind:
    return iv if device is None else iv.to(device)


def _no_activation(name: str, act_fn: str | None) -> None:
    if act_fn is not None:
        raise ValueError(f"{name} has no activation (its edit is constant in h's subspace); pass act_fn=None")
