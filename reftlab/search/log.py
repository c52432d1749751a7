"""The trial log of a search, read from its Optuna study: ``trials.csv`` and the rung table.

The study (in its storage) is the record: ``trials.csv`` is rewritten whole from it after each
trial (through a temporary file and a rename, so an interruption never leaves half a row), one
row per trial that trained, complete or pruned. Trials pruned over the parameter cap trained
nothing and are left out; so are trials cut by the budget or interrupted (``FAIL``).
``rung_rows`` is the long form the search page plots: one row per score a trial reported.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..atomic import write_text

COLUMNS = (
    "trial",
    "state",
    "rung",
    "key",
    "layers",
    "positions",
    "kind",
    "rank",
    "lr",
    "epochs",
    "params",
    "steps",
    "seconds",
    "train_loss",
    "score",
    "eval_loss",
    "pruned",
    "worker",
    "warm_start",
)
TRIALS_FILE = "trials.csv"
_NUMBERS = {
    "worker": int,
    "trial": int,
    "rung": int,
    "rank": int,
    "lr": float,
    "params": int,
    "steps": int,
    "seconds": float,
}
_NUMBERS |= {"train_loss": float, "score": float, "eval_loss": float}


def finished(study: Any) -> list[Any]:
    """The trials of ``study`` that trained and finished (complete or pruned), by number."""
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    return sorted((t for t in done if t.user_attrs.get("trained")), key=lambda t: t.number)


def trial_rows(study: Any) -> list[dict[str, Any]]:
    """One row (``COLUMNS``) per finished trial."""
    return [trial_row(t) for t in finished(study)]


def trial_row(t: Any) -> dict[str, Any]:
    """The row of one finished trial (an ``optuna.trial.FrozenTrial``)."""
    a, reports = t.user_attrs, len(t.intermediate_values)
    return {
        **{k: a.get(k) for k in COLUMNS},
        "trial": t.number,
        "state": t.state.name.lower(),
        "rung": reports if t.state.name == "COMPLETE" else max(0, reports - 1),
        **{k: t.params.get(k) for k in ("layers", "positions", "kind", "rank", "epochs")},
        "lr": a.get("lr", t.params.get("lr")),
        **{k: a.get(k, float("nan")) for k in ("seconds", "train_loss", "score", "eval_loss")},
        "pruned": a.get("pruned", ""),
        "warm_start": a.get("warm_start", ""),
    }


def rung_rows(study: Any) -> list[dict[str, Any]]:
    """One row per score a finished trial reported (its rungs, then its end if it completed)."""
    out = []
    for row, t in zip(trial_rows(study), finished(study)):
        scores = sorted(t.intermediate_values.items())
        if t.state.name == "COMPLETE":
            scores.append((row["steps"], row["score"]))
        for rung, (step, score) in enumerate(scores):
            out.append({**row, "rung": rung, "steps": int(step), "score": float(score)})
    return out


def read_trials(path: Path) -> list[dict[str, Any]]:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return [{**row, **{k: cast(row[k]) for k, cast in _NUMBERS.items()}} for row in rows]


def write_trials(out: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=COLUMNS)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row[k] for k in COLUMNS})
    return write_text(out / TRIALS_FILE, buf.getvalue())
