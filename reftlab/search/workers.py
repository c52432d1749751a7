"""The processes of one search: each opens the study by name and runs trials (``objective.Worker``).

``Job`` is everything a process needs, picklable: the model (a HookedModel, a name or folder,
or a function that loads it, so that each process loads its own), the training and validation
examples, the settings, the storage URL and the study's name. ``start_workers`` starts
``n`` processes with multiprocessing's ``spawn`` (a fresh interpreter each: no forked torch
threads or open database connections); ``run_job`` is what each of them, and the process that
started the search, runs. Optuna's storage gives each ``ask()`` its own trial, so the processes
never run the same trial. On another machine, the same command with the same storage URL joins
the same study the same way.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..evaluate import EvalSettings
from ..recipe.search import SearchSettings
from ..train.config import TrainConfig
from .objective import Budget, Worker
from .storage import open_storage, open_study, quiet_optuna
from .trial import TrialRunner


@dataclass(frozen=True)
class Job:
    """One search's work, as every process of it sees it (see the module docstring)."""

    model: Any
    task: str
    fit: Sequence[Mapping[str, Any]]
    validation: Sequence[Mapping[str, Any]]
    settings: SearchSettings
    evaluation: EvalSettings
    training: TrainConfig
    storage: str | None
    study: str
    started: float  # time.time() a wall-clock budget counts from
    direction: Literal["minimize", "maximize"]
    max_steps: int  # the longest schedule in the space (the Hyperband pruner's top rung)
    workers: int = 1  # processes on this machine (each worker takes its share of the CPU threads)


def load_model(model: Any, task: str, num_labels: int, seed: int) -> Any:
    """``model`` as a HookedModel: itself, loaded by name or folder, or returned by a loader function."""
    from ..models.classifier import load_classifier
    from ..models.loading import load_model as load

    if callable(model) and not hasattr(model, "hf_model"):
        return model()
    if not isinstance(model, (str, Path)):
        return model
    if task == "classification":
        return load_classifier(model, num_labels=num_labels, seed=seed)
    return load(model)


def make_pruner(settings: SearchSettings, max_steps: int) -> Any:
    """Optuna's pruner for ``settings.pruner``, its rungs at ``min_steps * eta^k`` steps."""
    import optuna

    if settings.pruner == "none":
        return optuna.pruners.NopPruner()
    if settings.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=settings.min_steps,
            max_resource=max(max_steps, settings.min_steps),
            reduction_factor=settings.eta,
        )
    return optuna.pruners.SuccessiveHalvingPruner(min_resource=settings.min_steps, reduction_factor=settings.eta)


def join_study(job: Job, index: int, record: Mapping[str, Any] | None = None) -> Any:
    """The study of ``job`` as process ``index`` opens it (its own sampler seed)."""
    import optuna

    quiet_optuna()
    seed = job.settings.seed + index  # each process its own draws
    sampler = (
        optuna.samplers.RandomSampler(seed=seed)
        if job.settings.sampler == "random"
        else optuna.samplers.TPESampler(seed=seed)
    )
    return open_study(
        open_storage(job.storage),
        job.study,
        direction=job.direction,
        sampler=sampler,
        pruner=make_pruner(job.settings, job.max_steps),
        record=record,
    )


def run_job(
    job: Job,
    index: int,
    *,
    study: Any = None,
    hooked: Any = None,
    say: Callable[[str], None] = print,
    on_trial: Callable[[Any], None] | None = None,
) -> str | None:
    """Run trials of ``job`` as process ``index`` until the study is done; why it stopped early, or None."""
    num_labels = len(job.fit[0].get("choices") or ())
    hooked = hooked if hooked is not None else load_model(job.model, job.task, num_labels, job.settings.seed)
    runner = TrialRunner(
        hooked, job.fit, job.validation, evaluation=job.evaluation, training=job.training, seed=job.settings.seed
    )
    worker = Worker(runner, job.settings, job.training, Budget.of(job.settings.budget, job.started), say, index)
    try:
        return worker.work(study if study is not None else join_study(job, index), on_trial)
    finally:
        runner.restore()


def _child(job: Job, index: int) -> None:
    """A worker process: quiet unless a trial fails (the first process prints the search's lines)."""
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // job.workers))
    try:
        run_job(job, index, say=lambda msg: None)
    except KeyboardInterrupt:  # the first process stops its workers so; it reports the interruption itself
        raise SystemExit(130) from None


def start_workers(job: Job, n: int) -> list[Any]:
    """Start ``n`` worker processes (numbered 1..n: the caller is 0) on ``job``."""
    try:
        pickle.dumps(job)
    except Exception as e:
        raise ValueError(
            f"workers need a search they can be sent ({type(e).__name__}: {e}); pass the model as a name or "
            "folder, or a metric by name, or run with workers=1"
        ) from None
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_child, args=(job, i), name=f"reftlab-search-{i}", daemon=True) for i in range(1, n + 1)
    ]
    for p in procs:
        p.start()
    return procs


def stop_workers(procs: Sequence[Any], *, interrupt: bool) -> list[str]:
    """Wait for the workers (interrupt them first if ``interrupt``: each fails its running trial, so the
    study shows it was not finished); the workers that failed, as lines."""
    if interrupt:
        for p in procs:
            if p.is_alive() and p.pid is not None:
                os.kill(p.pid, signal.SIGINT)
    deadline = time.monotonic() + (30 if interrupt else 24 * 3600)
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.terminate()
            p.join(5)
    return [f"{p.name} exited with {p.exitcode}" for p in procs if p.exitcode not in (0, None) and not interrupt]
