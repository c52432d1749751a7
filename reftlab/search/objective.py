"""One search process's loop: ask the study for a trial, check the cap and the budget, train, tell.

Every process of a search (the one that started it and each ``--workers`` process, on this or
another machine) runs ``work`` on the same study. Optuna's storage hands each ``study.ask()`` a
new trial number, so two processes never run the same trial. A trial:

1. draws a candidate (``space.suggest``) and counts its parameters; over the cap it is pruned
   before it trains (``pruned: over the parameter cap``) and does not count as a trial;
2. trains with the candidate's full schedule; at each rung step (``SearchSettings.rung_steps``)
   it scores itself on the validation split, reports the score (``trial.report``) and stops if
   the pruner says so (``trial.should_prune``); a non-finite loss prunes it too (``diverged``);
3. ends ``COMPLETE`` with its validation score, or ``PRUNED``; its row (settings, parameters,
   steps trained, losses, scores) is kept in the trial's user attributes.

The budget: a step budget counts the steps every trial of the study trained; a wall-clock budget
is a deadline for this run of the search. A trial starts only if its first rung fits what is left
and is cut at the budget (it then ends ``FAIL`` and is dropped). The study stops when
``candidates`` trials have trained (each process checks before it asks; with several processes
a few more may finish).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ..recipe.search import SearchSettings, parse_budget
from ..train.config import TrainConfig
from .space import suggest
from .trial import Diverged, OutOfTime

ROW_ATTRS = ("key", "layers", "positions", "kind", "rank", "lr", "epochs", "params", "steps", "seconds")
MAX_OVER_CAP = 200  # samples over the cap in a row before a process gives up on the space


@dataclass
class Budget:
    """A step budget (over the whole study) or a wall-clock deadline (``time.time()``), and the speed
    measured here (seconds per training step, seconds per evaluation) to judge whether a rung fits."""

    limit: tuple[str, float] | None
    deadline: float | None
    per_step: list[float] = field(default_factory=list)
    per_eval: list[float] = field(default_factory=list)

    @classmethod
    def of(cls, budget: str | None, started: float) -> "Budget":
        """``started``: the ``time.time()`` a wall-clock budget counts from."""
        limit = parse_budget(budget)
        return cls(limit, started + limit[1] if limit is not None and limit[0] == "seconds" else None)

    def steps_left(self, study: Any) -> int | None:
        if self.limit is None or self.limit[0] != "steps":
            return None
        trials = study.get_trials(deepcopy=False)
        used = sum(int(t.user_attrs.get("steps", 0)) for t in trials if "warm_start" not in t.user_attrs)
        return int(self.limit[1]) - used

    def refusal(self, study: Any, first_rung: int) -> str | None:
        """Why no trial may start now (its first rung does not fit what is left), or None."""
        left = self.steps_left(study)
        if left is not None and left < first_rung:
            return f"the step budget ({int(self.limit[1]) if self.limit else 0}) is spent"
        if self.deadline is None:
            return None
        estimate = 0.0
        if self.per_step:
            estimate = statistics.median(self.per_step) * first_rung + statistics.median(self.per_eval)
        if time.time() + estimate > self.deadline:
            return "the time budget leaves too little for another trial"
        return None

    def measured(self, row: Mapping[str, Any], evaluations: int) -> None:
        per_step = row["train_seconds"] / max(1, row["steps"])
        self.per_step.append(per_step)
        self.per_eval.append(max(0.0, row["seconds"] - row["train_seconds"]) / max(1, evaluations))


@runtime_checkable
class Runner(Protocol):
    """What a worker uses of ``trial.TrialRunner``: the model's size, the examples, the metric, ``run``."""

    @property
    def hooked(self) -> Any: ...
    @property
    def train_examples(self) -> Sequence[Mapping[str, Any]]: ...
    @property
    def metric(self) -> Any: ...

    def run(
        self,
        candidate: Any,
        steps: int,
        *,
        rungs: Collection[int] = (),
        on_rung: Callable[[int, float, float], None] | None = None,
        deadline: float | None = None,
        step_limit: int | None = None,
    ) -> dict[str, Any]: ...


@dataclass
class Worker:
    """What one process needs to run trials of the study."""

    runner: Runner
    settings: SearchSettings
    training: TrainConfig
    budget: Budget
    say: Callable[[str], None] = print
    index: int = 0  # which process of the search (0: the one that started it), kept on each trial

    def full_steps(self, epochs: int | None) -> int:
        cfg = self.training if epochs is None else self.training.replace(epochs=epochs, max_steps=None)
        return cfg.total_steps(len(self.runner.train_examples))

    def work(self, study: Any, on_trial: Callable[[Any], None] | None = None) -> str | None:
        """Run trials until the study has ``candidates`` trained ones or the budget stops it; the reason
        it stopped early, or None."""
        import optuna
        from optuna.trial import TrialState

        first_rung = self.settings.rung_steps(self.full_steps(None))[0]
        over_cap = 0
        while True:
            if trained(study) >= self.settings.candidates:
                return None
            why = self.budget.refusal(study, first_rung)
            if why:
                return why
            trial = study.ask()
            try:
                value = self.run_trial(trial)
            except optuna.TrialPruned:
                study.tell(trial, state=TrialState.PRUNED)
            except OutOfTime as e:
                trial.set_user_attr("steps", e.step)
                trial.set_user_attr("stopped", str(e))
                study.tell(trial, state=TrialState.FAIL)
                return f"{e}; that trial is dropped"
            except BaseException:
                study.tell(trial, state=TrialState.FAIL)
                raise
            else:
                study.tell(trial, value)
            over_cap = over_cap + 1 if trial.user_attrs.get("pruned") == OVER_CAP else 0
            if over_cap >= MAX_OVER_CAP:
                return f"{over_cap} samples in a row were over the parameter cap; raise max_params or shrink the space"
            if on_trial is not None and trial.user_attrs.get("trained"):
                on_trial(study.get_trials(deepcopy=False)[trial.number])

    def run_trial(self, trial: Any) -> float:
        """One trial (see the module docstring); its validation score, or ``optuna.TrialPruned``."""
        import optuna

        runner, settings = self.runner, self.settings
        cand = suggest(trial, settings.space, runner.hooked.n_layers)
        params = cand.params(runner.hooked.d_model)
        for name, value in (
            ("key", cand.key),
            ("lr", cand.lr),
            ("params", params),
            ("steps", 0),
            ("worker", self.index),
        ):
            trial.set_user_attr(name, value)
        if settings.max_params is not None and params > settings.max_params:
            trial.set_user_attr("pruned", OVER_CAP)
            raise optuna.TrialPruned(OVER_CAP)
        steps = self.full_steps(cand.epochs)
        rungs = settings.rung_steps(steps)
        trial.set_user_attr("trained", True)

        def on_rung(step: int, score: float, eval_loss: float) -> None:
            trial.report(score, step)
            for name, value in (("steps", step), ("score", score), ("eval_loss", eval_loss)):
                trial.set_user_attr(name, value)
            if trial.should_prune():
                trial.set_user_attr("pruned", f"by the pruner at step {step}")
                raise optuna.TrialPruned(f"pruned at step {step}")

        left, t0 = self.budget.steps_left(trial.study), time.perf_counter()
        try:
            row = runner.run(cand, steps, rungs=rungs, on_rung=on_rung, deadline=self.budget.deadline, step_limit=left)
        except (Diverged, optuna.TrialPruned) as e:
            if isinstance(e, Diverged):
                trial.set_user_attr("steps", e.step)
                trial.set_user_attr("pruned", str(e))
            trial.set_user_attr("seconds", round(time.perf_counter() - t0, 3))
            self.say(f"[trial {trial.number}] {cand.key}: pruned {trial.user_attrs['pruned']}")
            raise optuna.TrialPruned(str(e)) from None
        self.budget.measured(row, evaluations=len(rungs))
        for name in (*ROW_ATTRS, "train_loss", "score", "eval_loss"):
            trial.set_user_attr(name, row[name])
        self.say(
            f"[trial {trial.number}] {cand.key}: {runner.metric.name} {row['score']:.4g}, "
            f"{row['params']:,} params, {steps} steps, {row['seconds']:.1f}s"
        )
        return float(row["score"])


OVER_CAP = "over the parameter cap"


def trained(study: Any) -> int:
    """Trials of ``study`` that trained and finished (complete, or pruned after training); those a warm
    start copied in (``search.warm``) are not this search's and do not count."""
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    return sum(1 for t in done if t.user_attrs.get("trained") and "warm_start" not in t.user_attrs)
