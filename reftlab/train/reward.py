"""Reward modelling with ReFT: a scalar head scores texts; pairs teach it to prefer the chosen one.

    loss = mean_i -log sigmoid(r(chosen_i) - r(rejected_i))        (Bradley-Terry)

``r`` is the logit of a one-output ``AutoModelForSequenceClassification`` head (HF reads
it at the last non-padding token) with the interventions attached at the prompt's
locations. Batches come from ``ReftRewardCollator``: row ``2i`` chosen, ``2i+1``
rejected. Unfreeze the head to train it with the interventions, as pyreft's reward
example does::

    for p in reft_model.model.score.parameters():
        p.requires_grad = True
    trainer = reftlab.ReftTrainerForRewardModelling(model=reft_model, tokenizer=tok, args=args,
                                                    compute_metrics=reftlab.train.reward.reward_accuracy, **data_module)

The head is then saved with the checkpoint (``base_parameters.safetensors``) and loaded
back with it. Evaluation reports the pairwise accuracy: the share of pairs with
``r(chosen) > r(rejected)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from .forward import run_batch
from .hf_trainer import ReftTrainer


class ReftTrainerForRewardModelling(ReftTrainer):
    """Pairwise reward-model training of interventions (and an unfrozen scalar head)."""

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        chosen, rejected = pair_rewards(run_batch(model, inputs).logits)
        loss = -F.logsigmoid(chosen - rejected).mean()
        if return_outputs:
            return loss, {"rewards_chosen": chosen, "rewards_rejected": rejected}
        return loss

    def prediction_step(
        self, model: Any, inputs: dict[str, Any], prediction_loss_only: bool, ignore_keys: list[str] | None = None
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """``(loss, r(chosen) - r(rejected), ones)`` per pair, for ``reward_accuracy``."""
        return pairwise_prediction(self, model, inputs, prediction_loss_only)


def pairwise_prediction(
    trainer: Any, model: Any, inputs: dict[str, Any], prediction_loss_only: bool
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """An evaluation step of a pairwise trainer whose ``compute_loss(..., return_outputs=True)``
    gives ``rewards_chosen``/``rewards_rejected``: ``(loss, margins, ones)``."""
    inputs = trainer._prepare_inputs(inputs)
    with torch.no_grad():
        loss, rewards = trainer.compute_loss(model, inputs, return_outputs=True)
    if prediction_loss_only:
        return loss.detach(), None, None
    margins = (rewards["rewards_chosen"] - rewards["rewards_rejected"]).detach()
    return loss.detach(), margins, torch.ones_like(margins)


def pair_rewards(logits: Float[Tensor, "rows 1"]) -> tuple[Float[Tensor, " pairs"], Float[Tensor, " pairs"]]:
    """Split ``[2 * pairs, 1]`` head outputs into chosen (even rows) and rejected (odd rows) rewards."""
    if logits.ndim != 2 or logits.shape[-1] != 1:
        raise ValueError(
            f"a reward model needs one output per text, got logits of shape {tuple(logits.shape)}; "
            "load the base with AutoModelForSequenceClassification.from_pretrained(..., num_labels=1)"
        )
    if logits.shape[0] % 2:
        raise ValueError(f"a reward batch holds (chosen, rejected) row pairs, got {logits.shape[0]} rows")
    return logits[0::2, 0], logits[1::2, 0]


def reward_accuracy(eval_pred: Any) -> dict[str, float]:
    """``compute_metrics`` for reward models: the share of pairs whose chosen text scores higher."""
    margins = np.asarray(eval_pred.predictions).reshape(-1)
    if margins.size == 0:
        raise ValueError("no evaluation pairs: the eval dataset is empty")
    return {"accuracy": float((margins > 0).mean())}
