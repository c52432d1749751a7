"""The trial log of a search: ``trials.csv`` (one row per finished trial) and ``search.json``.

``search.json`` records what the search was started with (settings, data sizes, model,
task, metric); a search started again on the same folder with the same record reuses
every finished trial of ``trials.csv`` and runs only the rest, so an interrupted search
resumes where it stopped. A different record is an error that names the differences.
Both files are rewritten whole through a temporary file and a rename after each trial,
so an interruption never leaves half a row.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..atomic import write_text

COLUMNS = (
    "trial",
    "rung",
    "key",
    "layers",
    "positions",
    "kind",
    "rank",
    "lr",
    "params",
    "steps",
    "seconds",
    "train_loss",
    "score",
    "eval_loss",
)
TRIALS_FILE = "trials.csv"
RECORD_FILE = "search.json"


def start_log(out: Path, record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Create ``out`` or reopen it: the finished trials of a search with the same ``record``."""
    out.mkdir(parents=True, exist_ok=True)
    saved = out / RECORD_FILE
    trials = out / TRIALS_FILE
    if saved.is_file():
        old = json.loads(saved.read_text())
        if old != json.loads(json.dumps(record)):
            diff = sorted(k for k in set(old) | set(record) if old.get(k) != json.loads(json.dumps(record.get(k))))
            raise ValueError(
                f"{out} holds a search started with other settings (different: {', '.join(diff)}); "
                "resume it with the same settings, or give a new output folder"
            )
        return read_trials(trials) if trials.is_file() else []
    if trials.is_file() or (out / "best.yaml").is_file():
        raise FileExistsError(f"{out} holds search results without {RECORD_FILE}; give a new output folder")
    write_text(saved, json.dumps(record, indent=2) + "\n")
    return []


def read_trials(path: Path) -> list[dict[str, Any]]:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for row in rows:
        out.append(
            {
                **row,
                "trial": int(row["trial"]),
                "rung": int(row["rung"]),
                "rank": int(row["rank"]),
                "lr": float(row["lr"]),
                "params": int(row["params"]),
                "steps": int(row["steps"]),
                "seconds": float(row["seconds"]),
                "train_loss": float(row["train_loss"]),
                "score": float(row["score"]),
                "eval_loss": float(row["eval_loss"]),
            }
        )
    return out


def write_trials(out: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=COLUMNS)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row[k] for k in COLUMNS})
    return write_text(out / TRIALS_FILE, buf.getvalue())
