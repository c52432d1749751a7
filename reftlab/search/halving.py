"""``reftlab.search``: successive halving over ReFT settings, within a budget, resumable.

    result = reftlab.search(model, "train.jsonl", eval=None, budget="15m", max_params=23_040)
    result.best            # Candidate(layers=(6, 18), positions='f1+l1', kind='loreft', rank=4, lr=0.01)
    result.trials          # pandas: one row per trial (settings, params, steps, seconds, score)

The schedule (Jamieson & Talwalkar 2016, "successive halving"):

    rung r = 0..R:  steps_r = full_steps / eta^(R-r)       (SearchSettings.rung_steps)
                    n_r     = ceil(candidates / eta^r)      the best n_r of rung r-1 go on
    rung 0 trains ``candidates`` settings sampled (seeded) from the space's grid under
    the parameter cap; the last rung trains the survivors with the full schedule.

Every trial retrains from the same seed with its own complete lr schedule, so a trial
depends only on (candidate, steps): a search that stopped (Ctrl-C, a crash, the budget)
resumes from ``OUT/trials.csv`` with the same plan (also with another budget: a search the
budget stopped continues with a larger one). The budget is kept: a step budget
counts every trial's optimizer steps and never starts a trial that would exceed it; a
wall-clock budget never starts a trial its measured speed says would not finish, and
cuts a trial's training at the deadline (that trial is dropped). Ranking: by score
(``metric.higher_is_better``), then lower held-out loss (a finer signal where a coarse
metric ties, e.g. exact match 0 for every short run), then fewer parameters, then earlier trial.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..data.tasks import as_classes, check_task, read_examples, split_held_out
from ..evaluate import EvalSettings
from ..metrics import Metric
from ..recipe.search import Candidate, SearchSettings, SearchSpace, parse_budget
from ..train.config import TrainConfig
from .log import COLUMNS, start_log, write_trials
from .space import sample
from .trial import OutOfTime, TrialRunner


@dataclass(frozen=True)
class SearchResult:
    """The best candidate, its score, and every trial (``trials``: a DataFrame in run order)."""

    best: Candidate
    score: float
    params: int
    metric: str
    higher_is_better: bool
    trials: Any = field(repr=False)
    stopped: str | None = None
    out: Path | None = None


def search(
    model: Any,
    train: Any,
    eval: Any = None,
    *,
    space: SearchSpace | Mapping[str, Any] | None = None,
    budget: str | float | None = None,
    max_params: int | None = None,
    task: str = "generation",
    metric: "str | Metric | Callable[[str, Mapping[str, Any]], float] | None" = None,
    training: TrainConfig | None = None,
    labels: Sequence[str] | None = None,
    chat_template: bool | str | None = False,
    system_prompt: str | None = None,
    candidates: int = 27,
    eta: int = 3,
    min_steps: int = 4,
    seed: int = 0,
    held_out: float = 0.2,
    max_new_tokens: int = 16,
    batch_size: int = 16,
    out: str | Path | None = None,
    progress: bool = True,
    on_trial: Callable[[dict[str, Any]], None] | None = None,
    log: Callable[[str], None] | None = None,
    started: float | None = None,
) -> SearchResult:
    """Find the best ReFT setting for ``train`` (see the module docstring).

    ``model``: a HookedModel (a sequence classifier for ``task="classification"``).
    ``train``/``eval``: examples (a file, a DataFrame or a list of dicts; ``reftlab.data.tasks``);
    without ``eval``, ``held_out`` of ``train`` is held out (seeded). ``training``: the
    full schedule (the last rung's; batch size, epochs or max_steps, schedule). ``out``:
    a folder for ``trials.csv`` and ``search.json`` (resume) and ``search.html``.
    ``on_trial(row)`` is called after each finished trial. ``started``: a
    ``time.monotonic()`` from which a wall-clock budget counts (default: now).
    The keywords from ``space`` to ``seed`` are a ``SearchSettings``, those from ``task`` to
    ``batch_size`` an ``EvalSettings``: ``search_with`` takes the two objects.
    """
    started = time.monotonic() if started is None else started
    evaluation = EvalSettings(
        task=task,
        metric=metric,
        labels=labels,
        chat_template=chat_template,
        system_prompt=system_prompt,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
    )
    settings = SearchSettings(
        space=space if isinstance(space, SearchSpace) else SearchSpace.from_mapping(space or {}),
        budget=None if budget is None else str(budget),
        max_params=max_params,
        candidates=candidates,
        eta=eta,
        min_steps=min_steps,
        seed=seed,
    )
    return search_with(
        model,
        train,
        eval,
        settings,
        evaluation,
        training=training,
        held_out=held_out,
        out=out,
        progress=progress,
        on_trial=on_trial,
        log=log,
        started=started,
    )


def search_with(
    model: Any,
    train: Any,
    eval: Any,
    settings: SearchSettings,
    evaluation: EvalSettings,
    *,
    training: TrainConfig | None = None,
    held_out: float = 0.2,
    out: str | Path | None = None,
    progress: bool = True,
    on_trial: Callable[[dict[str, Any]], None] | None = None,
    log: Callable[[str], None] | None = None,
    started: float | None = None,
) -> SearchResult:
    """``search`` with its settings as two objects: what to search and how long (``settings``), how a
    trial is scored (``evaluation``, whose ``task`` is required). The other arguments are ``search``'s."""
    budget = _Budget(parse_budget(settings.budget), time.monotonic() if started is None else started)
    task = check_task(str(evaluation.task))
    evaluation = evaluation.replace(metric=evaluation.scorer())
    training = training or TrainConfig()
    train_ex, eval_ex = _examples(train, eval, task, evaluation.labels, held_out, settings.seed)
    if isinstance(model, (str, Path)):
        model = _load(model, task, len(train_ex[0]["choices"] or ()), settings.seed)
    runner = TrialRunner(model, train_ex, eval_ex, evaluation=evaluation, training=training, seed=settings.seed)
    say = log or (lambda msg: tqdm.write(msg))
    grid = settings.space.grid(model.n_layers, model.d_model, settings.max_params)
    plan = _Plan.of(settings, sample(grid, settings.candidates, settings.seed), training.total_steps(len(train_ex)))
    record = {
        "settings": {k: v for k, v in settings.to_json().items() if k != "budget"},  # a new budget may continue it
        "task": task,
        "metric": runner.metric.name,
        "training": training.replace(progress=True).to_json(),
        "model": f"{model!r} from {getattr(model.hf_model.config, '_name_or_path', '') or 'memory'}",
        "data": _fingerprint(train_ex, eval_ex),
        "held_out": held_out if eval is None else None,
        "format": {"chat_template": evaluation.chat_template, "system_prompt": evaluation.system_prompt},
        "generation": {"max_new_tokens": evaluation.max_new_tokens},
    }
    out_dir = Path(out) if out is not None else None
    previous = start_log(out_dir, record) if out_dir is not None else []
    budget.resume(previous)
    say(
        f"search: {len(grid)} settings under the cap, {len(plan.pool)} sampled; rungs "
        f"{list(zip(plan.sizes, plan.rungs))} (candidates, steps); {len(train_ex)} train / {len(eval_ex)} held-out "
        f"examples; metric {runner.metric.name}" + (f"; resuming {len(previous)} finished trials" if previous else "")
    )
    halving = _Halving(runner, plan, budget, out_dir, {(row["rung"], row["key"]): row for row in previous}, say)
    bar = tqdm(total=sum(plan.sizes), desc="search", disable=not progress, dynamic_ncols=True)
    try:
        halving.run(bar, on_trial)
    finally:
        bar.close()
        runner.restore()
    return halving.result(out_dir)


@dataclass(frozen=True)
class _Plan:
    """The candidates sampled, and per rung its steps and how many candidates it trains."""

    pool: list[Candidate]
    rungs: list[int]
    sizes: list[int]

    @classmethod
    def of(cls, settings: SearchSettings, pool: list[Candidate], full_steps: int) -> "_Plan":
        rungs = settings.rung_steps(full_steps)
        return cls(pool, rungs, [max(1, math.ceil(len(pool) / settings.eta**r)) for r in range(len(rungs))])


@dataclass
class _Budget:
    """A step or wall-clock budget: what is spent (also by a resumed search's finished trials), and whether
    the next trial may start."""

    limit: tuple[str, float] | None
    started: float
    used_steps: int = 0
    used_before: float = 0.0
    speed: list[float] = field(default_factory=list)  # training seconds per step of each trial run here
    eval_s: list[float] = field(default_factory=list)  # evaluation seconds of each trial run here

    def resume(self, previous: Sequence[Mapping[str, Any]]) -> None:
        self.used_steps = sum(r["steps"] for r in previous)
        self.used_before = sum(r["seconds"] for r in previous)

    def refusal(self, steps: int) -> tuple[str | None, float | None]:
        """(why a ``steps``-step trial may not start, or None; the deadline it must finish by, or None)."""
        if self.limit is not None and self.limit[0] == "steps" and self.used_steps + steps > self.limit[1]:
            return f"the step budget ({int(self.limit[1])}) would be exceeded by a {steps}-step trial", None
        if self.limit is None or self.limit[0] != "seconds":
            return None, None
        deadline = self.started + self.limit[1] - self.used_before
        estimate = (statistics.median(self.speed) * steps + statistics.median(self.eval_s)) if self.speed else 0.0
        if time.monotonic() + estimate > deadline:
            return f"the time budget ({self.limit[1]:.0f}s) leaves too little for a {steps}-step trial", deadline
        return None, deadline

    def spent(self, row: dict[str, Any], steps: int) -> None:
        """Count a finished trial (``row`` loses its ``train_seconds``)."""
        self.speed.append(row.pop("train_seconds") / steps)
        self.eval_s.append(row["seconds"] - self.speed[-1] * steps)
        self.used_steps += steps


@dataclass
class _Halving:
    """The rungs of one search, run in order; ``rows`` collects the trials (resumed ones included)."""

    runner: TrialRunner
    plan: _Plan
    budget: _Budget
    out_dir: Path | None
    done: dict[tuple[int, str], dict[str, Any]]
    say: Callable[[str], None]
    rows: list[dict[str, Any]] = field(default_factory=list)
    stopped: str | None = None

    def __post_init__(self) -> None:
        self.rank = _ranker(self.runner.metric.higher_is_better)

    def run(self, bar: Any, on_trial: Callable[[dict[str, Any]], None] | None) -> None:
        current = self.plan.pool
        for r, steps in enumerate(self.plan.rungs):
            if r > 0:
                ranked = sorted((row for row in self.rows if row["rung"] == r - 1), key=self.rank)
                keep = {row["key"] for row in ranked[: self.plan.sizes[r]]}
                current = [c for c in current if c.key in keep]
            self.rung(r, steps, current, bar, on_trial)
            if self.stopped:
                break

    def rung(
        self,
        r: int,
        steps: int,
        current: list[Candidate],
        bar: Any,
        on_trial: Callable[[dict[str, Any]], None] | None,
    ) -> None:
        """Train every candidate of rung ``r`` for ``steps`` (a resumed one is read back); stop at the budget."""
        for cand in current:
            if (r, cand.key) in self.done:
                self.rows.append(self.done[(r, cand.key)])
                bar.update(1)
                continue
            self.stopped, deadline = self.budget.refusal(steps)
            if self.stopped:
                return
            try:
                row = self.runner.run(cand, steps, deadline)
            except OutOfTime as e:
                self.stopped = f"the time budget ran out during a trial ({e}); that trial is dropped"
                return
            self.budget.spent(row, steps)
            row = {"trial": len(self.rows), "rung": r, **row}
            self.rows.append(row)
            if self.out_dir is not None:
                write_trials(self.out_dir, self.rows)
            bar.update(1)
            bar.set_postfix(best=f"{sorted(self.rows, key=self.rank)[0]['score']:.4g}")
            self.say(
                f"[rung {r}, {steps} steps] {cand.key}: {self.runner.metric.name} {row['score']:.4g}, "
                f"{row['params']:,} params, {row['seconds']:.1f}s"
            )
            if on_trial is not None:
                on_trial(row)

    def result(self, out_dir: Path | None) -> SearchResult:
        """The best of the last rung reached, the table of every trial, and the page beside ``trials.csv``."""
        rows, stopped, scorer = self.rows, self.stopped, self.runner.metric
        if not rows:
            raise RuntimeError(f"the search finished no trial: {stopped or 'nothing to run'}; give it a larger budget")
        if stopped:
            self.say(f"search stopped early: {stopped}")
        import pandas as pd

        table = pd.DataFrame(rows, columns=list(COLUMNS))
        top = max(row["rung"] for row in rows)
        best_row = sorted((row for row in rows if row["rung"] == top), key=self.rank)[0]
        best = next(c for c in self.plan.pool if c.key == best_row["key"])
        if out_dir is not None:
            from ..viz.search import write_search_page

            write_search_page(table, out_dir / "search.html", metric=scorer.name, best=best.key)
        return SearchResult(
            best=best,
            score=float(best_row["score"]),
            params=int(best_row["params"]),
            metric=scorer.name,
            higher_is_better=scorer.higher_is_better,
            trials=table,
            stopped=stopped,
            out=out_dir,
        )


def _examples(
    train: Any, eval: Any, task: str, labels: Sequence[str] | None, held_out: float, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    def read(data: Any) -> list[dict[str, Any]]:
        keys = {"prompt", "response", "choices", "answer"}
        if isinstance(data, list) and data and all(isinstance(x, Mapping) and keys <= set(x) for x in data):
            examples = [dict(x) for x in data]
        else:
            examples = read_examples(data, task, labels=labels)
        return as_classes(examples, labels) if task == "classification" else examples

    train_ex = read(train)
    if eval is None:
        return split_held_out(train_ex, held_out, seed)
    return train_ex, read(eval)


def _load(name: str | Path, task: str, num_labels: int, seed: int) -> Any:
    from ..models.classifier import load_classifier
    from ..models.loading import load_model

    if task == "classification":
        return load_classifier(name, num_labels=num_labels, seed=seed)
    return load_model(name)


def _fingerprint(train: Sequence[Mapping[str, Any]], held: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    text = json.dumps([list(train), list(held)], sort_keys=True, default=str)
    return {"train": len(train), "held_out": len(held), "sha256": hashlib.sha256(text.encode()).hexdigest()}


def _ranker(higher_is_better: bool) -> Callable[[Mapping[str, Any]], tuple[float, float, int, int]]:
    def key(row: Mapping[str, Any]) -> tuple[float, float, int, int]:
        score, loss = float(row["score"]), float(row["eval_loss"])
        value = math.inf if math.isnan(score) else (-score if higher_is_better else score)
        return (value, math.inf if math.isnan(loss) else loss, int(row["params"]), int(row["trial"]))

    return key
