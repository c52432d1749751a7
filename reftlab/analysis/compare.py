"""Compare subspaces: principal angles, an overlap score, and mean-difference directions.

For subspaces A (rank a) and B (rank b) of R^d with orthonormal bases Q_A, Q_B (rows),
the singular values of Q_A Q_B^T are cos(theta_1) >= ... >= cos(theta_m), m = min(a, b):
the principal angles theta_i (Bjorck & Golub 1973), reported in degrees, smallest first.

    overlap(A, B) = sum_i cos^2(theta_i) / m = |Q_A Q_B^T|_F^2 / m   in [0, 1]

is 1 when the smaller subspace lies inside the larger, 0 when they are orthogonal. Any
spanning set works: rows are orthonormalised first (SVD, dropping null directions).

>>> import torch
>>> a = torch.tensor([[1.0, 0, 0]]); b = torch.tensor([[1.0, 1.0, 0]])
>>> round(float(principal_angles(a, b)[0]), 3)
45.0
>>> round(overlap(a, b), 3)
0.5
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from ..attach import Binding, attach
from ..sites import resolve_positions
from ._capture import StopForward, Tap
from ._prompts import Format, as_prompt_set, batches, pad_id, tokenize
from ._prompts import prompt_format as resolve_format


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
    """Orthonormal rows spanning the rows of ``subspace`` (rank-deficient rows dropped).

    >>> orthonormal_basis(torch.tensor([[2.0, 0.0], [4.0, 0.0]])).abs().tolist()
    [[1.0, 0.0]]
    """
    s = as_subspace(subspace, what)
    _, sv, vh = torch.linalg.svd(s, full_matrices=False)  # vh: [min(k, d), d]
    if float(sv.max()) == 0.0:
        raise ValueError(f"{what} is all zeros: it spans no direction")
    return vh[sv > rtol * sv.max()]


def principal_angles(a: Any, b: Any) -> Float[Tensor, " m"]:
    """Principal angles in degrees between span(a) and span(b), smallest first (float64)."""
    qa, qb = orthonormal_basis(a, what="subspace a"), orthonormal_basis(b, what="subspace b")
    if qa.shape[1] != qb.shape[1]:
        raise ValueError(
            f"subspace a lives in R^{qa.shape[1]} but subspace b in R^{qb.shape[1]}; "
            "compare subspaces of the same model width (d_model)"
        )
    cos = torch.linalg.svdvals(qa @ qb.T).clamp(0.0, 1.0)  # [min(a, b)], descending
    # arccos is ill-conditioned near 0 degrees: take the small angles from the sines instead.
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


def compare(subspaces: Mapping[str, Any]) -> pd.DataFrame:
    """Every ordered pair of named subspaces: ``a, b, rank_a, rank_b, overlap, angle_0..``.

    Values are interventions, ``[k, d]``/``[d]`` tensors or arrays (e.g. a probe or a
    ``mean_difference_direction``). The diagonal is included (angles 0, overlap 1).
    """
    if not subspaces:
        raise ValueError("compare needs at least one named subspace")
    bases = {name: orthonormal_basis(s, what=f"subspace {name!r}") for name, s in subspaces.items()}
    widths = {name: q.shape[1] for name, q in bases.items()}
    if len(set(widths.values())) > 1:
        raise ValueError(f"subspaces live in spaces of different widths {widths}; compare within one model width")
    rows = []
    for (na, qa), (nb, qb) in itertools.product(bases.items(), repeat=2):
        angles = principal_angles(qa, qb).tolist()
        row = {
            "a": na,
            "b": nb,
            "rank_a": qa.shape[0],
            "rank_b": qb.shape[0],
            "overlap": float(np.mean(np.cos(np.deg2rad(angles)) ** 2)),
        }
        row.update({f"angle_{i}": v for i, v in enumerate(angles)})
        rows.append(row)
    return pd.DataFrame(rows)


def subspaces(reft_model: Any, prefix: str = "") -> dict[str, Float[Tensor, "rank d_model"]]:
    """``{prefix + key: subspace}`` for every intervention of a ReftModel (detached)."""
    return {f"{prefix}{k}": iv.subspace().detach() for k, iv in reft_model.interventions.items()}


def mean_difference_direction(
    model: Any,
    prompts_a: Any,
    prompts_b: Any,
    hook: str,
    positions: str = "l1",
    *,
    batch_size: int = 32,
    normalize: bool = False,
    prompt_format: Any = None,
) -> Float[Tensor, " d_model"]:
    """mean(h | prompts_a) - mean(h | prompts_b) at ``hook`` over ``positions`` of each prompt.

    ``model`` is a ``HookedModel`` or a ``ReftModel`` (its base model is used: no
    intervention is attached). ``normalize`` scales the result to unit length.
    ``prompt_format``: as in ``project`` (default: a ReftModel's recorded one, else raw text).
    """
    hooked = getattr(model, "hooked", model)
    hooked.hook_point(hook)  # a clear error for a bad hook name
    fmt = resolve_format(model, prompt_format)
    means = [
        _mean_at(hooked, p, hook, positions, batch_size, name, fmt) for p, name in ((prompts_a, "a"), (prompts_b, "b"))
    ]
    diff = means[0] - means[1]
    return diff / diff.norm() if normalize else diff


def _mean_at(hooked: Any, prompts: Any, hook: str, positions: str, batch_size: int, name: str, fmt: Format) -> Tensor:
    encoded = tokenize(hooked.tokenizer, as_prompt_set(prompts), fmt)
    total, count = torch.zeros(hooked.d_model, dtype=torch.float64), 0
    with torch.inference_mode():
        for batch in batches(encoded, batch_size, pad_id(hooked.tokenizer), hooked.device):
            idx = resolve_positions(positions, batch.attention_mask, batch.prompt_lengths)
            tap = Tap(group=[])
            try:
                with attach(hooked, [Binding(hook, tap, idx)]):
                    hooked.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
            except StopForward:  # the layers above the hook are not needed
                pass
            if tap.value is None:
                raise RuntimeError(f"hook {hook} was not reached by the forward pass")
            total += tap.value.double().sum(dim=0).cpu()  # tap saw the gathered [N, d_model]
            count += tap.value.shape[0]
    if count == 0:
        raise ValueError(
            f"prompts_{name}: positions {positions!r} select no token at {hook}; check the prompts and positions"
        )
    return (total / count).float()


__all__ = [
    "as_subspace",
    "compare",
    "mean_difference_direction",
    "orthonormal_basis",
    "overlap",
    "principal_angles",
    "subspaces",
]
