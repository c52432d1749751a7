"""Seeing a site's representation just before and just after its intervention, in one forward.

``attach`` runs bindings on the same hook in the order given, so a ``Tap`` (an identity
callable that keeps what passes through) bound right before an intervention and one
right after it see ``h`` and ``phi(h)`` at every position of the chunk, while the model
runs exactly as it would with the ReFT attached. No hook is installed outside ``attach``.

When only the representations are wanted (``stop=True``), the last tap to fill raises
``StopForward``: the layers above the deepest site and the unembedding never run, and
``attach`` removes its hooks on the way out as after any exception.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ..attach import Binding, ReftLike, attach
from .prompts import Batch


class MissingPositions(ValueError):
    """An intervention has no positions of its own and none were given (``key``, ``hook``)."""

    def __init__(self, message: str, key: str, hook: str) -> None:
        super().__init__(message)
        self.key, self.hook = key, hook


class StopForward(Exception):
    """Every tap of a group has its value: the rest of the forward pass is not needed."""


class Tap:
    """Identity on ``[..., d_model]`` that keeps the last value it saw (detached).

    With a ``group`` (a list of taps, itself included), the tap that completes the group
    raises ``StopForward``. An ``Edit`` (``reftlab.attach``) of kind ``"tap"``.
    """

    kind = "tap"
    arity = 1

    def __init__(self, group: list["Tap"] | None = None) -> None:
        self.value: Tensor | None = None
        self.group = group
        if group is not None:
            group.append(self)

    def __call__(self, h: Tensor) -> Tensor:
        self.value = h.detach()
        if self.group is not None and all(t.value is not None for t in self.group):
            raise StopForward
        return h


@dataclass(frozen=True)
class Seen:
    """What one intervention saw in one batch: before/after ``[batch, pos, d_model]``, its positions."""

    before: Float[Tensor, "batch pos d_model"]
    after: Float[Tensor, "batch pos d_model"]
    positions: Int[Tensor, "batch n"] | None


def check_keys(reft_model: ReftLike, key: str | Sequence[str] | None) -> list[str]:
    """Intervention keys to analyse (None: all), with a clear error for unknown ones."""
    known = list(reft_model.interventions)
    keys = known if key is None else [key] if isinstance(key, str) else list(key)
    unknown = [k for k in keys if k not in known]
    if unknown or not keys:
        raise ValueError(f"no intervention {unknown[0] if unknown else key!r}; this ReftModel has {known}")
    return keys


def positions_used(reft_model: ReftLike, positions: Any, keys: Sequence[str], where: str) -> dict[str, str]:
    """What each of ``keys`` will edit, as text (``"f1+l1 (site default)"``); checked before any work.

    A site saved without positions (pyreft's way: positions per call) needs ``positions=``:
    the error names the intervention and says how to give them.
    """
    from ..sites import Positions, positions_per_intervention

    all_keys = list(reft_model.interventions)
    per = dict(zip(all_keys, positions_per_intervention(positions, all_keys)))
    out = {}
    for k in keys:
        site = reft_model.sites[all_keys.index(k)]
        given = per[k]
        if given is None and site.positions is None:
            raise MissingPositions(
                f"{where}: intervention {k!r} at {site.hook} has no positions of its own (a checkpoint saved "
                "pyreft's way records none); pass positions= (a spec such as 'l1' or 'f1+l1' for every "
                "intervention, a list with one per intervention, or a dict by key)",
                k,
                site.hook,
            )
        if given is None:
            out[k] = f"{site.positions} (site default)"
        elif isinstance(given, (str, Positions)):
            out[k] = f"{Positions.parse(given)} (given)"
        else:
            out[k] = "explicit indices (given)"
    return out


@contextmanager
def eval_mode(reft_model: ReftLike) -> Iterator[None]:
    """Every module in eval mode (no dropout) and no autograd; each module's own flag restored after."""
    was = [(m, m.training) for m in reft_model.modules()]
    try:
        reft_model.eval()
        with torch.inference_mode():
            yield
    finally:
        for m, training in was:
            m.training = training


def forward_seen(
    reft_model: ReftLike,
    batch: Batch,
    keys: Sequence[str],
    positions: Any = None,
    *,
    replace: dict[str, Any] | None = None,
    drop: Sequence[str] = (),
    stop: bool = False,
) -> tuple[Any, dict[str, Seen]]:
    """One forward of ``batch`` with the ReFT attached; returns the HF output and what ``keys`` saw.

    ``replace`` swaps an intervention for another callable (e.g. one with a direction
    projected out); ``drop`` removes interventions. ``stop``: end the pass once every
    key's site was seen (the output is then None).
    """
    # One batch of a prompt set may have no position at all; callers check the whole set.
    bindings = reft_model.bindings(positions, batch.attention_mask, batch.prompt_lengths, allow_empty=True)
    taps: dict[str, tuple[Tap, Tap, Tensor | None]] = {}
    group: list[Tap] | None = [] if stop and keys else None
    wired: list[Binding] = []
    for k, b in zip(reft_model.interventions, bindings):
        if k in drop:
            continue
        if replace and k in replace:
            b = Binding(b.hook, replace[k], b.positions)
        if k in keys:
            before, after = Tap(group), Tap(group)
            taps[k] = (before, after, b.positions)
            wired += [Binding(b.hook, before), b, Binding(b.hook, after)]
        else:
            wired.append(b)
    out = None
    try:
        with attach(reft_model.hooked, wired):
            out = reft_model.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
    except StopForward:
        pass
    seen = {}
    for k, (before, after, pos) in taps.items():
        if before.value is None or after.value is None:
            raise RuntimeError(f"the site of {k!r} was not reached by the forward pass")
        seen[k] = Seen(before.value, after.value, pos)
    return out, seen


def batch_positions(positions: Any, batch: Batch, n_prompts: int) -> Any:
    """Slice per-prompt ``[n_prompts, n]`` position tensors (alone or in a dict) to this batch's rows.

    Specs (``"l1"``, ``"f3+l3"``) and None pass through; they resolve per batch.
    """
    if isinstance(positions, dict):
        return {k: batch_positions(v, batch, n_prompts) for k, v in positions.items()}
    if isinstance(positions, Tensor):
        if positions.ndim != 2 or positions.shape[0] != n_prompts:
            raise ValueError(
                f"a positions tensor must be [n_prompts={n_prompts}, n] (absolute indices per prompt, -1 = none); "
                f"got shape {tuple(positions.shape)}"
            )
        return positions[batch.index.to(positions.device)]
    return positions


def position_mask(seen: Seen, attention_mask: Tensor) -> Tensor:
    """``[batch, pos]`` True where the intervention edited (from its resolved positions)."""
    if seen.positions is None:
        return attention_mask.bool()
    mask = torch.zeros_like(attention_mask, dtype=torch.bool)
    pos = seen.positions.to(mask.device)
    valid = pos >= 0
    rows = torch.arange(pos.shape[0], device=mask.device)[:, None].expand_as(pos)[valid]
    mask[rows, pos[valid]] = True
    return mask
