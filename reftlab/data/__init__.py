"""Data for ReFT training: encoding, intervention locations, batching, pyreft's data modules and datasets."""

from .build import build_dataset, encode_examples, read_pairs, read_table
from .collate import ReftDataCollator, ReftRewardCollator, stack_locations
from .encode import IGNORE_INDEX, context_length, encode_pair, format_prompt, locations_for
from .prompt_format import PromptFormat
from .pyreft_compat import (
    collator_for,
    make_last_position_supervised_data_module,
    make_multiple_position_supervised_data_module,
)
from .pyreft_datasets import (
    ReftGenerationDataset,
    ReftPreferenceDataset,
    ReftRawDataset,
    ReftRewardDataset,
    ReftSupervisedDataset,
    alpaca_prompt,
)
from .reft_dataset import ReftDataset, get_intervention_locations, load_task_dataset, parse_positions

__all__ = [
    "IGNORE_INDEX",
    "PromptFormat",
    "ReftDataCollator",
    "ReftDataset",
    "ReftGenerationDataset",
    "ReftPreferenceDataset",
    "ReftRawDataset",
    "ReftRewardCollator",
    "ReftRewardDataset",
    "ReftSupervisedDataset",
    "alpaca_prompt",
    "build_dataset",
    "collator_for",
    "context_length",
    "encode_examples",
    "encode_pair",
    "format_prompt",
    "get_intervention_locations",
    "load_task_dataset",
    "locations_for",
    "make_last_position_supervised_data_module",
    "make_multiple_position_supervised_data_module",
    "parse_positions",
    "read_pairs",
    "read_table",
    "stack_locations",
]
