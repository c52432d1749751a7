"""Compare subspaces: a table of principal angles and overlaps, and mean-difference directions.

The subspace math (orthonormal bases, principal angles, overlap) lives in
``reftlab.subspace``; it is re-exported here for analysis code.
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

from ..attach import Binding, ReftLike, attach
from ..models.hooked import HookedModel
from ..sites import resolve_positions
from ..subspace import as_subspace, orthonormal_basis, overlap, principal_angles
from .capture import StopForward, Tap
from .prompts import Format, as_prompt_set, batches, pad_id, tokenize
from .prompts import prompt_format as resolve_format


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


def subspaces(reft_model: ReftLike, prefix: str = "") -> dict[str, Float[Tensor, "rank d_model"]]:
    """``{prefix + key: subspace}`` for every intervention of a ReftModel (detached)."""
    return {f"{prefix}{k}": iv.subspace().detach() for k, iv in reft_model.interventions.items()}


def mean_difference_direction(
    model: HookedModel | ReftLike,
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
    hooked = model if isinstance(model, HookedModel) else model.hooked
    hooked.hook_point(hook)  # a clear error for a bad hook name
    fmt = resolve_format(model, prompt_format)
    means = [
        _mean_at(hooked, p, hook, positions, batch_size, name, fmt) for p, name in ((prompts_a, "a"), (prompts_b, "b"))
    ]
    diff = means[0] - means[1]
    return diff / diff.norm() if normalize else diff


def _mean_at(
    hooked: HookedModel, prompts: Any, hook: str, positions: str, batch_size: int, name: str, fmt: Format
) -> Tensor:
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
