"""Read subspace directions and edit vectors through the final norm and the unembedding.

A direction ``u`` (unit length) is read as a logit-lens vector with the direction-free
parts removed (the norm's and the head's biases, which shift every direction alike):

    logits(u) = head(norm(u) - norm(0)) - head(0)          # [d_vocab]

For RMSNorm that is ``W_U (gamma * u / rms(u))``; for LayerNorm the mean is removed too.
``decode`` reports, per direction, the ``k`` tokens with the highest logits ("top": what
writing +u promotes) and the lowest ("bottom": what -u promotes). With prompts it also
decodes ``edit``, the mean edit phi(h) - h over the positions the intervention edits.

>>> import reftlab
>>> hooked = reftlab.load_model(reftlab.tiny_llama(), reftlab.tiny_tokenizer())
>>> W = hooked.hf_model.get_output_embeddings().weight          # tied, gamma = 1 at init
>>> t = int(W.norm(dim=1).argmax())       # the longest row: by Cauchy-Schwarz it wins its own direction
>>> int(direction_logits(hooked, W[t]).argmax()) == t
True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from ..attach import ReftLike
from ..models.arch import get_module
from .capture import batch_positions, check_keys, eval_mode, forward_seen, position_mask, positions_used
from .project import unit_directions
from .prompts import as_prompt_set, batches, pad_id, tokenize
from .prompts import prompt_format as resolve_format


def direction_logits(
    hooked: Any, directions: Float[Tensor, "k d_model"] | Float[Tensor, " d_model"]
) -> Float[Tensor, "k d_vocab"]:
    """``head(norm(u) - norm(0)) - head(0)`` for each unit-scaled row ``u`` (see the module doc)."""
    u = unit_directions(directions, hooked.d_model, "directions")
    norm = get_module(hooked.hf_model, hooked.arch.final_norm)
    head = hooked.hf_model.get_output_embeddings()
    p = next(head.parameters())
    with torch.inference_mode():
        x = torch.cat([u, torch.zeros_like(u[:1])]).to(device=p.device, dtype=p.dtype)[:, None, :]  # [k+1, 1, d]
        normed = norm(x)
        logits = head(normed[:-1] - normed[-1:]) - head(torch.zeros_like(normed[-1:]))  # [k, 1, vocab]
    return logits[:, 0].float()


def mean_edit(
    reft_model: ReftLike,
    prompts: Any,
    key: str,
    *,
    positions: Any = None,
    batch_size: int = 32,
    column: str = "prompt",
    prompt_format: Any = None,
) -> Float[Tensor, " d_model"]:
    """Mean of phi(h) - h over every position the intervention ``key`` edits, over the prompts.

    ``positions`` and ``prompt_format`` as in ``project``."""
    (key,) = check_keys(reft_model, key)
    positions_used(reft_model, positions, [key], "mean_edit")
    hooked = reft_model.hooked
    encoded = tokenize(
        hooked.tokenizer, as_prompt_set(prompts, column=column), resolve_format(reft_model, prompt_format)
    )
    total, count = torch.zeros(hooked.d_model, dtype=torch.float64), 0
    with eval_mode(reft_model):
        for batch in batches(encoded, batch_size, pad_id(hooked.tokenizer), hooked.device):
            pos = batch_positions(positions, batch, len(encoded))
            _, seen = forward_seen(reft_model, batch, [key], pos, stop=True)
            s = seen[key]
            edited = position_mask(s, batch.attention_mask) & batch.attention_mask.bool()
            total += (s.after - s.before)[edited].double().sum(dim=0).cpu()  # [d_model]
            count += int(edited.sum())
    if count == 0:
        raise ValueError(f"intervention {key!r} edits no token of these prompts; check the prompts and positions")
    return (total / count).float()


def decode(
    reft_model: ReftLike,
    key: str | Sequence[str] | None = None,
    *,
    k: int = 10,
    prompts: Any = None,
    directions: Tensor | None = None,
    positions: Any = None,
    batch_size: int = 32,
    prompt_format: Any = None,
) -> pd.DataFrame:
    """Top/bottom-``k`` tokens per subspace direction (and the mean edit, given prompts).

    ``directions``: ``[m, d_model]`` to decode instead of the interventions' subspaces
    (then ``key`` only labels them). Columns: ``key, direction, side, rank, token_id,
    token, logit``; ``direction`` is ``dir_i`` or ``edit``.
    """
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k={k!r} must be a positive int")
    hooked = reft_model.hooked
    keys = check_keys(reft_model, key)
    if prompts is not None:
        positions_used(reft_model, positions, keys, "decode")
    rows = []
    for kk in keys:
        dirs = directions if directions is not None else reft_model.interventions[kk].subspace().detach()
        dirs = unit_directions(dirs, hooked.d_model, "directions" if directions is not None else f"{kk}.subspace()")
        names = [f"dir_{i}" for i in range(dirs.shape[0])]
        if prompts is not None:
            edit = mean_edit(
                reft_model, prompts, kk, positions=positions, batch_size=batch_size, prompt_format=prompt_format
            )
            if float(edit.norm()) == 0.0:
                raise ValueError(f"the mean edit of {kk!r} over these prompts is zero; nothing to decode")
            dirs, names = torch.cat([dirs, edit[None]]), [*names, "edit"]
        logits = direction_logits(hooked, dirs)  # [m, vocab]
        for name, row in zip(names, logits):
            rows += [{"key": kk, "direction": name, **r} for r in top_and_bottom(hooked.tokenizer, row, k)]
    return pd.DataFrame(rows)


def top_and_bottom(tokenizer: Any, logits: Float[Tensor, " d_vocab"], k: int) -> list[dict[str, Any]]:
    """The ``k`` highest ("top") and lowest ("bottom") logits as rows ``side, rank, token_id, token, logit``."""
    k = min(k, logits.shape[0])
    rows = []
    for side, (vals, ids) in (("top", logits.topk(k)), ("bottom", logits.topk(k, largest=False))):
        for rank, (v, t) in enumerate(zip(vals.tolist(), ids.tolist())):
            rows.append({"side": side, "rank": rank, "token_id": t, "token": tokenizer.decode([t]), "logit": v})
    return rows
