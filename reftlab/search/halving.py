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

from ..data.tasks import DEFAULT_METRIC, as_classes, check_task, read_examples, split_held_out
from ..metrics import Metric, get_metric
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
    """
    started = time.monotonic() if started is None else started
    check_task(task)
    settings = SearchSettings(
        space=space if isinstance(space, SearchSpace) else SearchSpace.from_mapping(space or {}),
        budget=None if budget is None else str(budget),
        max_params=max_params,
        candidates=candidates,
        eta=eta,
        min_steps=min_steps,
        seed=seed,
    )
    limit = parse_budget(budget)
    scorer = get_metric(metric or DEFAULT_METRIC[task])
    training = training or TrainConfig()
    train_ex, eval_ex = _examples(train, eval, task, labels, held_out, seed)
    if isinstance(model, (str, Path)):
        model = _load(model, task, len(train_ex[0]["choices"] or ()), seed)
    runner = TrialRunner(
        model,
        train_ex,
        eval_ex,
        task=task,
        metric=scorer,
        training=training,
        chat_template=chat_template,
        system_prompt=system_prompt,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        seed=seed,
    )
    say = log or (lambda msg: tqdm.write(msg))
    grid = settings.space.grid(model.n_layers, model.d_model, max_params)
    pool = sample(grid, settings.candidates, seed)
    rungs = settings.rung_steps(training.total_steps(len(train_ex)))
    sizes = [max(1, math.ceil(len(pool) / settings.eta**r)) for r in range(len(rungs))]
    record = {
        "settings": {k: v for k, v in settings.to_json().items() if k != "budget"},  # a new budget may continue it
        "task": task,
        "metric": scorer.name,
        "training": training.replace(progress=True).to_json(),
        "model": f"{model!r} from {getattr(model.hf_model.config, '_name_or_path', '') or 'memory'}",
        "data": _fingerprint(train_ex, eval_ex),
        "held_out": held_out if eval is None else None,
        "format": {"chat_template": chat_template, "system_prompt": system_prompt},
        "generation": {"max_new_tokens": max_new_tokens},
    }
    out_dir = Path(out) if out is not None else None
    previous = start_log(out_dir, record) if out_dir is not None else []
    done = {(row["rung"], row["key"]): row for row in previous}
    say(
        f"search: {len(grid)} settings under the cap, {len(pool)} sampled; rungs {list(zip(sizes, rungs))} "
        f"(candidates, steps); {len(train_ex)} train / {len(eval_ex)} held-out examples; metric {scorer.name}"
        + (f"; resuming {len(previous)} finished trials" if previous else "")
    )
    rank = _ranker(scorer.higher_is_better)
    rows: list[dict[str, Any]] = []
    stopped: str | None = None
    bar = tqdm(total=sum(sizes), desc="search", disable=not progress, dynamic_ncols=True)
    used_steps = sum(r["steps"] for r in previous)
    used_before = sum(r["seconds"] for r in previous)
    speed: list[float] = []
    eval_s: list[float] = []
    try:
        current = pool
        for r, steps in enumerate(rungs):
            if r > 0:
                ranked = sorted((row for row in rows if row["rung"] == r - 1), key=rank)
                keep = {row["key"] for row in ranked[: sizes[r]]}
                current = [c for c in current if c.key in keep]
            for cand in current:
                if (r, cand.key) in done:
                    rows.append(done[(r, cand.key)])
                    bar.update(1)
                    continue
                if limit is not None and limit[0] == "steps" and used_steps + steps > limit[1]:
                    stopped = f"the step budget ({int(limit[1])}) would be exceeded by a {steps}-step trial"
                    break
                deadline = None
                if limit is not None and limit[0] == "seconds":
                    deadline = started + limit[1] - used_before
                    estimate = (statistics.median(speed) * steps + statistics.median(eval_s)) if speed else 0.0
                    if time.monotonic() + estimate > deadline:
                        stopped = f"the time budget ({limit[1]:.0f}s) leaves too little for a {steps}-step trial"
                        break
                try:
                    row = runner.run(cand, steps, deadline)
                except OutOfTime as e:
                    stopped = f"the time budget ran out during a trial ({e}); that trial is dropped"
                    break
                speed.append(row.pop("train_seconds") / steps)
                eval_s.append(row["seconds"] - speed[-1] * steps)
                row = {"trial": len(rows), "rung": r, **row}
                rows.append(row)
                used_steps += steps
                if out_dir is not None:
                    write_trials(out_dir, rows)
                bar.update(1)
                bar.set_postfix(best=f"{sorted(rows, key=rank)[0]['score']:.4g}")
                say(
                    f"[rung {r}, {steps} steps] {cand.key}: {scorer.name} {row['score']:.4g}, "
                    f"{row['params']:,} params, {row['seconds']:.1f}s"
                )
                if on_trial is not None:
                    on_trial(row)
            if stopped:
                break
    finally:
        bar.close()
        runner.restore()
    if not rows:
        raise RuntimeError(f"the search finished no trial: {stopped or 'nothing to run'}; give it a larger budget")
    if stopped:
        say(f"search stopped early: {stopped}")
    import pandas as pd

    table = pd.DataFrame(rows, columns=list(COLUMNS))
    top = max(row["rung"] for row in rows)
    best_row = sorted((row for row in rows if row["rung"] == top), key=rank)[0]
    best = next(c for c in pool if c.key == best_row["key"])
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
