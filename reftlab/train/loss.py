"""The causal-LM loss of a ReFT batch, with logits computed only where they are scored.

    loss = mean over {(b, t) : labels[b, t+1] != -100} of CE(lm_logits(h_final[b, t]), labels[b, t+1])

which equals the HF model's ``labels=`` loss (shifted, mean over scored tokens), without
materialising ``[batch, pos, vocab]`` logits for prompt and padding tokens. ``lm_logits``
applies the family's own logit post-processing (Gemma's soft-capping, Granite's and Cohere's
scaling; ``reftlab.models.arch``), so the value is the HF loss for every family.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from ..attach import ReftLike, attach
from ..data.encode import IGNORE_INDEX
from ..models.arch import get_module, lm_logits


def batch_positions(batch: Mapping[str, Tensor], n_interventions: int) -> list[Int[Tensor, "batch n"]] | None:
    """``intervention_locations`` ``[batch, K, n]`` -> one ``[batch, n]`` tensor per intervention
    (K = 1 is broadcast to every intervention); None when the batch has none."""
    locs = batch.get("intervention_locations")
    if locs is None:
        return None
    locs = torch.as_tensor(locs, dtype=torch.long)
    if locs.ndim != 3:
        raise ValueError(f"intervention_locations must be [batch, num_interventions, n], got shape {tuple(locs.shape)}")
    k = locs.shape[1]
    if k == 1 and n_interventions > 1:
        return [locs[:, 0]] * n_interventions
    if k != n_interventions:
        raise ValueError(f"the batch has intervention_locations for {k} interventions, the model has {n_interventions}")
    return [locs[:, i] for i in range(k)]


def selected_lm_loss(
    hf_model: Any,
    hidden: Float[Tensor, "batch pos d_model"],
    labels: Int[Tensor, "batch pos"],
) -> Float[Tensor, ""]:
    """Shifted CE of ``lm_head(hidden)`` against ``labels`` at scored tokens only."""
    return scored_ce(hf_model, hidden[:, :-1], labels[:, 1:])


def scored_ce(
    hf_model: Any,
    hidden: Float[Tensor, "*shape d_model"],
    targets: Int[Tensor, "*shape"],
) -> Float[Tensor, ""]:
    """Mean CE of the family's logits (``lm_logits``) against already-aligned ``targets`` where they are not -100."""
    keep = targets != IGNORE_INDEX
    if not bool(keep.any()):
        raise ValueError("the batch has no scored tokens (every label is -100); check the responses")
    logits = lm_logits(hf_model, hidden[keep])  # [N, vocab]
    return F.cross_entropy(logits.float(), targets[keep])


def plain_loss(reft_model: ReftLike, batch: Mapping[str, Tensor]) -> Float[Tensor, ""]:
    """Loss with every block run through the HF model and the interventions attached."""
    positions = batch_positions(batch, len(reft_model.interventions))
    mask = batch["attention_mask"]
    bindings = reft_model.bindings(positions, mask, batch.get("prompt_lengths"))
    hooked = reft_model.hooked
    with attach(hooked, bindings):
        hidden = get_module(hooked.hf_model, hooked.arch.decoder)(
            input_ids=batch["input_ids"], attention_mask=mask
        ).last_hidden_state
    return selected_lm_loss(hooked.hf_model, hidden, batch["labels"])
