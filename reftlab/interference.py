"""Interference between interventions on the same hook: principal angles of their subspaces.

Two edits written into subspaces S_a and S_b (rows of ``.subspace()``) interfere when the
subspaces share directions. The principal angles theta_1 <= ... <= theta_m between them
(m = min of the two dimensions) are

    cos(theta_i) = sigma_i(Q_a^T Q_b)

with Q_a, Q_b orthonormal bases (columns) of S_a and S_b: 0 degrees is a shared
direction, 90 degrees orthogonal. ``interference`` reports every pair of interventions
(children of a ``sum`` included) that sit on one hook, and warns about pairs whose
smallest angle is below a threshold.
"""

from __future__ import annotations

import warnings
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor


def principal_angles(a: Float[Tensor, "ra d_model"], b: Float[Tensor, "rb d_model"]) -> Float[Tensor, " m"]:
    """Principal angles in degrees, ascending, between the row spaces of ``a`` and ``b``.

    >>> e = torch.eye(3)
    >>> principal_angles(e[:2], e[1:]).round().tolist()      # share e1; e0 is orthogonal to e2
    [0.0, 90.0]
    """
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(
            f"principal_angles needs two [rank, d_model] matrices of one width, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    qa, qb = _basis(a), _basis(b)
    cos = torch.linalg.svdvals(qa.T @ qb).clamp(0.0, 1.0)  # descending
    return torch.rad2deg(torch.arccos(cos)).to(torch.float32)


def interference(reft: Any, *, threshold: float = 30.0, warn: bool = True) -> pd.DataFrame:
    """One row per pair of interventions on the same hook: ``hook, a, b, smallest_angle, angles``.

    ``reft`` is a ReftModel (anything with ``.interventions`` and ``.sites``). With ``warn``,
    a pair whose smallest principal angle is below ``threshold`` degrees raises a
    ``UserWarning`` naming both and the angle.
    """
    origins = getattr(reft, "origins", {})
    leaves: dict[str, list[tuple[str, Any]]] = {}
    seen: set[tuple[str, int]] = set()
    for (key, iv), site in zip(reft.interventions.items(), reft.sites):
        label = f"{key} [{origins[key]}]" if key in origins else key
        parts = getattr(iv, "parts", None)
        items = [(f"{label}.parts[{i}]", p) for i, p in enumerate(parts)] if parts is not None else [(label, iv)]
        for name, leaf in items:
            if (site.hook, id(leaf)) not in seen:  # a shared module is one intervention on its hook
                seen.add((site.hook, id(leaf)))
                leaves.setdefault(site.hook, []).append((name, leaf))
    rows = []
    for hook, items in leaves.items():
        for i in range(len(items)):
            for j in range(i + 1, len(items)):
                (na, a), (nb, b) = items[i], items[j]
                with torch.no_grad():
                    angles = principal_angles(a.subspace().detach().float().cpu(), b.subspace().detach().float().cpu())
                smallest = float(angles[0])
                rows.append({"hook": hook, "a": na, "b": nb, "smallest_angle": smallest, "angles": angles.tolist()})
                if warn and smallest < threshold:
                    warnings.warn(
                        f"{na} and {nb} on {hook} overlap: smallest principal angle {smallest:.1f} deg < {threshold} deg; "
                        "their edits interfere",
                        UserWarning,
                        stacklevel=2,
                    )
    return pd.DataFrame(rows, columns=["hook", "a", "b", "smallest_angle", "angles"])


def _basis(m: Tensor) -> Tensor:
    """Orthonormal columns spanning the row space of ``m`` (rank-deficient rows dropped)."""
    u, s, _ = torch.linalg.svd(m.double().T, full_matrices=False)
    keep = s > s.max() * max(m.shape) * torch.finfo(torch.float64).eps if s.numel() else s.bool()
    return u[:, keep]
