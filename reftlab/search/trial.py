"""One trial of a search: build a candidate's ReFT, train it, score it held out at each rung.

The score is the search's metric on the held-out examples; the held-out loss (response
tokens' cross-entropy, or the class's for classification) is recorded too and breaks ties.
At each rung step below the end the trial scores itself and hands the score to ``on_rung``
(the study reports it to its pruner, which may stop the trial there).

``TrialRunner`` holds what all trials share: the base model, the examples, the
tokenized rows (built once per positions spec), the classifier head's initial weights
(restored before each classification trial) and the evaluation settings (an ``EvalSettings``
with its task: metric, prompt format, tokens generated, batch size). Every trial
starts from the same seed, so a trial's result depends only on its candidate and steps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import torch

from ..config import ReftConfig
from ..data.encode import context_length
from ..data.tasks import encode_task_examples
from ..evaluate import EvalSettings, evaluate, trainable_parameters
from ..recipe.search import Candidate
from ..reft_model import get_reft_model
from ..train.config import TrainConfig
from ..train.task import train_task


class OutOfTime(Exception):
    """Raised inside a trial's training when the search's budget (wall clock or steps) runs out."""

    def __init__(self, what: str, step: int, steps: int) -> None:
        super().__init__(f"the {what} budget ran out at step {step} of {steps}")
        self.step = step


class Diverged(Exception):
    """Raised when a trial's training loss is no longer finite (an lr far too high); ``step``: the steps
    trained."""

    def __init__(self, step: int, why: str) -> None:
        super().__init__(f"diverged: {why}")
        self.step = step


class TrialRunner:
    """Runs candidates on one base model (see the module docstring)."""

    def __init__(
        self,
        hooked: Any,
        train_examples: Sequence[Mapping[str, Any]],
        eval_examples: Sequence[Mapping[str, Any]],
        *,
        evaluation: EvalSettings,
        training: TrainConfig,
        seed: int,
    ) -> None:
        if evaluation.task is None:
            raise ValueError("a search's EvalSettings need a task (generation, multiple_choice or classification)")
        self.hooked, self.evaluation, self.training, self.seed = hooked, evaluation, training, seed
        self.task, self.metric = evaluation.task, evaluation.scorer()
        self.train_examples, self.eval_examples = list(train_examples), list(eval_examples)
        self._rows: dict[tuple[str, int], list[dict[str, Any]]] = {}
        self._head: dict[str, torch.Tensor] | None = None
        if self.task == "classification":
            from ..models.classifier import classifier_head

            self._head = {k: v.detach().clone() for k, v in classifier_head(hooked).state_dict().items()}

    def restore(self) -> None:
        """Put the classifier head back to its weights before the first trial (and freeze it again)."""
        if self._head is not None:
            from ..models.classifier import classifier_head

            head = classifier_head(self.hooked)
            head.load_state_dict(self._head)
            head.requires_grad_(False)

    def rows(self, positions: str, n_interventions: int) -> list[dict[str, Any]]:
        """Training rows for ``positions`` (cached: candidates differ in layers, kind, rank, lr)."""
        key = (positions, n_interventions)
        if key not in self._rows:
            self._rows[key] = encode_task_examples(
                self.hooked.tokenizer,
                self.train_examples,
                self.task,
                positions=positions,
                num_interventions=n_interventions,
                chat_template=self.evaluation.chat_template,
                system_prompt=self.evaluation.system_prompt,
                max_length=context_length(self.hooked.tokenizer, self.hooked),
            )
        return self._rows[key]

    def run(
        self,
        candidate: Candidate,
        steps: int,
        *,
        rungs: Collection[int] = (),
        on_rung: Callable[[int, float, float], None] | None = None,
        deadline: float | None = None,
        step_limit: int | None = None,
    ) -> dict[str, Any]:
        """Train ``candidate`` for ``steps`` optimizer steps and score it. At each step of ``rungs`` below
        ``steps``: ``on_rung(step, score, eval_loss)``, which may raise to stop the trial. Raises OutOfTime
        past ``deadline`` (``time.time()`` seconds) or ``step_limit`` steps, Diverged on a non-finite loss."""
        t0 = time.perf_counter()
        self.restore()
        torch.manual_seed(self.seed)
        config = ReftConfig(representations=candidate.representations())
        reft_model = get_reft_model(self.hooked, config)
        rows = self.rows(candidate.positions, len(candidate.layers))
        cfg = self.training.replace(
            max_steps=steps,
            lr=candidate.lr,
            seed=self.seed,
            progress=False,
            log_every=0,
            eval_every=0,
            checkpoint_every=0,
            checkpoint_dir=None,
            resume_from=None,
        )

        done = [0]

        def check(step: int, loss: float) -> None:
            done[0] = step
            if not math.isfinite(loss):
                raise Diverged(step, f"the training loss is {loss} at step {step}")
            if deadline is not None and time.time() > deadline:
                raise OutOfTime("time", step, steps)
            if step_limit is not None and step >= step_limit and step < steps:
                raise OutOfTime("step", step, steps)
            if on_rung is not None and step in rungs and step < steps:
                on_rung(step, *self.score(reft_model))

        try:
            result = train_task(reft_model, rows, self.task, cfg, on_step=check)
        except FloatingPointError as e:  # the training loop's own check of each micro-batch's loss
            raise Diverged(done[0], str(e).split(";")[0]) from None
        t_train = time.perf_counter() - t0
        score, eval_loss = self.score(reft_model)
        tail = result.losses[-max(1, len(result.losses) // 10) :]
        return {
            "key": candidate.key,
            "layers": ";".join(map(str, candidate.layers)),
            "positions": candidate.positions,
            "kind": candidate.kind,
            "rank": candidate.rank,
            "lr": candidate.lr,
            "epochs": candidate.epochs,
            "params": trainable_parameters(reft_model),  # a classifier's head included
            "steps": steps,
            "seconds": round(time.perf_counter() - t0, 3),
            "train_seconds": t_train,
            "train_loss": round(sum(tail) / len(tail), 6) if tail else float("nan"),
            "score": score,
            "eval_loss": round(eval_loss, 6),
        }

    def score(self, reft_model: Any) -> tuple[float, float]:
        """(the metric, the loss) of ``reft_model`` on the held-out examples."""
        ev = evaluate(reft_model, self.eval_examples, settings=self.evaluation.replace(metric=self.metric))
        if self.metric.needs == "loss":
            return ev.score, ev.score
        loss = evaluate(reft_model, self.eval_examples, settings=self.evaluation.replace(metric="loss")).score
        return ev.score, loss  # the loss: a finer signal that breaks ties of coarse metrics
