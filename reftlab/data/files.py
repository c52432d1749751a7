"""Reading rows from a data file (``.jsonl``, ``.json``, ``.csv``), with errors that name the file and line.

One reader for training data (``read_pairs``) and prompt files (``reftlab.analysis.read_prompts``).
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

SUFFIXES = (".jsonl", ".json", ".csv")


def read_rows(path: str | os.PathLike, what: str = "data file", suffixes: tuple[str, ...] = SUFFIXES) -> list[Any]:
    """The rows of ``path``: one JSON value per line (``.jsonl``), a JSON list (``.json``), or
    one dict of strings per CSV record (``.csv``, first line the header). Blank JSONL lines are skipped.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "d.jsonl"
    >>> _ = p.write_text('{"prompt": "hi"}\\n{"prompt": "yo"\\n')
    >>> read_rows(p)
    Traceback (most recent call last):
    ValueError: ...d.jsonl, line 2: not valid JSON (Expecting ',' delimiter); each line must be one JSON object
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {what} at {path}" + (" (it is a folder)" if path.is_dir() else ""))
    if path.suffix not in suffixes:
        raise ValueError(f"{what} {path} must end in {', '.join(suffixes)}")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        rows = []
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(
                    f"{path}, line {n}: not valid JSON ({e.msg}); each line must be one JSON object"
                ) from None
        return rows
    if path.suffix == ".json":
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
        if not isinstance(rows, list):
            raise ValueError(f"{path} must hold a JSON list (one entry per row), got a {type(rows).__name__}")
        return rows
    reader = csv.DictReader(text.splitlines())
    if not reader.fieldnames:
        raise ValueError(f"{path} has no header line; the first line names the columns (e.g. prompt,response)")
    rows = []
    for n, row in enumerate(reader, start=2):
        if None in row:
            raise ValueError(f"{path}, line {n}: more fields than the header's {len(reader.fieldnames)}")
        rows.append(row)
    return rows
