"""One forward of a ReftModel inside an HF Trainer, which may have wrapped it (DDP).

Under ``torchrun`` the Trainer hands ``compute_loss`` a ``DistributedDataParallel``
wrapper. Gradients are all-reduced only when the forward runs *through* that wrapper,
so ``run_batch`` calls the wrapper (``ReftModel.forward``) when there is one, and the
ReftModel's own ``run`` otherwise; both attach the interventions at the batch's
``intervention_locations``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from .loss import batch_positions


def unwrap(model: nn.Module) -> Any:
    """The ReftModel inside a DDP (or similar ``.module``) wrapper; the model itself otherwise."""
    while not hasattr(model, "interventions") and isinstance(getattr(model, "module", None), nn.Module):
        model = model.module
    if not hasattr(model, "interventions"):
        raise TypeError(f"expected a ReftModel (or a wrapper around one), got {type(model).__name__}")
    return model


def is_wrapped(model: nn.Module) -> bool:
    return unwrap(model) is not model


def run_batch(model: nn.Module, inputs: Mapping[str, Tensor], *, labels: Tensor | None = None) -> Any:
    """The HF model's output for ``inputs`` with the interventions attached (no KV cache)."""
    reft = unwrap(model)
    positions = batch_positions(inputs, len(reft.interventions))
    if reft is model:
        return reft.run(
            inputs["input_ids"], inputs["attention_mask"], positions=positions, labels=labels, use_cache=False
        )
    base = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}
    _, out = model(base, positions=positions, labels=labels, use_cache=False)
    return out
