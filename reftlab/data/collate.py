"""Batching encoded examples: right padding, so absolute positions stay valid.

A batch holds ``input_ids``, ``attention_mask`` and ``labels`` ``[batch, pos]``,
``intervention_locations`` ``[batch, num_interventions, n]`` (pyreft's layout; -1 is an
empty slot) and ``prompt_lengths`` ``[batch]``. Padding gets ``attention_mask`` 0 and
label -100; it is never an intervention location.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .encode import IGNORE_INDEX


@dataclass(frozen=True)
class ReftDataCollator:
    """Collate examples (dicts of lists or tensors) into a right-padded batch.

    >>> c = ReftDataCollator(pad_token_id=0)
    >>> b = c([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7], "prompt_length": 1, "intervention_locations": [[0]]},
    ...        {"input_ids": [8, 9], "labels": [-100, 9], "prompt_length": 1, "intervention_locations": [[0]]}])
    >>> b["input_ids"].tolist(), b["attention_mask"].tolist(), b["labels"].tolist()
    ([[5, 6, 7], [8, 9, 0]], [[1, 1, 1], [1, 1, 0]], [[-100, 6, 7], [-100, 9, -100]])
    >>> tuple(b["intervention_locations"].shape), b["prompt_lengths"].tolist()
    ((2, 1, 1), [1, 1])
    """

    pad_token_id: int = 0

    def __call__(self, instances: Sequence[Mapping[str, Any]]) -> dict[str, Tensor]:
        if not instances:
            raise ValueError("cannot collate an empty batch")
        ids = [_long(x["input_ids"]) for x in instances]
        width = max(len(i) for i in ids)
        batch = len(ids)
        input_ids = torch.full((batch, width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((batch, width), dtype=torch.long)
        labels = torch.full((batch, width), IGNORE_INDEX, dtype=torch.long)
        for b, (x, row) in enumerate(zip(instances, ids)):
            input_ids[b, : len(row)] = row
            attention_mask[b, : len(row)] = 1
            if "labels" in x:
                labels[b, : len(row)] = _long(x["labels"])
        out = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        if "prompt_length" in instances[0]:
            out["prompt_lengths"] = torch.tensor([int(x["prompt_length"]) for x in instances])
        if "intervention_locations" in instances[0]:
            locs = [_long(x["intervention_locations"]) for x in instances]  # each [K, n]
            k = max(t.shape[0] for t in locs)
            n = max(t.shape[1] for t in locs)
            stacked = torch.full((batch, k, n), -1, dtype=torch.long)
            for b, t in enumerate(locs):
                stacked[b, : t.shape[0], : t.shape[1]] = t
            out["intervention_locations"] = stacked
        return out


def _long(x: Any) -> Tensor:
    return x.long() if isinstance(x, Tensor) else torch.tensor(x, dtype=torch.long)
