"""pyreft's data-module functions, with its calls and return value, and correct positions.

``make_last_position_supervised_data_module(tokenizer, model, inputs, outputs)`` returns
``dict(train_dataset=..., eval_dataset=None, data_collator=...)`` as pyreft 0.1.0 does;
``**data_module`` goes straight into ``ReftTrainerForCausalLM``. Differences from pyreft,
all deliberate: ``l1`` is the last prompt token in both functions; a prompt too short for
``fN+lM`` gets -1 (empty) slots instead of positions shifted onto response tokens; the
prompt and response are tokenized separately (the prompt's ids are the ids generation
sees); a prompt or example longer than the model's context is an error, not a silent
truncation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .build import encode_examples
from .collate import ReftDataCollator
from .encode import context_length


def make_last_position_supervised_data_module(
    tokenizer: Any,
    model: Any,
    inputs: Sequence[str],
    outputs: Sequence[str],
    num_interventions: int = 1,
    nonstop: bool = False,
) -> dict[str, Any]:
    """Every intervention acts on the last prompt token (``l1``) of each example.

    >>> from reftlab.models import tiny_tokenizer
    >>> dm = make_last_position_supervised_data_module(tiny_tokenizer(), None, ["Hi"], ["yo"])
    >>> dm["train_dataset"][0]["intervention_locations"], dm["eval_dataset"]
    ([[1]], None)
    """
    return _module(tokenizer, model, inputs, outputs, "l1", num_interventions, True, nonstop)


def make_multiple_position_supervised_data_module(
    tokenizer: Any,
    model: Any,
    inputs: Sequence[str],
    outputs: Sequence[str],
    positions: str = "f1+l1",
    num_interventions: int = 1,
    nonstop: bool = False,
    share_weights: bool = False,
) -> dict[str, Any]:
    """Interventions act on the first/last prompt tokens ``positions`` names.

    With ``share_weights=False`` and both first and last counts, the first half of the
    interventions gets the first positions and the second half the last (pyreft's
    convention; ``num_interventions`` must then be even).
    """
    return _module(tokenizer, model, inputs, outputs, positions, num_interventions, share_weights, nonstop)


def _module(
    tokenizer: Any,
    model: Any,
    inputs: Sequence[str],
    outputs: Sequence[str],
    positions: str,
    num_interventions: int,
    share_weights: bool,
    nonstop: bool,
) -> dict[str, Any]:
    train = encode_examples(
        tokenizer,
        list(inputs),
        list(outputs),
        positions=positions,
        num_interventions=num_interventions,
        share_weights=share_weights,
        nonstop=nonstop,
        max_length=context_length(tokenizer, model),
    )
    return {"train_dataset": train, "eval_dataset": None, "data_collator": collator_for(tokenizer)}


def collator_for(tokenizer: Any) -> ReftDataCollator:
    """A ``ReftDataCollator`` padding with the tokenizer's pad id (else eos, else 0)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return ReftDataCollator(pad_token_id=int(pad) if pad is not None else 0)
