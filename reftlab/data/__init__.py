"""Data for ReFT training: encoding, intervention locations, batching, pyreft's data modules."""

from .build import build_dataset, encode_examples, read_pairs
from .collate import ReftDataCollator
from .encode import IGNORE_INDEX, context_length, encode_pair, format_prompt, locations_for
from .prompt_format import PromptFormat
from .pyreft_compat import (
    collator_for,
    make_last_position_supervised_data_module,
    make_multiple_position_supervised_data_module,
)

__all__ = [
    "IGNORE_INDEX",
    "PromptFormat",
    "ReftDataCollator",
    "build_dataset",
    "collator_for",
    "context_length",
    "encode_examples",
    "encode_pair",
    "format_prompt",
    "locations_for",
    "make_last_position_supervised_data_module",
    "make_multiple_position_supervised_data_module",
    "read_pairs",
]
