"""The end of a search: rank its trials, retrain the winner, score it once on the test split.

The winner is the best trial by the study's ranking (``rank``) and is chosen on the validation
split only. It is then retrained from the same seed with its full schedule on fit + validation
and scored on the test split, which no trial saw: ``SearchResult.test_score`` is an honest
estimate of what the search found, where ``score`` (the winner's validation score) is biased
upwards by the choice itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..recipe.search import Candidate
from .log import COLUMNS, rung_rows, trial_rows, write_trials
from .trial import TrialRunner
from .workers import Job


@dataclass(frozen=True)
class SearchResult:
    """The best candidate, its validation and test scores, and every trial (``trials``: a DataFrame)."""

    best: Candidate
    score: float
    params: int
    metric: str
    higher_is_better: bool
    trials: Any = field(repr=False)
    stopped: str | None = None
    out: Path | None = None
    test_score: float = math.nan
    test_n: int = 0
    study: str = "reftlab-search"
    storage: str | None = None


def rank(higher_is_better: bool) -> Callable[[Mapping[str, Any]], tuple[int, float, float, int, int]]:
    """Sort key: complete before pruned, then score, validation loss, fewer parameters, earlier trial."""

    def key(row: Mapping[str, Any]) -> tuple[int, float, float, int, int]:
        score, loss = float(row["score"]), float(row["eval_loss"])
        value = math.inf if math.isnan(score) else (-score if higher_is_better else score)
        return (
            row["state"] != "complete",
            value,
            math.inf if math.isnan(loss) else loss,
            int(row["params"]),
            int(row["trial"]),
        )

    return key


def candidate_of(row: Mapping[str, Any], component: str) -> Candidate:
    epochs = row.get("epochs")
    return Candidate(
        layers=tuple(int(x) for x in str(row["layers"]).split(";")),
        positions=str(row["positions"]),
        kind=str(row["kind"]),
        rank=int(row["rank"]),
        lr=float(row["lr"]),
        component=component,
        epochs=None if epochs is None or (isinstance(epochs, float) and math.isnan(epochs)) else int(epochs),
    )


def finish(
    job: Job,
    study: Any,
    hooked: Any,
    refit: Sequence[Mapping[str, Any]],
    test: Sequence[Mapping[str, Any]],
    *,
    stopped: str | None,
    out: Path | None,
    say: Callable[[str], None],
) -> SearchResult:
    """The best trial of ``study``, retrained on ``refit`` and scored on ``test``; the trial log and page."""
    import pandas as pd

    rows = trial_rows(study)
    if not rows:
        raise RuntimeError(f"the search finished no trial: {stopped or 'nothing to run'}; give it a larger budget")
    if stopped:
        say(f"search stopped early: {stopped}")
    metric = job.evaluation.scorer()
    best_row = sorted(rows, key=rank(metric.higher_is_better))[0]
    best = candidate_of(best_row, job.settings.space.component)
    runner = TrialRunner(hooked, refit, test, evaluation=job.evaluation, training=job.training, seed=job.settings.seed)
    steps = (
        job.training if best.epochs is None else job.training.replace(epochs=best.epochs, max_steps=None)
    ).total_steps(len(refit))
    try:
        final = runner.run(best, steps)
    finally:
        runner.restore()
    say(
        f"best: trial {best_row['trial']} {best.key}: validation {metric.name} {best_row['score']:.4g}; retrained on "
        f"{len(refit)} examples, test {metric.name} {final['score']:.4g} (n={len(test)})"
    )
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    if out is not None:
        from ..viz.search import write_search_page

        write_trials(out, rows)
        reports = pd.DataFrame(rung_rows(study))
        write_search_page(table, out / "search.html", metric=metric.name, best=best.key, reports=reports)
    return SearchResult(
        best=best,
        score=float(best_row["score"]),
        params=int(best_row["params"]),
        metric=metric.name,
        higher_is_better=metric.higher_is_better,
        trials=table,
        stopped=stopped,
        out=out,
        test_score=float(final["score"]),
        test_n=len(test),
        study=job.study,
        storage=job.storage,
    )
