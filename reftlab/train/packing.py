"""A padded batch as the fast path packs it: each row's unpadded tokens, their positions and targets,
and the packed row's layout (which example and position each query and key token has).

``batch_refusal`` says why a batch cannot be packed exactly; ``unpadded`` takes one row apart;
``content_key`` keys the fast path's cache by what an example is (its tokens and positions), for
batches that carry no example index; ``PrefixKV`` carries cached prefix keys/values into a call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from ..data.encode import IGNORE_INDEX


@dataclass(frozen=True)
class Layout:
    """Which example and position each query and key token has (keys: [prefixes; queries])."""

    q_seg: Int[Tensor, " N"]
    q_pos: Int[Tensor, " N"]
    k_seg: Int[Tensor, " K"]
    k_pos: Int[Tensor, " K"]

    @classmethod
    def packed(
        cls, rest: Sequence[int], prefixes: Sequence[int], device: Any, pos: Sequence[Tensor] | None = None
    ) -> "Layout":
        """Example b contributes its tokens ``prefixes[b]..prefixes[b]+rest[b]-1``; its ``prefixes[b]``
        earlier tokens are cached keys placed before all packed tokens. ``pos[b]`` gives each of its
        tokens' position (its index in the padded row; default ``0..``)."""
        pos = [torch.arange(p + t) for t, p in zip(rest, prefixes)] if pos is None else [x.cpu() for x in pos]
        q_seg = torch.cat([torch.full((t,), b) for b, t in enumerate(rest)])
        q_pos = torch.cat([x[p : p + t] for x, t, p in zip(pos, rest, prefixes)])
        p_seg = torch.cat([torch.full((p,), b) for b, p in enumerate(prefixes)] + [torch.empty(0, dtype=torch.long)])
        p_pos = torch.cat([x[:p] for x, p in zip(pos, prefixes)] + [torch.empty(0, dtype=torch.long)])
        return cls(
            q_seg.to(device),
            q_pos.to(device),
            torch.cat([p_seg, q_seg]).to(device),
            torch.cat([p_pos, q_pos]).to(device),
        )

    def allowed(self, window: int | None = None) -> Bool[Tensor, "N K"]:
        """Query i may attend key j: same example, not in the future, and within ``window``.

        >>> lay = Layout.packed([2, 1], [0, 1], "cpu")
        >>> lay.allowed().int().tolist()
        [[0, 1, 0, 0], [0, 1, 1, 0], [1, 0, 0, 1]]
        """
        q_seg, q_pos = self.q_seg[:, None], self.q_pos[:, None]
        ok = (self.k_seg[None, :] == q_seg) & (self.k_pos[None, :] <= q_pos)
        if window is not None:
            ok = ok & (self.k_pos[None, :] > q_pos - window)
        return ok


COLUMNS = ("input_ids", "attention_mask", "labels", "intervention_locations")


def batch_refusal(batch: Mapping[str, Tensor]) -> str | None:
    """Why the fast path cannot take ``batch``, or None. It packs each row's unmasked tokens (any
    padding: right, left, pyreft's leading pad) at their padded positions, as the plain path sees them."""
    for key in COLUMNS:
        if key not in batch:
            return f"it has no {key!r}"
    mask, labels = batch["attention_mask"].bool(), batch["labels"]
    scored = torch.cat([labels[:, 1:], torch.full_like(labels[:, :1], IGNORE_INDEX)], dim=1) != IGNORE_INDEX
    if bool((scored & ~mask).any()):
        return (
            "a padding token's next-token prediction is scored (labels[b, t+1] != -100 where attention_mask[b, t] == 0)"
        )
    locs = torch.as_tensor(batch["intervention_locations"]).to(mask.device)
    rows = torch.arange(mask.shape[0], device=mask.device)[:, None, None].expand_as(locs)
    inside = (locs >= 0) & (locs < mask.shape[1])
    if bool((locs >= mask.shape[1]).any()) or not bool(mask[rows[inside], locs[inside]].all()):
        return "an intervention location lies on padding or beyond the row"
    return None


@dataclass(frozen=True)
class Example:
    """One row without its padding: token ids, their positions in the padded row, each token's
    next-token target (``labels[t+1]`` of the padded row) and the locations as token indices."""

    ids: Tensor
    pos: Tensor
    targets: Tensor
    locations: Tensor


def unpadded(row: Mapping[str, Any]) -> Example:
    ids = torch.as_tensor(row["input_ids"])
    labels = torch.as_tensor(row["labels"])
    mask = torch.as_tensor(row["attention_mask"]) if "attention_mask" in row else torch.ones_like(ids)
    pos = mask.bool().nonzero().squeeze(1)  # [T]
    index = torch.full((len(ids),), -1, dtype=torch.long, device=pos.device)
    index[pos] = torch.arange(len(pos), device=pos.device)  # padded position -> token index
    locs = torch.as_tensor(row["intervention_locations"]).to(pos.device)
    locs = torch.where(locs >= 0, index[locs.clamp(min=0)], -1)
    return Example(ids[pos], pos, row_targets(labels)[pos], locs)


def content_keys(batch: Mapping[str, Tensor]) -> list[bytes]:
    """Cache keys for batches that carry no example index (the HF Trainer's): each example's
    unpadded token ids (and their positions, where padding precedes a token), as bytes. The
    cached entry also records its prefix length, so the same text with different intervention
    locations is recomputed, never mixed up."""
    return [content_key(batch["input_ids"][b], batch["attention_mask"][b]) for b in range(batch["input_ids"].shape[0])]


def content_key(input_ids: Any, attention_mask: Any = None) -> bytes:
    """The cache key of one example's token ids (a list or a tensor) and, optionally, its mask."""
    ids = torch.as_tensor(input_ids, dtype=torch.long).detach().cpu()
    mask = torch.ones_like(ids) if attention_mask is None else torch.as_tensor(attention_mask).cpu()
    pos = mask.bool().nonzero().squeeze(1)
    key = ids[pos].numpy().tobytes()
    if not torch.equal(pos, torch.arange(len(pos))):  # its positions matter too (learned and rotary embeddings)
        key += b"@" + pos.numpy().tobytes()
    return key


class PrefixKV:
    """A minimal HF cache for one packed call: records each block's keys/values, or
    prepends the cached prefix keys/values (``[1, kv_heads, P, head_dim]``) to the new ones."""

    is_compileable = False

    def __init__(self, first_layer: int, prefix: list[tuple[Tensor, Tensor]] | None = None) -> None:
        self.first_layer, self.prefix = first_layer, prefix
        self.captured: list[tuple[Tensor, Tensor]] = []

    def update(self, key: Tensor, value: Tensor, layer_idx: int, *args: Any, **kwargs: Any) -> tuple[Tensor, Tensor]:
        if self.prefix is None:
            self.captured.append((key, value))
            return key, value
        pk, pv = self.prefix[layer_idx - self.first_layer]
        return torch.cat([pk, key], dim=2), torch.cat([pv, value], dim=2)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0 if self.prefix is None else int(self.prefix[0][0].shape[2])


def row_targets(labels: Int[Tensor, " T"]) -> Int[Tensor, " T"]:
    """Next-token targets of one example: position t predicts labels[t+1]; the last predicts nothing."""
    return torch.cat([labels[1:], labels.new_full((1,), IGNORE_INDEX)])
