"""The only place interventions become hooks: a context manager around a model call.

``attach(model, bindings)`` installs one TransformerLens hook per binding for the
duration of the ``with`` block and removes them (and their taps on the HF model) in
``finally``, also after an exception. Each hook gathers the binding's positions,
applies the intervention to those ``[n, d_model]`` vectors, and scatters them back;
other positions pass through untouched.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Iterator, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from .interventions import Intervention
from .models.hooked import HookedModel


@dataclass(frozen=True)
class Binding:
    """An intervention bound to a hook point and, per example, the positions it edits.

    ``positions`` is ``[batch, n]`` absolute indices with -1 for "none", or None for
    every position of every chunk the hook sees (generated tokens included).
    """

    hook: str
    intervention: Intervention
    positions: Int[Tensor, "batch n"] | None = None


def apply_at_positions(
    h: Float[Tensor, "batch pos d_model"],
    intervention: Intervention,
    positions: Int[Tensor, "batch n"] | None,
    min_length: int = 0,
) -> Float[Tensor, "batch pos d_model"]:
    """Edit ``h`` at ``positions`` only; a chunk shorter than ``min_length`` passes through.

    ``min_length`` is the prompt length during generation: KV-cached decode steps see
    one new token, whose position is never a prompt position, so they are left alone.
    """
    if positions is None:
        return intervention(h)
    if h.shape[1] < min_length:
        return h
    if positions.shape[0] != h.shape[0]:
        raise ValueError(f"positions cover {positions.shape[0]} examples but the batch has {h.shape[0]}")
    if positions.numel() and int(positions.max()) >= h.shape[1]:
        raise ValueError(
            f"position {int(positions.max())} is beyond the sequence length {h.shape[1]}; "
            "positions index the padded input"
        )
    positions = positions.to(h.device)
    valid = positions >= 0
    rows = torch.arange(h.shape[0], device=h.device)[:, None].expand_as(positions)[valid]  # [N]
    cols = positions[valid]  # [N]
    edited = intervention(h[rows, cols])  # [N, d_model]
    # Out of place: autograd keeps h for the frozen layers below. Duplicate (row, col)
    # pairs carry identical values, so their write order does not matter.
    return h.index_put((rows, cols), edited)


@contextmanager
def attach(
    model: HookedModel,
    bindings: Sequence[Binding],
    *,
    min_length: int = 0,
) -> Iterator[HookedModel]:
    """Install ``bindings`` as forward hooks for the duration of the block.

    Bindings on the same hook run in the order given (a sequential composition).
    """
    hooks = []
    for b in bindings:
        model.hook_point(b.hook)  # a clear error for a bad name, before anything is installed
        fn = partial(_hook, intervention=b.intervention, positions=b.positions, min_length=min_length)
        hooks.append((b.hook, fn))
    with model.hooks(fwd_hooks=hooks):
        yield model


def _hook(h: Tensor, hook: object, *, intervention: Intervention, positions: Tensor | None, min_length: int) -> Tensor:
    return apply_at_positions(h, intervention, positions, min_length)
