"""One trial of a search: build a candidate's ReFT, train it for some steps, score it held out.

The score is the search's metric on the held-out examples; the held-out loss (response
tokens' cross-entropy, or the class's for classification) is recorded too and breaks ties.

``TrialRunner`` holds what all trials share: the base model, the examples, the
tokenized rows (built once per positions spec), the classifier head's initial weights
(restored before each classification trial) and the evaluation settings (an ``EvalSettings``
with its task: metric, prompt format, tokens generated, batch size). Every trial
starts from the same seed, so a trial's result depends only on its candidate and steps.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..config import ReftConfig
from ..data.encode import context_length
from ..data.tasks import encode_task_examples
from ..evaluate import EvalSettings, evaluate
from ..recipe.search import Candidate
from ..reft_model import get_reft_model
from ..train.config import TrainConfig
from ..train.task import train_task


class OutOfTime(Exception):
    """Raised inside a trial's training when the search's wall-clock budget runs out."""


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

    def run(self, candidate: Candidate, steps: int, deadline: float | None = None) -> dict[str, Any]:
        """Train ``candidate`` for ``steps`` optimizer steps and score it; raises OutOfTime past ``deadline``
        (``time.monotonic()`` seconds)."""
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

        def check(step: int, loss: float) -> None:
            if deadline is not None and time.monotonic() > deadline:
                raise OutOfTime(f"the budget ran out at step {step} of {steps}")

        result = train_task(reft_model, rows, self.task, cfg, on_step=check)
        t_train = time.perf_counter() - t0
        ev = evaluate(reft_model, self.eval_examples, settings=self.evaluation.replace(metric=self.metric))
        eval_loss = ev.score
        if self.metric.needs != "loss":  # a finer signal that breaks ties of coarse metrics
            eval_loss = evaluate(reft_model, self.eval_examples, settings=self.evaluation.replace(metric="loss")).score
        tail = result.losses[-max(1, len(result.losses) // 10) :]
        return {
            "key": candidate.key,
            "layers": ";".join(map(str, candidate.layers)),
            "positions": candidate.positions,
            "kind": candidate.kind,
            "rank": candidate.rank,
            "lr": candidate.lr,
            "params": ev.trainable_params,
            "steps": steps,
            "seconds": round(time.perf_counter() - t0, 3),
            "train_seconds": t_train,
            "train_loss": round(sum(tail) / len(tail), 6) if tail else float("nan"),
            "score": ev.score,
            "eval_loss": round(eval_loss, 6),
        }
