"""What a caller hands a ReftModel, checked and put in reftlab's terms: pyreft's
``unit_locations`` and ``base``, pyvene's source-side arguments, and ``input_ids``.

Each check raises a ValueError/TypeError that names what is wrong and the fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import torch
from torch import Tensor, nn

from .models.hooked import HookedModel
from .sites import as_position_tensor


def refuse_pyvene_only(
    sources: Any, source_representations: Any, subspaces: Any, output_original_output: Any, additional: Any
) -> None:
    """pyvene's arguments for source-based interventions: ReFT's take none of them."""
    given = [
        name
        for name, value in (
            ("sources", sources),
            ("source_representations", source_representations),
            ("subspaces", subspaces),
            ("intervention_additional_kwargs", additional),
        )
        if value is not None
    ]
    if output_original_output:
        given.append("output_original_output")
    if given:
        raise ValueError(
            f"{', '.join(given)}: reftlab's ReFT interventions are sourceless and use their whole subspace; "
            "leave these at their defaults (for the unedited output run reft_model.model, or reftlab.generate(model, ...))"
        )


def unit_locations_to_positions(unit_locations: Mapping[str, Any], n_interventions: int) -> list[Tensor]:
    """pyreft's ``{"sources->base": (None, locs)}`` -> one ``[batch, n]`` tensor per intervention."""
    if not isinstance(unit_locations, Mapping):
        raise TypeError(
            f"unit_locations must be {{'sources->base': (None, locations)}}, got a {type(unit_locations).__name__}"
        )
    if set(unit_locations) != {"sources->base"}:
        raise ValueError(
            f"unit_locations must be {{'sources->base': (None, locations)}}, got keys {sorted(map(str, unit_locations))}"
        )
    value = unit_locations["sources->base"]
    if isinstance(value, tuple) and len(value) != 2:
        raise ValueError(
            f"unit_locations['sources->base'] must be the pair (None, locations), got a tuple of {len(value)}"
        )
    locs = value[1] if isinstance(value, tuple) else value
    if isinstance(locs, Tensor):
        per = [locs[i] for i in range(locs.shape[0])]
    elif isinstance(locs, (list, tuple)):
        per = [as_position_tensor(x, f"unit_locations[{i}]") for i, x in enumerate(locs)]
    else:
        raise TypeError(
            "unit_locations must be {'sources->base': (None, locations)} with locations "
            f"[num_interventions][batch][n] (a nested list or tensor), got {type(locs).__name__}"
        )
    if len(per) == 1 and n_interventions > 1:
        per = per * n_interventions
    if len(per) != n_interventions:
        raise ValueError(f"unit_locations give {len(per)} location lists for {n_interventions} interventions")
    return [as_position_tensor(p, "unit_locations") for p in per]


def as_base(base: Any) -> dict[str, Any]:
    """pyreft's ``base`` (a tokenizer output or dict with ``input_ids``) as a dict, with a clear error."""
    if not isinstance(base, Mapping):
        raise TypeError(
            f"base must be a dict (or tokenizer output) with 'input_ids' and optionally 'attention_mask', "
            f"got a {type(base).__name__}"
        )
    if "input_ids" not in base:
        raise ValueError(
            f"base has no 'input_ids' (keys: {sorted(map(str, base))}); pass the tokenizer's output, "
            "e.g. tokenizer(prompts, return_tensors='pt')"
        )
    return dict(base)


def check_inputs(hooked: HookedModel, input_ids: Any, attention_mask: Any) -> None:
    """``input_ids``: a ``[batch, pos]`` integer tensor of ids below the vocabulary size;
    ``attention_mask``: None or the same shape. A ValueError/TypeError names what is wrong."""
    if not isinstance(input_ids, Tensor):
        raise TypeError(f"input_ids must be a [batch, pos] tensor of token ids, got a {type(input_ids).__name__}")
    if input_ids.ndim != 2:
        raise ValueError(
            f"input_ids must be [batch, pos], got shape {tuple(input_ids.shape)}; a single prompt is [1, pos] "
            "(tokenizer(..., return_tensors='pt'))"
        )
    if input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool:
        raise TypeError(f"input_ids must hold integer token ids, got dtype {input_ids.dtype}")
    if input_ids.numel():
        embed = cast(nn.Embedding, hooked.hf_model.get_input_embeddings())  # HF returns the input nn.Embedding
        vocab = embed.num_embeddings
        lo, hi = int(input_ids.min()), int(input_ids.max())
        if lo < 0 or hi >= vocab:
            raise ValueError(
                f"input_ids hold token id {lo if lo < 0 else hi}, outside this model's vocabulary 0..{vocab - 1}; "
                "tokenize with the model's own tokenizer"
            )
    if attention_mask is not None and (
        not isinstance(attention_mask, Tensor) or attention_mask.shape != input_ids.shape
    ):
        shape = tuple(attention_mask.shape) if isinstance(attention_mask, Tensor) else type(attention_mask).__name__
        raise ValueError(f"attention_mask has shape {shape}, input_ids {tuple(input_ids.shape)}; they must match")
