"""Prompt sets for analysis: normalise, tokenize and batch them.

A prompt set is a ``list[str]``, a ``datasets.Dataset`` or a ``pandas.DataFrame`` with a
``prompt`` column (and optionally a ``completion`` column, whose tokens carry the loss
in ``attribute``). Each example is tokenized on its own and right-padded here, so the
tokenizer is never mutated and prompt lengths are exact.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from ..data.encode import format_prompt
from ..data.files import SUFFIXES, read_rows
from ..data.prompt_format import PromptFormat

PROMPT_COLUMN = "prompt"
COMPLETION_COLUMNS = ("completion", "output")


@dataclass(frozen=True)
class PromptSet:
    """Prompts and optional completions, as plain strings."""

    prompts: tuple[str, ...]
    completions: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return len(self.prompts)


@dataclass(frozen=True)
class Batch:
    """One right-padded batch: ``ids``/``mask`` ``[batch, pos]``; ``prompt_lengths`` ``[batch]``."""

    index: Int[Tensor, " batch"]
    input_ids: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    prompt_lengths: Int[Tensor, " batch"]


def as_prompt_set(prompts: Any, *, column: str = PROMPT_COLUMN) -> PromptSet:
    """Normalise a list of strings, a Dataset or a DataFrame (``column`` + optional completion)."""
    if isinstance(prompts, PromptSet):
        return prompts
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings (or a Dataset/DataFrame), not one string; wrap it: [prompt]")
    columns = _columns(prompts)
    if columns is not None:
        if column not in columns:
            raise ValueError(
                f"the prompt set has no {column!r} column; its columns are {sorted(columns)} (pass column=...)"
            )
        texts = [str(x) for x in prompts[column]]
        comp_col = next((c for c in COMPLETION_COLUMNS if c in columns), None)
        comps = tuple(str(x) for x in prompts[comp_col]) if comp_col else None
    else:
        if not isinstance(prompts, (list, tuple)):
            raise TypeError(
                f"prompts must be a list of strings, a datasets.Dataset or a pandas.DataFrame, got a {type(prompts).__name__}"
            )
        texts = list(prompts)
        if not all(isinstance(t, str) for t in texts):
            bad = next(t for t in texts if not isinstance(t, str))
            raise TypeError(f"prompts must be strings; got a {type(bad).__name__}: {bad!r}")
        comps = None
    if not texts:
        raise ValueError("the prompt set is empty; give at least one prompt")
    return PromptSet(tuple(texts), comps)


def read_prompts(path: str | os.PathLike) -> PromptSet:
    """Read a prompt file: ``.txt`` (one prompt per line), ``.jsonl``, ``.json`` (list) or ``.csv``.

    JSON rows are strings or objects with a ``prompt`` field (and optionally ``completion``).
    """
    path = Path(path)
    if path.suffix == ".txt":
        if not path.is_file():
            raise FileNotFoundError(f"no prompt file at {path}")
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not lines:
            raise ValueError(f"prompt file {path} is empty; write one prompt per line")
        return as_prompt_set(lines)
    rows = read_rows(path, "prompt file", (".txt", *SUFFIXES))
    if not rows:
        raise ValueError(f"prompt file {path} has no rows; give at least one prompt")
    if all(isinstance(r, str) for r in rows):
        return as_prompt_set(rows)
    return _from_rows(rows, path)


@dataclass(frozen=True)
class Format:
    """How prompts are rendered before tokenizing: raw (``chat_template`` False), or as a user
    turn of the tokenizer's chat template (True) or of a Jinja template string, with an
    optional system message; ``origin`` says where the choice came from (for reports)."""

    chat_template: bool | str = False
    system_prompt: str | None = None
    origin: str = "default"

    def render(self, tokenizer: Any, prompt: str) -> str:
        return format_prompt(tokenizer, prompt, self.chat_template, self.system_prompt)

    def describe(self) -> str:
        """``"with the tokenizer's chat template and system prompt 'Be brief' (recorded with the checkpoint)"``."""
        if self.chat_template is False:
            how = "as raw text, no chat template"
        else:
            how = "with the " + (
                "tokenizer's chat template" if self.chat_template is True else "checkpoint's Jinja chat template"
            )
            how += f" and system prompt {self.system_prompt!r}" if self.system_prompt is not None else ""
        return f"{how} ({self.origin})"


def prompt_format(reft_model: Any, given: Any = None) -> Format:
    """The prompt format analysis uses: ``given`` (False: raw text; True: the chat template;
    a ``PromptFormat`` or its dict), else the one recorded with the ReftModel
    (``reft_model.prompt_format``: how training formatted prompts), else raw text.
    """
    if given is None:
        recorded = getattr(reft_model, "prompt_format", None)  # a HookedModel has none
        if recorded is None:
            return Format(origin="no prompt format recorded with the checkpoint")
        return _as_format(recorded, "as in training, recorded with the checkpoint")
    if isinstance(given, Format):
        return given
    if isinstance(given, bool):
        return Format(chat_template=given, origin="given")
    return _as_format(given, "given")


def _as_format(x: Any, origin: str) -> Format:
    fmt = PromptFormat.from_json(x)  # a PromptFormat, or its dict; anything else is a clear error
    return Format(chat_template=fmt.chat_template, system_prompt=fmt.system_prompt, origin=origin)


def tokenize(tokenizer: Any, prompt_set: PromptSet, fmt: Format | None = None) -> list[tuple[list[int], int]]:
    """Token ids of prompt (+ completion) per example, with the prompt's token count.

    With a chat-template ``fmt`` the prompt is rendered first and no special tokens are
    added (the template holds them), exactly as training data were encoded.
    """
    if tokenizer is None:
        raise ValueError("the model has no tokenizer; load it with load_model(model, tokenizer)")
    fmt = fmt or Format()
    templated = fmt.chat_template is not False
    out = []
    for i, raw in enumerate(prompt_set.prompts):
        prompt = fmt.render(tokenizer, raw)
        ids = list(tokenizer(prompt, add_special_tokens=not templated)["input_ids"])
        if not ids:
            raise ValueError(f"prompt {i} ({prompt!r}) has no tokens; remove empty prompts")
        n_prompt = len(ids)
        if prompt_set.completions is not None:
            # Tokenized apart and concatenated, so the prompt's tokens are exactly its own.
            ids += list(tokenizer(prompt_set.completions[i], add_special_tokens=False)["input_ids"])
        out.append((ids, n_prompt))
    return out


def batches(
    encoded: Sequence[tuple[list[int], int]],
    batch_size: int,
    pad_id: int,
    device: torch.device | str = "cpu",
) -> Iterator[Batch]:
    """Right-padded batches of ``batch_size``, longest examples first (least padding).

    ``Batch.index`` holds each row's position in ``encoded``.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be a positive int")
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i][0]))
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        width = len(encoded[rows[0]][0])
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for row, i in enumerate(rows):
            toks = encoded[i][0]
            ids[row, : len(toks)] = torch.tensor(toks, dtype=torch.long)
            mask[row, : len(toks)] = 1
        lengths = torch.tensor([encoded[i][1] for i in rows], dtype=torch.long)
        yield Batch(torch.tensor(rows), ids.to(device), mask.to(device), lengths.to(device))


def n_batches(n: int, batch_size: int) -> int:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be a positive int")
    return -(-n // batch_size)


def pad_id(tokenizer: Any) -> int:
    for name in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    return 0


def _columns(prompts: Any) -> set[str] | None:
    names = getattr(prompts, "column_names", None)  # datasets.Dataset
    if names is None and hasattr(prompts, "columns") and hasattr(prompts, "iloc"):  # pandas.DataFrame
        names = list(prompts.columns)
    return None if names is None else set(map(str, names))


def _from_rows(rows: list[Any], path: Path) -> PromptSet:
    if all(isinstance(r, dict) and PROMPT_COLUMN not in r for r in rows):
        raise ValueError(f"{path} has no {PROMPT_COLUMN!r} column; its columns are {sorted(rows[0])}")
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            raise ValueError(
                f"{path}: row {i} is a {type(r).__name__}; rows must all be strings or objects with a 'prompt' field"
            )
        if not isinstance(r.get(PROMPT_COLUMN), str):
            got = "no 'prompt' field" if PROMPT_COLUMN not in r else f"'prompt' = {r[PROMPT_COLUMN]!r}, not a string"
            raise ValueError(f"{path}: row {i} has {got}")
    import pandas as pd

    return as_prompt_set(pd.DataFrame(rows))
