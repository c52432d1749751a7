"""The causal-LM loss of a ReFT batch, with logits computed only where they are scored.

    loss = mean over {(b, t) : labels[b, t+1] != -100} of CE(lm_head(h_final[b, t]), labels[b, t+1])

which equals the HF model's ``labels=`` loss (shifted, mean over scored tokens), without
materialising ``[batch, pos, vocab]`` logits for prompt and padding tokens.
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
    """Mean CE of ``lm_head(hidden)`` against already-aligned ``targets`` where they are not -100."""
    keep = targets != IGNORE_INDEX
    if not bool(keep.any()):
        raise ValueError("the batch has no scored tokens (every label is -100); check the responses")
    logits = hf_model.get_output_embeddings()(hidden[keep])  # [N, vocab]
    return F.cross_entropy(logits.float(), targets[keep])


def logits_need_full_forward(hf_model: Any) -> bool:
    """True for models whose logits are post-processed (soft-capping, scaling) after ``lm_head``."""
    cfg = hf_model.config.get_text_config() if hasattr(hf_model.config, "get_text_config") else hf_model.config
    return bool(getattr(cfg, "final_logit_softcapping", None) or getattr(cfg, "logit_scale", None)) or (
        hf_model.get_output_embeddings() is None
    )


def plain_loss(reft_model: ReftLike, batch: Mapping[str, Tensor]) -> Float[Tensor, ""]:
    """Loss with every block run through the HF model and the interventions attached."""
    positions = batch_positions(batch, len(reft_model.interventions))
    mask = batch["attention_mask"]
    bindings = reft_model.bindings(positions, mask, batch.get("prompt_lengths"))
    hf = reft_model.hooked.hf_model
    with attach(reft_model.hooked, bindings):
        if logits_need_full_forward(hf):
            return reft_model.model(input_ids=batch["input_ids"], attention_mask=mask, labels=batch["labels"]).loss
        hidden = hf.base_model(input_ids=batch["input_ids"], attention_mask=mask).last_hidden_state
    return selected_lm_loss(hf, hidden, batch["labels"])
