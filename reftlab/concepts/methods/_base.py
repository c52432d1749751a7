"""What a method sees (``FitInput``) and what it returns (``Fitted``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from ...models.hooked import HookedModel


@dataclass(frozen=True, eq=False)
class FitInput:
    """One concept's training material at one site.

    ``positive``/``negative``: token states of the positive / negative training texts
    (``[n_tokens, d_model]``, float32). ``pairs_*``: their (prompt, text) pairs, for methods
    that train through the model (``hooked``).
    """

    concept: str
    hook: str
    positive: Float[Tensor, "n_pos d_model"]
    negative: Float[Tensor, "n_neg d_model"]
    hooked: HookedModel | None = None
    pairs_positive: Sequence[tuple[str, str]] = ()
    pairs_negative: Sequence[tuple[str, str]] = ()
    seed: int = 0


@dataclass(frozen=True, eq=False)
class Fitted:
    """A method's result: the reading direction ``[d_model]`` and the subspace ``[rank, d_model]``."""

    reading: Float[Tensor, " d_model"]
    basis: Float[Tensor, "rank d_model"]
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def rank_one(cls, v: Tensor, **metadata: Any) -> "Fitted":
        return cls(v, v[None], dict(metadata))


def oriented(v: Tensor, inp: FitInput) -> Tensor:
    """``v`` or ``-v``, whichever projects the mean positive token above the mean negative one."""
    gap = (inp.positive.mean(0) - inp.negative.mean(0)).to(v.dtype) @ v
    return -v if float(gap) < 0 else v


def unit(v: Tensor, what: str) -> Tensor:
    norm = float(v.norm())
    if not norm > 0 or not torch.isfinite(v).all():
        raise ValueError(f"{what}: the fitted direction is zero or not finite; check the concept's texts")
    return v / norm
