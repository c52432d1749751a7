"""Interference between interventions on the same hook: principal angles of their subspaces.

Two edits written into subspaces S_a and S_b (rows of ``.subspace()``) interfere when the
subspaces share directions. The principal angles theta_1 <= ... <= theta_m between them
(m = min of the two dimensions; ``reftlab.subspace.principal_angles``) are

    cos(theta_i) = sigma_i(Q_a Q_b^T)

with Q_a, Q_b orthonormal bases (rows) of S_a and S_b: 0 degrees is a shared
direction, 90 degrees orthogonal. ``interference`` reports every pair of interventions
(children of a ``sum`` included) that sit on one hook, and warns about pairs whose
smallest angle is below a threshold.
"""

from __future__ import annotations

import warnings

import pandas as pd
import torch

from .attach import ReftLike
from .interventions import Intervention, SumOfEdits
from .subspace import principal_angles

__all__ = ["interference", "principal_angles"]


def interference(reft: ReftLike, *, threshold: float = 30.0, warn: bool = True) -> pd.DataFrame:
    """One row per pair of interventions on the same hook: ``hook, a, b, smallest_angle, angles``.

    ``reft`` is a ReftModel; the children of a ``sum`` count one by one. With ``warn``,
    a pair whose smallest principal angle is below ``threshold`` degrees raises a
    ``UserWarning`` naming both and the angle.
    """
    origins = reft.origins
    leaves: dict[str, list[tuple[str, Intervention]]] = {}
    seen: set[tuple[str, int]] = set()
    for (key, iv), site in zip(reft.interventions.items(), reft.sites):
        label = f"{key} [{origins[key]}]" if key in origins else key
        if isinstance(iv, SumOfEdits):
            items = [(f"{label}.parts[{i}]", p) for i, p in enumerate(iv.members)]
        else:
            items = [(label, iv)]
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
                    angles = principal_angles(a.subspace(), b.subspace())  # float64 from here on
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
