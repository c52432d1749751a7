"""Direct preference optimisation (DPO, arXiv 2305.18290) of ReFT interventions.

    loss = mean_i -log sigmoid(beta * [(log pi(y_w|x) - log ref(y_w|x)) - (log pi(y_l|x) - log ref(y_l|x))])

``pi`` is the base model with the interventions attached, ``ref`` the same base with
them off: the frozen weights serve both, so there is no second copy of the model
(pyreft's DPO example passed the ReftModel twice to trl's trainer and ran ``.model``
for the reference). ``log pi(y|x)`` sums the log-probabilities of the response tokens.

Data: ``ReftPreferenceDataset`` (its train-split layout: input = prompt + rejected,
labels = chosen on the response), batched by its collator; ``preference_pairs`` turns
each example into a chosen and a rejected sequence that share the prompt and its
intervention locations::

    train = reftlab.ReftPreferenceDataset("prefs", "prefs.json", tok, data_split="train",
                                          num_interventions=1, position="l1")
    trainer = reftlab.ReftDPOTrainer(model=reft_model, args=args, beta=0.1, tokenizer=tok, train_dataset=train)

Logged with the loss: ``rewards/chosen``, ``rewards/rejected`` (beta times the log-ratio
to the reference), ``rewards/margins`` and ``rewards/accuracies``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from ..data.collate import stack_locations
from ..data.encode import IGNORE_INDEX
from ..data.pyreft_compat import collator_for
from .forward import run_batch, unwrap
from .hf_trainer import ReftTrainer
from .reward import pairwise_prediction


class ReftDPOTrainer(ReftTrainer):
    """DPO for a ReftModel (see the module docstring); ``beta`` scales the implicit reward."""

    def __init__(
        self,
        model: Any = None,
        ref_model: Any = None,
        args: Any = None,
        *,
        beta: float = 0.1,
        data_collator: Any = None,
        tokenizer: Any = None,
        processing_class: Any = None,
        **kwargs: Any,
    ) -> None:
        if ref_model is not None and ref_model is not model:
            raise ValueError(
                "ReftDPOTrainer's reference is the base model with the interventions off; pass ref_model=None "
                "(or the same ReftModel, as pyreft's DPO example does), not another model"
            )
        if not isinstance(beta, (int, float)) or beta <= 0:
            raise ValueError(f"beta={beta!r} must be a positive number (DPO's temperature, e.g. 0.1)")
        tok = tokenizer if tokenizer is not None else processing_class
        if data_collator is None:
            if tok is None:
                raise ValueError("give tokenizer= (its pad id pads the batches) or a data_collator=")
            data_collator = collator_for(tok)
        self.beta = float(beta)
        self._stats: dict[str, dict[str, list[float]]] = {"train": defaultdict(list), "eval": defaultdict(list)}
        super().__init__(
            model=model,
            args=args,
            tokenizer=tokenizer,
            processing_class=processing_class,
            data_collator=data_collator,
            **kwargs,
        )

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        pairs = preference_pairs(inputs)
        n = pairs["input_ids"].shape[0] // 2
        policy = sequence_logps(run_batch(model, pairs).logits, pairs["labels"])
        reference = reference_logps(model, pairs)
        losses, chosen, rejected = dpo_loss(policy[:n], policy[n:], reference[:n], reference[n:], self.beta)
        stats = self._stats["train" if model.training else "eval"]
        for name, value in (
            ("rewards/chosen", chosen),
            ("rewards/rejected", rejected),
            ("rewards/margins", chosen - rejected),
            ("rewards/accuracies", (chosen > rejected).float()),
        ):
            stats[name].append(float(value.detach().mean()))
        loss = losses.mean()
        if return_outputs:
            return loss, {"rewards_chosen": chosen, "rewards_rejected": rejected}
        return loss

    def prediction_step(
        self, model: Any, inputs: dict[str, Any], prediction_loss_only: bool, ignore_keys: list[str] | None = None
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """``(loss, reward margins, ones)``: ``reftlab.train.reward.reward_accuracy`` reads the margins."""
        return pairwise_prediction(self, model, inputs, prediction_loss_only)

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        mode = "train" if "loss" in logs else "eval"
        prefix = "eval_" if mode == "eval" else ""
        for name, values in self._stats[mode].items():
            if values:
                logs[f"{prefix}{name}"] = sum(values) / len(values)
        self._stats[mode].clear()
        super().log(logs, *args, **kwargs)


def dpo_loss(
    policy_chosen: Float[Tensor, " pairs"],
    policy_rejected: Float[Tensor, " pairs"],
    reference_chosen: Float[Tensor, " pairs"],
    reference_rejected: Float[Tensor, " pairs"],
    beta: float,
) -> tuple[Float[Tensor, " pairs"], Float[Tensor, " pairs"], Float[Tensor, " pairs"]]:
    """Per-pair DPO losses and the implicit rewards ``beta * (log pi - log ref)`` of each side.

    >>> z = torch.zeros(2)
    >>> losses, _, _ = dpo_loss(z, z, z, z, 0.1)
    >>> torch.allclose(losses, torch.log(torch.tensor(2.0)))
    True
    """
    chosen = beta * (policy_chosen - reference_chosen)
    rejected = beta * (policy_rejected - reference_rejected)
    return -F.logsigmoid(chosen - rejected), chosen.detach(), rejected.detach()


def sequence_logps(
    logits: Float[Tensor, "batch pos vocab"], labels: Int[Tensor, "batch pos"]
) -> Float[Tensor, " batch"]:
    """``sum_t log p(labels[t] | tokens < t)`` over the scored (not -100) tokens of each row."""
    targets = labels[:, 1:]  # [batch, pos-1]: token t is predicted at t-1
    scored = targets != IGNORE_INDEX
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # [batch, pos-1, vocab]
    picked = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # [batch, pos-1]
    return (picked * scored).sum(dim=-1)


@torch.no_grad()
def reference_logps(model: Any, pairs: Mapping[str, Tensor]) -> Float[Tensor, " batch"]:
    """``log ref(y|x)``: the base model with no intervention attached."""
    hf = unwrap(model).model
    logits = hf(input_ids=pairs["input_ids"], attention_mask=pairs["attention_mask"], use_cache=False).logits
    return sequence_logps(logits, pairs["labels"])


def preference_pairs(batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A batch of ``ReftPreferenceDataset`` examples -> ``2B`` right-padded rows: the B chosen
    sequences (prompt + chosen, labels on the chosen tokens), then the B rejected ones.

    Per example, the prompt starts at its first attended token (a leading pad token is
    dropped, and the locations shifted with it), ends where the labels begin, and the
    rejected response is the attended tokens after it.
    """
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    if "intervention_locations" not in batch:
        raise ValueError("a preference batch needs intervention_locations (build it with ReftPreferenceDataset)")
    chosen_rows, rejected_rows, locations = [], [], []
    for b in range(ids.shape[0]):
        attended = mask[b].nonzero().squeeze(1)
        scored = (labels[b] != IGNORE_INDEX).nonzero().squeeze(1)
        if len(attended) == 0 or len(scored) == 0:
            raise ValueError(
                f"example {b} of the batch has no {'tokens' if len(attended) == 0 else 'chosen response'}; "
                "DPO needs ReftPreferenceDataset's train-split examples (prompt, chosen and rejected)"
            )
        start, end = int(attended[0]), int(scored[0])
        prompt = ids[b, start:end]
        rejected = ids[b, end:][mask[b, end:].bool()]
        if len(rejected) == 0:
            raise ValueError(f"example {b} of the batch has an empty rejected response")
        chosen_rows.append((prompt, labels[b, end:][labels[b, end:] != IGNORE_INDEX]))
        rejected_rows.append((prompt, rejected))
        loc = batch["intervention_locations"][b]
        locations.append(torch.where(loc >= 0, loc - start, -1))
    rows = [(torch.cat([p, r]), r, len(p)) for p, r in chosen_rows + rejected_rows]  # (tokens, response, prompt length)
    width = max(len(t) for t, _, _ in rows)
    pad = int(ids[0, 0]) if mask[0, 0] == 0 else 0  # any id works under mask 0
    out_ids = torch.full((len(rows), width), pad, dtype=ids.dtype, device=ids.device)
    out_mask = torch.zeros((len(rows), width), dtype=mask.dtype, device=ids.device)
    out_labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=labels.dtype, device=ids.device)
    for i, (tokens, response, n_prompt) in enumerate(rows):
        out_ids[i, : len(tokens)] = tokens
        out_mask[i, : len(tokens)] = 1
        out_labels[i, n_prompt : len(tokens)] = response
    locs = stack_locations([x.tolist() for x in locations + locations]).to(ids.device)
    return {"input_ids": out_ids, "attention_mask": out_mask, "labels": out_labels, "intervention_locations": locs}
