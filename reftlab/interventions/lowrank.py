"""The constructor the six single-position kinds share; each kind file keeps only its formula.

A kind declares what it owns with three class attributes, and its ``edit``:

    basis    = "orthonormal"  R R^T = I, parametrised by ``orthogonal``:
                 "qr"           R = orthonormal_rows(rotation)  (``rotation``: r x d, free; the default)
                 "householder"  R = householder_rows(reflectors, base): torch's orthogonal
                                parametrization, as pyreft trains R (``reflectors``: d x r, free;
                                ``base``: a fixed d x d orthogonal buffer); Adam then takes pyreft's
                                steps, which on pyreft's scripts learn faster than "qr" (docs/pyreft.md)
             = "free"         P = ``proj`` (r x d), unconstrained
    readout  = "linear"       W (``weight``, r x d) and b (``bias``, r), nn.Linear's init; takes ``act``
             = "bias"         b (``bias``, r) only, uniform in [0, 1) as pyreft draws it; no ``act``
    identity = "copy"         init="identity" sets W = basis, b = 0 (or c): needs act linear
             = "zero"         init="identity" zeroes W and b (b alone for readout "bias"): needs act(0) = 0
             = None           no parameters make the kind the identity; only init="random"
    uses_proj_bias = True     basis "free" reads P h + c, c = ``proj_b`` (``proj_bias=False`` drops it)

Parameters are created basis first, then W, then b, so a seed gives the same values as
before this helper existed. ``subspace()`` is the basis (R or P).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from jaxtyping import Float
from torch import Tensor, nn

from .base import (
    ZERO_PRESERVING,
    Intervention,
    check_activation,
    householder_init,
    householder_rows,
    linear_init,
    orthonormal_rows,
    random_orthonormal,
)

Init = Literal["random", "identity"]
Orthogonal = Literal["qr", "householder"]
ORTHOGONAL: tuple[Orthogonal, ...] = ("qr", "householder")


class LowRank(Intervention):
    """Abstract: a kind with an r x d basis and a readout, declared by ``basis``, ``readout``, ``identity``."""

    basis: ClassVar[Literal["orthonormal", "free"]]
    readout: ClassVar[Literal["linear", "bias"]]
    identity: ClassVar[Literal["copy", "zero"] | None]
    uses_proj_bias: ClassVar[bool] = False  # basis "free" with a projection bias c: P h + c (NoReFT)

    rotation: nn.Parameter  # basis "orthonormal", orthogonal "qr"
    reflectors: nn.Parameter  # basis "orthonormal", orthogonal "householder" (with the buffer ``base``)
    base: Tensor
    proj: nn.Parameter  # basis "free"
    proj_b: nn.Parameter | None  # basis "free": the projection bias c (NoReFT's proj_bias)
    weight: nn.Parameter  # readout "linear"
    bias: nn.Parameter

    def __init__(
        self,
        *,
        d_model: int,
        rank: int,
        dropout: float = 0.0,
        act: str | None = None,
        init: Init = "random",
        dtype: str | torch.dtype | None = None,
        proj_bias: bool | None = None,
        orthogonal: Orthogonal = "qr",
    ) -> None:
        super().__init__(d_model=d_model, rank=rank, dropout=dropout, dtype=dtype)
        if orthogonal not in ORTHOGONAL:
            raise ValueError(f"orthogonal={orthogonal!r} must be one of {', '.join(map(repr, ORTHOGONAL))}")
        if orthogonal != "qr" and self.basis != "orthonormal":
            raise ValueError(f"{self.kind} has no orthonormal basis to parametrise; drop orthogonal={orthogonal!r}")
        self.orthogonal = orthogonal
        if self.readout == "bias" and act is not None:
            raise ValueError(f"{self.kind} has no activation (its edit does not read W h + b); drop act={act!r}")
        self.act = check_activation(act)
        self.init = self._check_init(init)
        if proj_bias is not None and not self.uses_proj_bias:
            raise ValueError(f"{self.kind} has no projection bias; drop proj_bias={proj_bias!r}")
        self.proj_bias = self.uses_proj_bias if proj_bias is None else bool(proj_bias)
        dt = self.requested_dtype or torch.float32
        identity = init == "identity"
        if self.basis == "orthonormal" and orthogonal == "householder":
            reflectors, base = householder_init(rank, d_model, dt)
            self.reflectors = nn.Parameter(reflectors)
            self.register_buffer("base", base)
            c = None
        elif self.basis == "orthonormal":
            self.rotation = nn.Parameter(random_orthonormal(rank, d_model, dt))
            c = None
        else:
            P, c = linear_init(rank, d_model, dt)
            self.proj = nn.Parameter(P)
            self.proj_b = nn.Parameter(c) if self.proj_bias else None
        if self.readout == "bias":
            self.bias = nn.Parameter(torch.zeros(rank, dtype=dt) if identity else torch.rand(rank, dtype=dt))
            return
        W, b = linear_init(rank, d_model, dt)
        if identity and self.identity == "copy":
            W = self.subspace().detach().clone()
            b = c.clone() if c is not None and self.proj_bias else torch.zeros_like(b)  # W h + b = P h + c
        elif identity:
            W, b = torch.zeros_like(W), torch.zeros_like(b)
        self.weight = nn.Parameter(W)
        self.bias = nn.Parameter(b)

    def _check_init(self, init: str) -> Init:
        if self.identity is None and init != "random":
            raise ValueError(
                f"init={init!r}: {self.kind}'s edit is not zero for every h, so no parameters make it the identity; "
                "use init='random' or an identity-capable kind (loreft, noreft, direft, nodireft, lobireft)"
            )
        if init not in ("random", "identity"):
            raise ValueError(f"init={init!r} must be 'random' or 'identity'")
        if init == "identity" and self.identity == "copy" and self.act != "linear":
            raise ValueError(f"init='identity' needs act='linear' (act(Bh) != Bh for act={self.act!r})")
        if init == "identity" and self.identity == "zero" and self.act not in ZERO_PRESERVING:
            raise ValueError(
                f"init='identity' needs act(0) = 0; act={self.act!r} is not; use one of {sorted(ZERO_PRESERVING)}"
            )
        return "identity" if init == "identity" else "random"

    @property
    def R(self) -> Float[Tensor, "rank d_model"]:
        """R = orthonormal_rows(rotation) or householder_rows(reflectors, base); a free basis has none
        (its P is ``proj``; both are ``subspace()``)."""
        if self.basis != "orthonormal":
            raise AttributeError("R")  # nn.Module.__getattr__ then says "'NoReFT' object has no attribute 'R'"
        if self.orthogonal == "householder":
            return householder_rows(self.reflectors, self.base)
        return orthonormal_rows(self.rotation)

    def subspace(self) -> Float[Tensor, "rank d_model"]:
        return self.R if self.basis == "orthonormal" else self.proj

    def spec(self) -> dict[str, Any]:
        spec = self._base_spec()
        if self.readout == "linear":
            spec["act"] = self.act
        if self.uses_proj_bias:
            spec["proj_bias"] = self.proj_bias
        if self.identity is not None:
            spec["init"] = self.init
        if self.orthogonal != "qr":  # absent from older checkpoints, which are all "qr"
            spec["orthogonal"] = self.orthogonal
        return spec
