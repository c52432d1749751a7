"""Concept data: texts with a concept name and a label, read from tables or AxBench's files.

A ``ConceptData`` holds one row per text with the columns

    text     the text a direction reads (AxBench: ``output``)
    prompt   the instruction it answers ("" if none; AxBench: ``input``)
    concept  the concept the row belongs to; "" for a shared negative (a negative of every concept)
    label    "positive", "negative" or "hard negative"

For concept c the positives are the rows (c, positive), the negatives the rows (c, negative)
plus every shared negative, the hard negatives the rows (c, hard negative).

Readers take a ``pandas.DataFrame``, a ``datasets.Dataset`` or a file (.csv, .jsonl, .json,
.parquet) in either layout:

- AxBench's: ``input``, ``output``, ``output_concept``, ``category``, ``concept_id``. A row's
  concept is the ``output_concept`` of the positive rows with its ``concept_id`` (AxBench's
  evaluation files name the concept on negatives and a sense like ``"date//..."`` on hard
  negatives); ``concept_id == -1`` or ``output_concept == "EEEEE"`` marks a shared negative.
- a plain one: ``text``, ``concept``, ``label`` (and optionally ``prompt``).

>>> import pandas as pd
>>> df = pd.DataFrame({"text": ["a cat", "a dog", "tax form"], "concept": ["pets", "pets", ""],
...                    "label": ["positive", "positive", "negative"]})
>>> data = read_concepts(df)
>>> data.concepts, data.rows("pets", "negative")
(['pets'], [2])
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..data.build import read_table

LABELS = ("positive", "negative", "hard negative")
SHARED = "EEEEE"  # AxBench's concept name for negatives shared by every concept
AXBENCH_COLUMNS = ("input", "output", "output_concept", "category", "concept_id")
PLAIN_COLUMNS = ("text", "concept", "label")


@dataclass(frozen=True, eq=False)
class ConceptData:
    """Rows of ``text, prompt, concept, label`` (see the module docstring); ``source`` names where they came from."""

    frame: pd.DataFrame
    source: str = "<table>"

    def __post_init__(self) -> None:
        missing = [c for c in ("text", "prompt", "concept", "label") if c not in self.frame.columns]
        if missing:
            raise ValueError(
                f"{self.source}: ConceptData needs columns text, prompt, concept, label; missing {missing}"
            )
        bad = sorted(set(self.frame["label"]) - set(LABELS))
        if bad:
            raise ValueError(f"{self.source}: labels {bad} are not one of {list(LABELS)}")
        if len(self.frame) == 0:
            raise ValueError(f"{self.source}: no rows; a concept set needs positive and negative texts")

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def concepts(self) -> list[str]:
        """Concept names with at least one positive row, in order of appearance."""
        f = self.frame
        return list(dict.fromkeys(f.loc[(f["label"] == "positive") & (f["concept"] != ""), "concept"]))

    @property
    def texts(self) -> list[str]:
        return self.frame["text"].tolist()

    @property
    def prompts(self) -> list[str]:
        return self.frame["prompt"].tolist()

    def rows(self, concept: str, label: str) -> list[int]:
        """Row numbers of ``concept``'s texts with ``label`` (negatives include the shared ones)."""
        if label not in LABELS:
            raise ValueError(f"label={label!r} is not one of {list(LABELS)}")
        f = self.frame
        mine = f["concept"] == concept
        if label == "negative":
            mine = mine | (f["concept"] == "")
        return np.flatnonzero((mine & (f["label"] == label)).to_numpy()).tolist()

    def check_trainable(self, concepts: Sequence[str]) -> None:
        """Every concept needs positives and negatives to fit a direction."""
        for c in concepts:
            if not self.rows(c, "positive"):
                raise ValueError(f"{self.source}: concept {c!r} has no positive rows; known concepts: {self.concepts}")
            if not self.rows(c, "negative"):
                raise ValueError(
                    f"{self.source}: concept {c!r} has no negative rows (and there are no shared negatives); "
                    f"add rows with label 'negative' (AxBench: output_concept {SHARED!r}, concept_id -1)"
                )

    def subset(self, rows: Sequence[int], source: str | None = None) -> "ConceptData":
        return ConceptData(self.frame.iloc[list(rows)].reset_index(drop=True), source or self.source)

    def split(self, held_out: float = 0.3, *, seed: int = 0) -> tuple["ConceptData", "ConceptData"]:
        """(train, held-out): ``held_out`` of each (concept, label) group, drawn with ``seed``.

        Every group with at least two rows keeps at least one row on each side.
        """
        if not 0.0 < held_out < 1.0:
            raise ValueError(f"held_out={held_out!r} must be a fraction in (0, 1)")
        rng = np.random.default_rng(seed)
        train: list[int] = []
        held: list[int] = []
        for _, group in self.frame.groupby(["concept", "label"], sort=False):
            idx = rng.permutation(group.index.to_numpy())
            n = round(held_out * len(idx))
            if len(idx) >= 2:
                n = min(max(n, 1), len(idx) - 1)
            held += idx[:n].tolist()
            train += idx[n:].tolist()
        return (
            self.subset(sorted(train), f"{self.source} (train split)"),
            self.subset(sorted(held), f"{self.source} (held-out split)"),
        )

    def summary(self) -> pd.DataFrame:
        """Counts per concept and label (shared negatives counted for every concept)."""
        return pd.DataFrame(
            [{"concept": c, **{label: len(self.rows(c, label)) for label in LABELS}} for c in self.concepts]
        )


def read_concepts(
    source: Any,
    *,
    text_column: str | None = None,
    name: str | None = None,
) -> ConceptData:
    """Read concept data from a DataFrame, a ``datasets.Dataset`` or a file (see the module docstring).

    ``text_column`` overrides which column holds the text (default ``output``, else ``text``).
    """
    if isinstance(source, ConceptData):
        return source
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        return from_frame(read_table(path), text_column=text_column, name=name or str(path))
    if hasattr(source, "to_pandas") and hasattr(source, "column_names"):  # datasets.Dataset
        return from_frame(source.to_pandas(), text_column=text_column, name=name or "<dataset>")
    if isinstance(source, pd.DataFrame):
        return from_frame(source, text_column=text_column, name=name or "<DataFrame>")
    raise TypeError(
        f"cannot read concept data from a {type(source).__name__}; give a file path, a pandas DataFrame "
        "or a datasets.Dataset"
    )


def from_frame(frame: pd.DataFrame, *, text_column: str | None = None, name: str = "<DataFrame>") -> ConceptData:
    """Normalise an AxBench-layout or plain-layout table into ``ConceptData``."""
    cols = set(map(str, frame.columns))
    if {"output_concept", "category"} <= cols:
        return _from_axbench(frame, text_column or "output", name)
    if {"concept", "label"} <= cols:
        return _from_plain(frame, text_column or "text", name)
    raise ValueError(
        f"{name}: columns {sorted(cols)} are neither AxBench's ({', '.join(AXBENCH_COLUMNS)}) nor the plain "
        f"layout ({', '.join(PLAIN_COLUMNS)}, optional prompt); rename the columns"
    )


def _from_axbench(frame: pd.DataFrame, text_column: str, name: str) -> ConceptData:
    _require(frame, [text_column, "output_concept", "category"], name)
    labels = _labels(frame["category"], "category", name)
    named = frame["output_concept"].astype(str)
    if "concept_id" in frame.columns:
        ids = pd.to_numeric(frame["concept_id"], errors="coerce")
        if ids.isna().any():
            row = int(np.flatnonzero(ids.isna().to_numpy())[0])
            raise ValueError(
                f"{name}: column 'concept_id' row {row} is not an integer ({frame['concept_id'].iloc[row]!r})"
            )
        ids = ids.astype(int)
        positives = (labels == "positive") & (ids != -1)
        names_of = dict(zip(ids[positives], named[positives]))
        shared = (ids == -1) | (named == SHARED)
        unknown = sorted(set(ids[~shared]) - set(names_of))
        if unknown:
            raise ValueError(
                f"{name}: concept_id {unknown[0]} has no positive row, so its concept has no name; "
                "add its positives or drop its rows"
            )
        concept = ids.map(names_of).where(~shared, "")
    else:
        shared = named == SHARED
        concept = named.where(~shared, "")
    _check_shared(labels, shared, name, "output_concept")
    prompt = frame["input"].fillna("").astype(str) if "input" in frame.columns else ""
    return _build(frame[text_column], prompt, concept, labels, name, text_column)


def _from_plain(frame: pd.DataFrame, text_column: str, name: str) -> ConceptData:
    _require(frame, [text_column, "concept", "label"], name)
    labels = _labels(frame["label"], "label", name)
    concept = frame["concept"].fillna("").astype(str).replace(SHARED, "")
    _check_shared(labels, concept == "", name, "concept")
    prompt = frame["prompt"].fillna("").astype(str) if "prompt" in frame.columns else ""
    return _build(frame[text_column], prompt, concept, labels, name, text_column)


def _build(text: pd.Series, prompt: Any, concept: pd.Series, labels: pd.Series, name: str, col: str) -> ConceptData:
    bad = text.isna() | (text.astype(str).str.strip() == "")
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise ValueError(f"{name}: column {col!r} row {row} is empty; every row needs a text to read")
    out = pd.DataFrame(
        {"text": text.astype(str).to_numpy(), "prompt": prompt, "concept": concept.to_numpy(), "label": labels}
    )
    return ConceptData(out.reset_index(drop=True), name)


def _labels(values: pd.Series, column: str, name: str) -> pd.Series:
    text = values.astype(str).str.strip().str.lower().str.replace("_", " ")
    # AxBench's later files split hard negatives into "seen" and "unseen" ones.
    text = text.where(~text.str.startswith("hard negative"), "hard negative")
    bad = sorted(set(text) - set(LABELS))
    if bad:
        raise ValueError(f"{name}: column {column!r} has values {bad}; use one of {list(LABELS)}")
    return text.reset_index(drop=True)


def _check_shared(labels: pd.Series, shared: pd.Series, name: str, column: str) -> None:
    wrong = shared.to_numpy() & (labels.to_numpy() != "negative")
    if wrong.any():
        row = int(np.flatnonzero(wrong)[0])
        raise ValueError(
            f"{name}: row {row} has no concept (shared, {column} {SHARED!r} or empty) but label "
            f"{labels.iloc[row]!r}; only negatives can be shared by every concept"
        )


def _require(frame: pd.DataFrame, columns: Sequence[str], name: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name}: missing column {missing[0]!r} (columns: {sorted(map(str, frame.columns))})")
