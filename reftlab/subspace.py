"""Subspace math, in one place: orthonormal bases, principal angles, overlap.

For subspaces A (rank a) and B (rank b) of R^d with orthonormal bases Q_A, Q_B (rows),
the singular values of Q_A Q_B^T are cos(theta_1) >= ... >= cos(theta_m), m = min(a, b):
the principal angles theta_i (Bjorck & Golub 1973), reported in degrees, smallest first.
arccos is ill-conditioned near 0 degrees (cos(1e-6 deg) rounds to 1 in float64), so
angles below 45 degrees come from the sines instead: the singular values of
(I - Q_B^T Q_B) Q_A^T, for the smaller of the two subspaces.

    overlap(A, B) = sum_i cos^2(theta_i) / m = |Q_A Q_B^T|_F^2 / m   in [0, 1]

is 1 when the smaller subspace lies inside the larger, 0 when they are orthogonal. Any
spanning set works: rows are orthonormalised first (SVD, dropping null directions), in
float64. Used by ``reftlab.interference`` and ``reftlab.analysis.compare``.

>>> import torch
>>> a = torch.tensor([[1.0, 0, 0]]); b = torch.tensor([[1.0, 1.0, 0]])
>>> round(float(principal_angles(a, b)[0]), 3)
45.0
>>> round(overlap(a, b), 3)
0.5
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor


def as_subspace(x: Any, what: str = "subspace") -> Float[Tensor, "k d_model"]:
    """A ``[k, d]`` float64 tensor from a tensor/array (``[d]`` is one direction) or an intervention."""
    if hasattr(x, "subspace") and callable(x.subspace):
        x = x.subspace()
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x).detach().to("cpu", torch.float64)
    if t.ndim == 1:
        t = t[None]
    if t.ndim != 2 or t.shape[0] == 0:
        raise ValueError(
            f"{what} has shape {tuple(t.shape)}; expected [k, d_model] (one direction per row) or [d_model]"
        )
    return t


def orthonormal_basis(subspace: Any, *, rtol: float = 1e-6, what: str = "subspace") -> Float[Tensor, "r d_model"]:
    """Orthonormal rows (float64) spanning the rows of ``subspace`` (rank-deficient rows dropped).

    >>> orthonormal_basis(torch.tensor([[2.0, 0.0], [4.0, 0.0]])).abs().tolist()
    [[1.0, 0.0]]
    """
    s = as_subspace(subspace, what)
    _, sv, vh = torch.linalg.svd(s, full_matrices=False)  # vh: [min(k, d), d]
    if float(sv.max()) == 0.0:
        raise ValueError(f"{what} is all zeros: it spans no direction")
    return vh[sv > rtol * sv.max()]


def principal_angles(a: Any, b: Any) -> Float[Tensor, " m"]:
    """Principal angles in degrees between span(a) and span(b), smallest first (float64).

    ``a`` and ``b``: ``[k, d_model]`` spanning sets (or ``[d_model]``, or interventions).

    >>> e = torch.eye(3)
    >>> principal_angles(e[:2], e[1:]).round().tolist()      # share e1; e0 is orthogonal to e2
    [0.0, 90.0]
    """
    qa, qb = orthonormal_basis(a, what="subspace a"), orthonormal_basis(b, what="subspace b")
    if qa.shape[1] != qb.shape[1]:
        raise ValueError(
            f"subspace a lives in R^{qa.shape[1]} but subspace b in R^{qb.shape[1]}; "
            "compare subspaces of the same model width (d_model)"
        )
    cos = torch.linalg.svdvals(qa @ qb.T).clamp(0.0, 1.0)  # [min(a, b)], descending
    sin = _sines(qa, qb) if qa.shape[0] <= qb.shape[0] else _sines(qb, qa)
    angles = torch.where(cos > 0.7071, torch.arcsin(sin.clamp(0.0, 1.0)), torch.arccos(cos))
    return torch.rad2deg(angles)


def _sines(small: Tensor, big: Tensor) -> Tensor:
    # Singular values of (I - Qb^T Qb) Qs^T: the sines of the principal angles, ascending order.
    resid = small - (small @ big.T) @ big  # [a, d]
    return torch.linalg.svdvals(resid).flip(0)


def overlap(a: Any, b: Any) -> float:
    """Mean squared cosine of the principal angles, in [0, 1]."""
    angles = torch.deg2rad(principal_angles(a, b))
    return float((torch.cos(angles) ** 2).mean())
