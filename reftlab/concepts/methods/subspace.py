"""A given subspace as a concept reader: e.g. a trained LoReFT's or DiReFT's R.

For a subspace S with orthonormal basis Q (rows), the reading direction is the DiffMean vector
projected into S:

    u = Q^T Q (mean_pos h - mean_neg h) / |...|

the direction inside S that best matches the concept's mean shift (for a rank-1 S, S itself,
signed). Detection projects on u; ``subspace()`` of the result is S, for comparisons.
"""

from __future__ import annotations

from typing import Any

from ...subspace import orthonormal_basis
from ._base import FitInput, Fitted, unit


def fit_subspace(inp: FitInput, subspace: Any, name: str = "subspace") -> Fitted:
    q = orthonormal_basis(subspace, what=f"subspace {name!r}").float()  # [r, d_model]
    if q.shape[1] != inp.positive.shape[1]:
        raise ValueError(f"subspace {name!r} has width {q.shape[1]}, the states d_model={inp.positive.shape[1]}")
    shift = (inp.positive.double().mean(0) - inp.negative.double().mean(0)).float()
    inside = q.T @ (q @ shift)  # [d_model]
    share = float(inside.norm() / shift.norm()) if float(shift.norm()) > 0 else 0.0
    u = unit(inside, f"subspace {name!r} for {inp.concept!r} (the concept's mean shift is orthogonal to it)")
    return Fitted(u, q, {"subspace": name, "shift_captured": share})
