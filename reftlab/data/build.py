"""Native dataset builder: prompt/response pairs from a file, a DataFrame or a ``datasets.Dataset``.

    ds = reftlab.build_dataset("examples/emoji.jsonl", tokenizer, positions="f1+l1",
                               num_interventions=4, chat_template=True)

returns a ``datasets.Dataset`` with columns ``input_ids``, ``labels``, ``prompt_length``,
``intervention_locations`` (``[num_interventions][n]``), ``prompt`` and ``response``;
batch it with ``ReftDataCollator``. Every example is checked before anything is
returned; an error names the example and the fix.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..sites import Positions
from .encode import context_length, encode_pair, format_prompt, locations_for


def read_table(path: str | os.PathLike) -> Any:
    """A pandas DataFrame from a local ``.jsonl``, ``.json`` (a list of records), ``.csv`` or ``.parquet`` file.

    Text stays text: JSON values keep their JSON types and CSV cells are read as strings.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no data file at {path}")
    try:
        if path.suffix == ".jsonl":
            return pd.read_json(path, lines=True, dtype=False)
        if path.suffix == ".json":
            return pd.read_json(path, dtype=False)
        if path.suffix == ".csv":
            return pd.read_csv(path, dtype=str, keep_default_na=False)
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
    except ValueError as e:
        raise ValueError(f"cannot read {path} as {path.suffix[1:].upper()} ({e}); check the file's format") from None
    raise ValueError(f"data file {path} must end in {', '.join(TABLE_SUFFIXES)}")


TABLE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


def read_pairs(
    source: Any, prompt_column: str = "prompt", response_column: str = "response"
) -> tuple[list[str], list[str]]:
    """``(prompts, responses)`` from a data file (see ``read_table``), a pandas DataFrame or a ``datasets.Dataset``."""
    import pandas as pd

    if isinstance(source, (str, os.PathLike)):
        frame, where = read_table(source), str(source)
    elif isinstance(source, pd.DataFrame):
        frame, where = source, "the DataFrame"
    elif hasattr(source, "column_names") and hasattr(source, "to_pandas"):
        frame, where = source.to_pandas(), "the dataset"
    else:
        raise TypeError(
            f"data must be a file path, a pandas DataFrame or a datasets.Dataset, got {type(source).__name__}"
        )
    if len(frame) == 0:
        raise ValueError(f"{where} has no examples; give at least one prompt/response pair")
    missing = [c for c in (prompt_column, response_column) if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{where} has no column(s) {missing}; its columns are {list(frame.columns)}. "
            "Rename them or pass prompt_column=/response_column="
        )
    return [_text(v) for v in frame[prompt_column]], [_text(v) for v in frame[response_column]]


def build_dataset(
    source: Any,
    tokenizer: Any,
    *,
    positions: "str | Positions | Sequence[str | Positions]" = "l1",
    num_interventions: int = 1,
    share_weights: bool = True,
    chat_template: bool | str | None = False,
    system_prompt: str | None = None,
    prompt_column: str = "prompt",
    response_column: str = "response",
    nonstop: bool = False,
    model: Any = None,
    max_length: int | None = None,
) -> Any:
    """Tokenize and locate every example of ``source`` (see the module docstring).

    ``positions``: one spec for all interventions or one per intervention. ``model``
    (optional) gives the context length checked against (else ``max_length`` or the
    tokenizer's limit).
    """
    prompts, responses = read_pairs(source, prompt_column, response_column)
    return encode_examples(
        tokenizer,
        prompts,
        responses,
        positions=positions,
        num_interventions=num_interventions,
        share_weights=share_weights,
        chat_template=chat_template,
        system_prompt=system_prompt,
        nonstop=nonstop,
        max_length=max_length if max_length is not None else context_length(tokenizer, model),
    )


def encode_examples(
    tokenizer: Any,
    prompts: Sequence[str],
    responses: Sequence[str],
    *,
    positions: Any,
    num_interventions: int,
    share_weights: bool = True,
    chat_template: bool | str | None = False,
    system_prompt: str | None = None,
    nonstop: bool = False,
    max_length: int | None = None,
) -> Any:
    """The shared core of ``build_dataset`` and the pyreft-style data modules."""
    import datasets

    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses; give one response per prompt")
    if not prompts:
        raise ValueError("no examples: give at least one prompt/response pair")
    rows: dict[str, list[Any]] = {
        k: [] for k in ("input_ids", "labels", "prompt_length", "intervention_locations", "prompt", "response")
    }
    for i, (p, r) in enumerate(zip(prompts, responses)):
        text = format_prompt(tokenizer, p, chat_template, system_prompt)
        ex = encode_pair(
            tokenizer, text, r, index=i, nonstop=nonstop, templated=bool(chat_template), max_length=max_length
        )
        locs = locations_for(int(ex["prompt_length"]), positions, num_interventions, share_weights)
        if all(x < 0 for row in locs for x in row):
            raise ValueError(f"example {i}: positions {positions!r} select no token of its prompt {p[:60]!r}")
        for k, v in ex.items():
            rows[k].append(v)
        rows["intervention_locations"].append(locs)
        rows["prompt"].append(p)
        rows["response"].append(r)
    return datasets.Dataset.from_dict(rows)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"prompt/response values must be strings, got {type(value).__name__} ({value!r})")
    return value
