"""Task types and their examples: generation, multiple choice (answered by generation), classification.

Every task works on one kind of example dict::

    {"prompt": str, "response": str, "choices": list[str] | None, "answer": int | None}

- ``generation``: ``response`` is the reference answer (``exact_match``, ``contains``,
  ``emoji_fraction``, ``loss``).
- ``multiple_choice``: ``choices`` are listed under the prompt (``render_choices``), the
  model is trained to answer with the text of ``choices[answer]`` (= ``response``) and
  scored by ``accuracy`` (the choice its greedy answer names, ``metrics.match_choice``).
- ``classification``: ``choices`` are the class names, ``answer`` the class index; a
  sequence-classification head scores the classes (``ReftTrainerForSequenceClassification``).

``read_examples`` reads them from a file, a DataFrame or a list of dicts; multiple
choice takes a ``choices`` list and an ``answer`` (index, or the right choice's text);
classification a ``label`` (index or class name) and the class names.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeVar

import torch
from torch import Tensor

from .build import read_pairs, read_table
from .encode import encode_pair, format_prompt, locations_for

TaskType = Literal["generation", "multiple_choice", "classification"]
TASKS: tuple[str, ...] = ("generation", "multiple_choice", "classification")
DEFAULT_METRIC = {"generation": "exact_match", "multiple_choice": "accuracy", "classification": "accuracy"}


def check_task(task: str) -> str:
    if task not in TASKS:
        raise ValueError(f"task={task!r} is not a task type; use one of {', '.join(TASKS)}")
    return task


def render_choices(prompt: str, choices: Sequence[str]) -> str:
    """The prompt a multiple-choice model sees: the question, then one option per line.

    >>> print(render_choices("Sky colour?", ["red", "blue"]))
    Sky colour?
    Options:
    - red
    - blue
    """
    return prompt.rstrip() + "\nOptions:\n" + "\n".join(f"- {c}" for c in choices)


def model_prompt(example: Mapping[str, Any], task: str) -> str:
    """The prompt text given to the model for ``example`` under ``task`` (before any chat template)."""
    if task == "multiple_choice":
        return render_choices(str(example["prompt"]), list(example["choices"]))
    return str(example["prompt"])


def read_examples(
    source: Any,
    task: str = "generation",
    *,
    prompt_column: str = "prompt",
    response_column: str = "response",
    choices_column: str = "choices",
    answer_column: str = "answer",
    label_column: str = "label",
    labels: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Example dicts (see the module docstring) from a .jsonl/.json/.csv path, a DataFrame or a list of dicts.

    >>> read_examples([{"prompt": "Sky?", "choices": ["red", "blue"], "answer": "blue"}], "multiple_choice")
    [{'prompt': 'Sky?', 'response': 'blue', 'choices': ['red', 'blue'], 'answer': 1}]
    >>> read_examples([{"prompt": "Good film", "label": "pos"}], "classification", labels=["neg", "pos"])[0]["answer"]
    1
    """
    check_task(task)
    if task == "generation":
        path = isinstance(source, (str, os.PathLike))  # read_pairs names the file in its errors
        prompts, responses = read_pairs(source if path else as_frame(source), prompt_column, response_column)
        return [{"prompt": p, "response": r, "choices": None, "answer": None} for p, r in zip(prompts, responses)]
    frame = as_frame(source)
    where = str(source) if isinstance(source, (str, os.PathLike)) else "the data"
    if task == "multiple_choice":
        needed = [prompt_column, choices_column]
        if answer_column not in frame.columns and response_column not in frame.columns:
            needed.append(answer_column)
    else:
        needed = [prompt_column, label_column]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise ValueError(f"{where} has no column(s) {missing} for task {task}; its columns are {list(frame.columns)}")
    rows = frame.to_dict("records")
    if task == "classification":
        names = list(labels) if labels is not None else sorted({str(r[label_column]) for r in rows})
        return [_classified(r, i, prompt_column, label_column, names) for i, r in enumerate(rows)]
    return [
        _multiple_choice(r, i, prompt_column, response_column, choices_column, answer_column)
        for i, r in enumerate(rows)
    ]


def as_frame(source: Any) -> Any:
    import pandas as pd

    if isinstance(source, (str, os.PathLike)):
        return read_table(source)
    if isinstance(source, list):
        if not source or not all(isinstance(r, Mapping) for r in source):
            raise ValueError("a list of examples must hold at least one dict")
        return pd.DataFrame(source)
    return source


def _multiple_choice(row: Mapping[str, Any], i: int, pc: str, rc: str, cc: str, ac: str) -> dict[str, Any]:
    choices = row[cc]
    if isinstance(choices, str) or not isinstance(choices, Sequence) or len(choices) < 2:
        raise ValueError(f"example {i}: {cc!r} must be a list of at least two choices, got {choices!r}")
    choices = [str(c) for c in choices]
    answer = row.get(ac, row.get(rc))
    if isinstance(answer, str) and not answer.lstrip("-").isdigit():
        if answer not in choices:
            raise ValueError(f"example {i}: answer {answer!r} is not one of its choices {choices}")
        answer = choices.index(answer)
    if answer is None or not 0 <= int(answer) < len(choices):
        raise ValueError(f"example {i}: answer {answer!r} must index its {len(choices)} choices")
    return {"prompt": str(row[pc]), "response": choices[int(answer)], "choices": choices, "answer": int(answer)}


def _classified(row: Mapping[str, Any], i: int, pc: str, lc: str, names: list[str]) -> dict[str, Any]:
    label = row[lc]
    if isinstance(label, str) and label in names:
        answer = names.index(label)
    elif isinstance(label, (int, str)) and str(label).isdigit() and int(label) < len(names):
        answer = int(label)
    else:
        raise ValueError(f"example {i}: label {label!r} is not one of the classes {names} (or an index into them)")
    return {"prompt": str(row[pc]), "response": names[answer], "choices": list(names), "answer": answer}


def as_classes(examples: Sequence[Mapping[str, Any]], labels: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Classification examples over ONE list of class names (``labels``, else first-seen order),
    whatever order each example listed its choices in.

    >>> ex = [{"prompt": "a", "choices": ["yes", "no"], "answer": 0}, {"prompt": "b", "choices": ["no", "yes"], "answer": 0}]
    >>> [(e["choices"], e["answer"]) for e in as_classes(ex)]
    [(['yes', 'no'], 0), (['yes', 'no'], 1)]
    """
    names = list(labels) if labels is not None else list(dict.fromkeys(c for ex in examples for c in ex["choices"]))
    out = []
    for i, ex in enumerate(examples):
        name = ex["choices"][ex["answer"]]
        if name not in names:
            raise ValueError(f"example {i}: class {name!r} is not one of the labels {names}")
        out.append({"prompt": ex["prompt"], "response": name, "choices": names, "answer": names.index(name)})
    return out


T = TypeVar("T")


def split_held_out(examples: Sequence[T], fraction: float = 0.2, seed: int = 0) -> tuple[list[T], list[T]]:
    """(train, held_out): a seeded shuffle, then the last ``fraction`` (at least one example) held out.

    >>> train, held = split_held_out(list(range(10)), 0.2)
    >>> len(train), len(held), sorted(train + held) == list(range(10))
    (8, 2, True)
    """
    if not 0 < fraction < 1:
        raise ValueError(f"held-out fraction {fraction!r} must be in (0, 1)")
    if len(examples) < 2:
        raise ValueError(f"{len(examples)} example(s) cannot be split into train and held-out; give at least 2")
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_held = min(len(examples) - 1, max(1, round(fraction * len(examples))))
    return [examples[i] for i in order[:-n_held]], [examples[i] for i in order[-n_held:]]


def encode_task_examples(
    tokenizer: Any,
    examples: Sequence[Mapping[str, Any]],
    task: str,
    *,
    positions: Any,
    num_interventions: int,
    chat_template: bool | str | None = False,
    system_prompt: str | None = None,
    max_length: int | None = None,
    nonstop: bool = False,
) -> list[dict[str, Any]]:
    """Training rows: causal-LM rows (``input_ids``, ``labels``, ``prompt_length``,
    ``intervention_locations``) for generation and multiple choice; for classification
    the whole prompt is the input and ``labels`` is ``[answer]``."""
    check_task(task)
    rows = []
    for i, ex in enumerate(examples):
        text = format_prompt(tokenizer, model_prompt(ex, task), chat_template, system_prompt)
        if task == "classification":
            ids = list(tokenizer(text, add_special_tokens=not chat_template)["input_ids"])
            if not ids:
                raise ValueError(f"example {i}: the prompt {ex['prompt'][:60]!r} tokenizes to nothing")
            if max_length is not None and len(ids) > max_length:
                raise ValueError(f"example {i}: the prompt is {len(ids)} tokens, the model's context is {max_length}")
            row: dict[str, Any] = {"input_ids": ids, "labels": [int(ex["answer"])], "prompt_length": len(ids)}
        else:
            row = dict(
                encode_pair(
                    tokenizer,
                    text,
                    str(ex["response"]),
                    index=i,
                    nonstop=nonstop,
                    templated=bool(chat_template),
                    max_length=max_length,
                )
            )
        locs = locations_for(int(row["prompt_length"]), positions, num_interventions)
        if all(x < 0 for r in locs for x in r):
            raise ValueError(f"example {i}: positions {positions!r} select no token of its prompt")
        row["intervention_locations"] = locs
        rows.append(row)
    return rows


def collate_classification(rows: Sequence[Mapping[str, Any]], pad_token_id: int) -> dict[str, Tensor]:
    """Right-padded ``input_ids``/``attention_mask``, ``intervention_locations`` ``[batch, k, n]``
    and ``labels`` ``[batch]`` (class indices)."""
    from .collate import ReftDataCollator

    batch = ReftDataCollator(pad_token_id=pad_token_id)([{k: v for k, v in r.items() if k != "labels"} for r in rows])
    batch["labels"] = torch.tensor([int(r["labels"][0]) for r in rows], dtype=torch.long)
    return batch
