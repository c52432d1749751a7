"""Batching encoded examples: right padding, so absolute positions stay valid.

A batch holds ``input_ids``, ``attention_mask`` and ``labels`` ``[batch, pos]``,
``intervention_locations`` ``[batch, num_interventions, n]`` (pyreft's layout; -1 is an
empty slot) and ``prompt_lengths`` ``[batch]``. Padding gets ``attention_mask`` 0 and
label -100; it is never an intervention location.

``ReftDataCollator(data_collator=hf_collator)`` is pyreft's form: the HF collator
(``DataCollatorForSeq2Seq``, ``DataCollatorWithPadding``) pads the token fields and the
locations are stacked here, -1 padded. ``ReftRewardCollator`` batches chosen/rejected
pairs for reward modelling: row ``2i`` is example i's chosen text, row ``2i+1`` its
rejected one.

Locations always index each example as it was before batching (pyreft's contract):
under right padding they index the batch directly; a collator that pads on the left
shifts the tokens, not the locations, and a warning says so.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from .encode import IGNORE_INDEX


@dataclass(frozen=True)
class ReftDataCollator:
    """Collate examples (dicts of lists or tensors) into a right-padded batch.

    ``data_collator`` (pyreft's argument) hands the token fields to an HF collator;
    without it, ``pad_token_id`` pads ``input_ids`` here. An example's own
    ``attention_mask`` is kept (pyreft's datasets mask a leading pad token).

    >>> c = ReftDataCollator(pad_token_id=0)
    >>> b = c([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7], "prompt_length": 1, "intervention_locations": [[0]]},
    ...        {"input_ids": [8, 9], "labels": [-100, 9], "prompt_length": 1, "intervention_locations": [[0]]}])
    >>> b["input_ids"].tolist(), b["attention_mask"].tolist(), b["labels"].tolist()
    ([[5, 6, 7], [8, 9, 0]], [[1, 1, 1], [1, 1, 0]], [[-100, 6, 7], [-100, 9, -100]])
    >>> tuple(b["intervention_locations"].shape), b["prompt_lengths"].tolist()
    ((2, 1, 1), [1, 1])
    """

    data_collator: Callable[[list[dict[str, Any]]], Mapping[str, Any]] | None = None
    pad_token_id: int = 0

    def __post_init__(self) -> None:
        if self.data_collator is not None and not callable(self.data_collator):
            raise TypeError(
                f"data_collator must be a callable HF collator (e.g. DataCollatorForSeq2Seq), got "
                f"{type(self.data_collator).__name__}; for a pad id use ReftDataCollator(pad_token_id=...)"
            )

    def __call__(self, instances: Sequence[Mapping[str, Any]]) -> dict[str, Tensor]:
        if not instances:
            raise ValueError("cannot collate an empty batch")
        if self.data_collator is not None:
            return self._with_hf_collator(instances)
        ids = [_long(x["input_ids"]) for x in instances]
        width = max(len(i) for i in ids)
        batch = len(ids)
        input_ids = torch.full((batch, width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((batch, width), dtype=torch.long)
        labels = torch.full((batch, width), IGNORE_INDEX, dtype=torch.long)
        for b, (x, row) in enumerate(zip(instances, ids)):
            input_ids[b, : len(row)] = row
            attention_mask[b, : len(row)] = _long(x["attention_mask"]) if "attention_mask" in x else 1
            if "labels" in x:
                labels[b, : len(row)] = _long(x["labels"])
        out = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        if "prompt_length" in instances[0]:
            out["prompt_lengths"] = torch.tensor([int(x["prompt_length"]) for x in instances])
        if "id" in instances[0]:
            out["id"] = torch.tensor([int(x["id"]) for x in instances])
        if "intervention_locations" in instances[0]:
            out["intervention_locations"] = stack_locations([x["intervention_locations"] for x in instances])
        return out

    def _with_hf_collator(self, instances: Sequence[Mapping[str, Any]]) -> dict[str, Tensor]:
        has_locations = "intervention_locations" in instances[0]
        # Lists, not tensors: HF collators pad lists (tensors take their slow numpy path).
        features = [
            {k: v.tolist() if isinstance(v, Tensor) else v for k, v in x.items() if k != "intervention_locations"}
            for x in instances
        ]
        assert self.data_collator is not None
        out = dict(self.data_collator(features))
        if has_locations:
            out["intervention_locations"] = stack_locations([x["intervention_locations"] for x in instances])
        _warn_if_left_padded(out.get("input_ids"), [x["input_ids"] for x in instances])
        return out


@dataclass(frozen=True)
class ReftRewardCollator:
    """pyreft's reward collator: each example's chosen and rejected texts become two rows.

    Rows ``0, 2, 4, ...`` are the chosen texts and ``1, 3, 5, ...`` the rejected ones, both
    with the example's intervention locations; ``reward`` holds the example's ratings (1.0
    and 0.0 when it has none). Token fields are padded by ``tokenizer.pad``.
    """

    tokenizer: Any
    padding: bool | str = True
    max_length: int | None = None
    pad_to_multiple_of: int | None = None
    return_tensors: str = "pt"

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, Tensor]:
        if not features:
            raise ValueError("cannot collate an empty batch")
        if self.return_tensors != "pt":
            raise ValueError(f"return_tensors={self.return_tensors!r}: reftlab trains with torch, use 'pt'")
        rows, rewards, locations = [], [], []
        for i, f in enumerate(features):
            missing = [k for k in ("chosen_output", "rejected_output", "intervention_locations") if k not in f]
            if missing:
                raise ValueError(
                    f"example {i} has no {missing}; ReftRewardCollator batches ReftRewardDataset examples "
                    f"(fields: {sorted(f)})"
                )
            for side, default in (("chosen", 1.0), ("rejected", 0.0)):
                ids = _long(f[f"{side}_output"])
                mask = _long(f[f"{side}_output_mask"]) if f"{side}_output_mask" in f else torch.ones_like(ids)
                rows.append({"input_ids": ids.tolist(), "attention_mask": mask.tolist()})
                rewards.append(float(f.get(f"{side}_reward", default)))
                locations.append(f["intervention_locations"])
        padded = self.tokenizer.pad(
            rows,
            padding=self.padding,
            max_length=self.max_length if self.padding == "max_length" else None,  # else unused (pyreft passes it)
            pad_to_multiple_of=self.pad_to_multiple_of,
            return_tensors="pt",
        )
        _warn_if_left_padded(padded["input_ids"], [r["input_ids"] for r in rows])
        return {
            "input_ids": padded["input_ids"],
            "attention_mask": padded["attention_mask"],
            "reward": torch.tensor(rewards),
            "intervention_locations": stack_locations(locations),
        }


def stack_locations(locations: Sequence[Any]) -> Int[Tensor, "batch num_interventions n"]:
    """Per-example ``[num_interventions][n]`` locations -> one ``[batch, K, n]`` tensor, -1 padded.

    >>> stack_locations([[[0, 3]], [[1]]]).tolist()
    [[[0, 3]], [[1, -1]]]
    """
    locs = [_long(x) for x in locations]
    for i, t in enumerate(locs):
        if t.ndim != 2:
            raise ValueError(
                f"example {i}: intervention_locations must be [num_interventions][n], got shape {tuple(t.shape)}"
            )
    k = max(t.shape[0] for t in locs)
    n = max(t.shape[1] for t in locs)
    stacked = torch.full((len(locs), k, n), -1, dtype=torch.long)
    for b, t in enumerate(locs):
        stacked[b, : t.shape[0], : t.shape[1]] = t
    return stacked


def _warn_if_left_padded(input_ids: Any, originals: Sequence[Any]) -> None:
    """Warn when the padded ``input_ids`` hold an example's tokens at the end of a longer row."""
    if not isinstance(input_ids, Tensor) or input_ids.ndim != 2:
        return
    width = input_ids.shape[1]
    for row, original in zip(input_ids, originals):
        ids = _long(original)
        n = len(ids)
        if n < width:  # only a row shorter than the batch shows the padding side
            if not torch.equal(row[:n].cpu(), ids) and torch.equal(row[width - n :].cpu(), ids):
                warnings.warn(
                    "the collator padded on the left: intervention_locations still index each example as it "
                    "was before padding (pyreft's contract); add each row's left-pad count before using them, "
                    "or pad on the right (tokenizer.padding_side = 'right')",
                    stacklevel=3,
                )
            return


def _long(x: Any) -> Tensor:
    return x.long() if isinstance(x, Tensor) else torch.tensor(x, dtype=torch.long)
