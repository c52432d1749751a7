"""``reftlab.search``: an Optuna study over ReFT settings, within a budget, resumable, in parallel.

    result = reftlab.search(model, "train.jsonl", eval=None, budget="15m", max_params=23_040)
    result.best            # Candidate(layers=(6, 18), positions='f1+l1', kind='loreft', rank=4, lr=0.0123)
    result.score           # its validation score (what chose it)
    result.test_score      # its score on the test split, which chose nothing (retrained first)
    result.trials          # pandas: one row per trial (settings, params, steps, seconds, score, state)

The data are split three ways (seeded): the trials train on ``fit`` and are scored on
``validation``; the winner is retrained on fit + validation with its full schedule and scored
once on ``test``. Without ``eval``: ``held_out`` of ``train`` is held out and halved into
validation and test; with ``eval``: ``held_out`` of ``train`` is the validation split and
``eval`` the test split.

The study (``objective`` runs its trials): a TPE sampler (seeded) draws each trial's setting from
the space (``space.suggest``); each trial reports its validation score at the rungs
``min_steps * eta^k`` and Optuna's pruner (successive halving by default, or Hyperband) stops
the ones that trail. It lives in ``storage`` (default ``sqlite:///OUT/study.db``): the same
call on the same storage continues it without repeating a finished trial; ``workers`` processes
on this machine (and the same call on other machines with a shared PostgreSQL URL) run its trials
together. Ranking: by score, then lower validation loss (a finer signal where a coarse metric ties),
then fewer parameters, then the earlier trial; a trial that completed its schedule beats a pruned one.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..data.tasks import as_classes, check_task, read_examples, split_held_out
from ..evaluate import EvalSettings
from ..metrics import Metric
from ..recipe.search import Candidate, SearchSettings, SearchSpace
from ..train.config import TrainConfig
from .log import trial_row, trial_rows, write_trials
from .objective import trained
from .result import SearchResult, finish
from .storage import resolve_storage, shown
from .warm import source_url
from .warm import warm_start as warm
from .workers import Job, join_study, load_model, run_job, start_workers, stop_workers


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
    pruner: str = "halving",
    sampler: str = "tpe",
    eta: int = 3,
    min_steps: int = 4,
    seed: int = 0,
    held_out: float = 0.2,
    max_new_tokens: int = 16,
    batch_size: int = 16,
    out: str | Path | None = None,
    storage: str | None = None,
    study: str = "reftlab-search",
    workers: int = 1,
    resume: bool = False,
    first: Sequence[Candidate] = (),
    warm_start: str | Path | None = None,
    warm_study: str | None = None,
    progress: bool = True,
    on_trial: Callable[[dict[str, Any]], None] | None = None,
    log: Callable[[str], None] | None = None,
    started: float | None = None,
) -> SearchResult:
    """Find the best ReFT setting for ``train`` (see the module docstring).

    ``model``: a HookedModel (a sequence classifier for ``task="classification"``), a model name
    or folder, or a function that loads one (each worker process then loads its own).
    ``train``/``eval``: examples (a file, a DataFrame or a list of dicts; ``reftlab.data.tasks``).
    ``training``: a trial's full schedule (batch size, epochs or max_steps, schedule). ``out``: a
    folder for ``trials.csv``, ``search.html`` and (without ``storage``) the study's ``study.db``.
    ``storage``: an Optuna storage URL (``sqlite:///...``, ``postgresql+psycopg://...``) shared by
    every process of the search; ``study``: the study's name in it; ``workers``: processes on this
    machine; ``resume``: insist that the study exists. ``first``: settings tried before sampling.
    ``warm_start``: an earlier search's output folder or storage URL whose finished trials a new
    study starts from (``search.warm``; ``warm_study``: its study's name, default ``study``).
    ``on_trial(row)`` is called after each trial this process finishes. ``started``: a
    ``time.monotonic()`` from which a wall-clock budget counts (default: now).
    The keywords from ``space`` to ``seed`` are a ``SearchSettings``, those from ``task`` to
    ``batch_size`` an ``EvalSettings``: ``search_with`` takes the two objects.
    """
    settings = SearchSettings(
        space=space if isinstance(space, SearchSpace) else SearchSpace.from_mapping(space or {}),
        budget=None if budget is None else str(budget),
        max_params=max_params,
        candidates=candidates,
        pruner=pruner,
        sampler=sampler,
        eta=eta,
        min_steps=min_steps,
        seed=seed,
    )
    evaluation = EvalSettings(
        task=task,
        metric=metric,
        labels=labels,
        chat_template=chat_template,
        system_prompt=system_prompt,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
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
        storage=storage,
        study=study,
        workers=workers,
        resume=resume,
        first=first,
        warm_start=warm_start,
        warm_study=warm_study,
        progress=progress,
        on_trial=on_trial,
        log=log,
        started=time.monotonic() if started is None else started,
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
    storage: str | None = None,
    study: str = "reftlab-search",
    workers: int = 1,
    resume: bool = False,
    first: Sequence[Candidate] = (),
    warm_start: str | Path | None = None,
    warm_study: str | None = None,
    progress: bool = True,
    on_trial: Callable[[dict[str, Any]], None] | None = None,
    log: Callable[[str], None] | None = None,
    started: float | None = None,
) -> SearchResult:
    """``search`` with its settings as two objects: what to search and how long (``settings``), how a
    trial is scored (``evaluation``, whose ``task`` is required). The other arguments are ``search``'s."""
    if evaluation.task is None:
        raise ValueError("a search's EvalSettings need a task (generation, multiple_choice or classification)")
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers={workers!r} must be an int >= 1 (processes on this machine)")
    task = check_task(str(evaluation.task))
    evaluation.scorer()  # an unknown metric: now, before any model loads (a metric by name stays one: it pickles)
    training = training or TrainConfig()
    fit, validation, test = _splits(train, eval, task, evaluation.labels, held_out, settings.seed)
    out_dir = Path(out) if out is not None else None
    url = resolve_storage(storage, out_dir)
    warm_url = None if warm_start is None else source_url(warm_start)  # a bad source: now, before any model loads
    if workers > 1 and url is None:
        raise ValueError("workers > 1 share the study through a storage: give storage=URL or an output folder")
    hooked = load_model(model, task, len(fit[0].get("choices") or ()), settings.seed)
    settings.space.structures(hooked.n_layers, hooked.d_model, settings.max_params)  # a cap that excludes all: now
    say = log or (lambda msg: tqdm.write(msg))
    job = _job(model, task, fit, validation, settings, evaluation, training, url, study, started, workers)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    record = _record(job, hooked, held_out if eval is None else None)
    opened = _open(job, record, resume, first)
    if warm_url is not None and not opened.get_trials(deepcopy=False):
        copied, left = warm(
            opened, warm_url, warm_study or study, record, settings.space, hooked.n_layers, settings.max_params
        )
        say(
            f"search: warm start from {warm_start}: {copied} finished trials copied"
            + (f", {left} outside this space or cap left out" if left else "")
        )
    before = trained(opened)
    say(
        f"search: study {study!r} on {shown(url) if url else 'memory'}; {settings.candidates} trials, pruner {settings.pruner}; "
        f"{len(fit)} train / {len(validation)} validation / {len(test)} test examples; metric "
        f"{evaluation.scorer().name}" + (f"; resuming {before} finished trials" if before else "")
    )
    stopped = _run(job, opened, hooked, workers, out_dir, progress, on_trial, say)
    return finish(job, opened, hooked, fit + validation, test, stopped=stopped, out=out_dir, say=say)


def _splits(
    train: Any, eval: Any, task: str, labels: Sequence[str] | None, held_out: float, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(fit, validation, test): see the module docstring."""

    def read(data: Any) -> list[dict[str, Any]]:
        keys = {"prompt", "response", "choices", "answer"}
        if isinstance(data, list) and data and all(isinstance(x, Mapping) and keys <= set(x) for x in data):
            examples = [dict(x) for x in data]
        else:
            examples = read_examples(data, task, labels=labels)
        return as_classes(examples, labels) if task == "classification" else examples

    fit, held = split_held_out(read(train), held_out, seed)
    if eval is not None:
        return fit, held, read(eval)
    if len(held) < 2:
        raise ValueError(
            f"held_out={held_out} of {len(fit) + len(held)} examples leaves {len(held)} to halve into validation "
            "and test; give more examples, a larger held_out, or a test set (eval / --eval)"
        )
    validation, test = split_held_out(held, 0.5, seed)
    return fit, validation, test


def _job(
    model: Any,
    task: str,
    fit: list[dict[str, Any]],
    validation: list[dict[str, Any]],
    settings: SearchSettings,
    evaluation: EvalSettings,
    training: TrainConfig,
    url: str | None,
    study: str,
    started: float | None,
    workers: int,
) -> Job:
    epochs = settings.space.epochs or (None,)
    cfgs = [training if e is None else training.replace(epochs=e, max_steps=None) for e in epochs]
    wall = time.time() - (time.monotonic() - started) if started is not None else time.time()
    return Job(
        model=model,
        task=task,
        fit=fit,
        validation=validation,
        settings=settings,
        evaluation=evaluation,
        training=training,
        storage=url,
        study=study,
        started=wall,
        direction="maximize" if evaluation.scorer().higher_is_better else "minimize",
        max_steps=max(c.total_steps(len(fit)) for c in cfgs),
        workers=workers,
    )


def _record(job: Job, hooked: Any, held_out: float | None) -> dict[str, Any]:
    """What the study was started with; a study joined with another record is an error."""
    text = json.dumps([list(job.fit), list(job.validation)], sort_keys=True, default=str)
    return {
        "settings": {k: v for k, v in job.settings.to_json().items() if k not in ("budget", "candidates")},
        "task": job.task,
        "metric": job.evaluation.scorer().name,
        "training": job.training.replace(progress=True).to_json(),
        "model": f"{hooked!r} from {getattr(hooked.hf_model.config, '_name_or_path', '') or 'memory'}",
        "data": {
            "fit": len(job.fit),
            "validation": len(job.validation),
            "sha256": hashlib.sha256(text.encode()).hexdigest(),
        },
        "held_out": held_out,
        "format": {"chat_template": job.evaluation.chat_template, "system_prompt": job.evaluation.system_prompt},
        "generation": {"max_new_tokens": job.evaluation.max_new_tokens},
    }


def _open(job: Job, record: Mapping[str, Any], resume: bool, first: Sequence[Candidate]) -> Any:
    """The study, created or joined by the first process; ``first`` enqueued once (not again on resume)."""
    import optuna

    from .space import params_of

    if resume and job.study not in optuna.study.get_all_study_names(_storage_of(job)):
        where = shown(job.storage) if job.storage else "memory"
        raise ValueError(
            f"no study {job.study!r} in {where} to resume; check the output folder, --storage and --study, "
            "or run without --resume (resume=False) to start it"
        )
    study = join_study(job, 0, record)
    if first and not study.get_trials(deepcopy=False):
        for cand in first:
            study.enqueue_trial(params_of(cand))
    return study


def _storage_of(job: Job) -> Any:
    from .storage import open_storage

    return open_storage(job.storage)


def _run(
    job: Job,
    study: Any,
    hooked: Any,
    workers: int,
    out_dir: Path | None,
    progress: bool,
    on_trial: Callable[[dict[str, Any]], None] | None,
    say: Callable[[str], None],
) -> str | None:
    """Run the study in this process and ``workers - 1`` more; why it stopped early, or None."""
    bar = tqdm(total=job.settings.candidates, desc="search", disable=not progress, dynamic_ncols=True)
    bar.update(min(trained(study), job.settings.candidates))

    def finished(frozen: Any) -> None:
        if out_dir is not None:
            write_trials(out_dir, trial_rows(study))
        bar.update(max(0, min(trained(study), job.settings.candidates) - bar.n))
        if on_trial is not None:
            on_trial(trial_row(frozen))

    procs = start_workers(job, workers - 1) if workers > 1 else []
    interrupted = True
    try:
        stopped = run_job(job, 0, study=study, hooked=hooked, say=say, on_trial=finished)
        interrupted = False
    finally:
        failed = stop_workers(procs, interrupt=interrupted)
        bar.close()
    if failed:
        raise RuntimeError(f"search workers failed ({'; '.join(failed)}); their errors are above")
    return stopped
