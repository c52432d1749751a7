"""Attribute a ReFT's effect to its sites and subspace directions by ablation.

For each intervention ``s`` (and, with ``directions=True``, each direction ``q_i`` of an
orthonormal basis of its subspace) the prompt set is run with that part removed:

    site removed:       phi_s(h) -> h
    direction removed:  phi_s(h) -> h + (I - q_i q_i^T) (phi_s(h) - h)

and the mean next-token loss (over completion tokens when the prompt set has a
``completion`` column, else over prompt tokens) and the mean logit of chosen target
tokens at each prompt's last token are compared with the full ReFT: ``delta = value -
value(full)``. For orthogonal kinds (LoReFT, ...) the edit lies in span(R), so removing
every direction equals removing the site.

>>> import reftlab
>>> hooked = reftlab.load_model(reftlab.tiny_llama(), reftlab.tiny_tokenizer())
>>> reft = reftlab.get_reft_model(hooked, reftlab.ReftConfig(representations={
...     "layer": 1, "component": "block_output", "positions": "l1", "kind": "loreft", "rank": 2}))
>>> df = attribute(reft, ["hi there", "ok"], targets=["a"], progress=False)
>>> sorted(df.removed.unique())
['layer_1_comp_block_output#0', 'none']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm import tqdm

from ..attach import ReftLike, call_edit
from ..interventions import Intervention
from ..subspace import orthonormal_basis
from .capture import batch_positions, eval_mode, forward_seen, positions_used
from .prompts import as_prompt_set, batches, n_batches, pad_id, tokenize
from .prompts import prompt_format as resolve_format

NONE = "none"


class WithoutDirections:
    """``h -> h + (I - Q^T Q)(phi(h) - h)``: an intervention with span(Q) removed from its edit.

    An ``Edit`` (``reftlab.attach``) with the wrapped intervention's ``kind`` and ``arity``.
    """

    def __init__(self, intervention: Intervention, q: Float[Tensor, "m d_model"]) -> None:
        self.intervention, self.q = intervention, q
        self.kind, self.arity = intervention.kind, intervention.arity

    def __call__(self, h: Tensor) -> Tensor:
        delta = call_edit(self.intervention, h) - h  # [n, d_model]
        q = self.q.to(device=h.device, dtype=h.dtype)
        return h + delta - (delta @ q.T) @ q


def target_ids(tokenizer: Any, targets: Sequence[str | int], vocab_size: int | None = None) -> dict[str, int]:
    """``{label: token id}``; each string target must be exactly one token, each id below ``vocab_size``."""
    if isinstance(targets, (str, int)):
        raise TypeError(f"targets must be a list of tokens or token ids, got {targets!r}; wrap it: [{targets!r}]")
    out = {}
    for t in targets:
        if isinstance(t, int) and not isinstance(t, bool):
            if t < 0 or (vocab_size is not None and t >= vocab_size):
                raise ValueError(f"target id {t} is outside the vocabulary 0..{(vocab_size or 1) - 1}")
            out[repr(tokenizer.decode([t]))] = t
            continue
        if not isinstance(t, str):
            raise TypeError(f"a target must be a single-token string or a token id, got {t!r}")
        ids = tokenizer(t, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ValueError(f"target {t!r} is {len(ids)} tokens ({ids}); give single-token strings or token ids")
        out[repr(t)] = int(ids[0])
    return out


def attribute(
    reft_model: ReftLike,
    prompts: Any,
    *,
    targets: Sequence[str | int] = (),
    directions: bool = False,
    positions: Any = None,
    batch_size: int = 16,
    column: str = "prompt",
    prompt_format: Any = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Tidy ablation table: ``removed, key, direction, metric, value, delta``.

    ``removed`` is ``"none"`` (the full ReFT), a key, or ``key/dir_i``; ``metric`` is
    ``loss`` or ``logit['tok']`` for each of ``targets``. ``positions`` and ``prompt_format`` as
    in ``project``; the target logits are read at each prompt's last (formatted) token.
    """
    hooked = reft_model.hooked
    keys = list(reft_model.interventions)
    positions_used(reft_model, positions, keys, "attribute")
    tids = target_ids(hooked.tokenizer, targets, hooked.cfg["d_vocab"])
    variants: list[tuple[str, str | None, int | None, dict, tuple]] = [(NONE, None, None, {}, ())]
    for k in keys:
        variants.append((k, k, None, {}, (k,)))
        if directions:
            iv = reft_model.interventions[k]
            basis = orthonormal_basis(iv.subspace().detach(), what=f"{k}.subspace()").float()
            for i in range(basis.shape[0]):
                variants.append((f"{k}/dir_{i}", k, i, {k: WithoutDirections(iv, basis[i : i + 1])}, ()))
    prompt_set = as_prompt_set(prompts, column=column)
    encoded = tokenize(hooked.tokenizer, prompt_set, resolve_format(reft_model, prompt_format))
    has_completion = prompt_set.completions is not None
    sums = {v[0]: {"loss": 0.0, **{f"logit[{n}]": 0.0 for n in tids}} for v in variants}
    n_tokens, n_prompts = 0, 0
    with eval_mode(reft_model):
        it = batches(encoded, batch_size, pad_id(hooked.tokenizer), hooked.device)
        for batch in tqdm(it, total=n_batches(len(encoded), batch_size), desc="attribute", disable=not progress):
            labels = _labels(batch, has_completion)
            n_tokens += int((labels[:, 1:] != -100).sum())
            n_prompts += batch.input_ids.shape[0]
            last = batch.prompt_lengths - 1  # [batch]
            pos = batch_positions(positions, batch, len(encoded))
            for name, _, _, replace, drop in variants:
                out, _ = forward_seen(reft_model, batch, (), pos, replace=replace, drop=drop)
                logits = out.logits.float()  # [batch, pos, vocab]
                ce = torch.nn.functional.cross_entropy(
                    logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100, reduction="sum"
                )
                sums[name]["loss"] += float(ce)
                at_last = logits[torch.arange(logits.shape[0], device=logits.device), last]  # [batch, vocab]
                for label, t in tids.items():
                    sums[name][f"logit[{label}]"] += float(at_last[:, t].sum())
    if n_tokens == 0:
        raise ValueError("no token carries a loss: prompts need >= 2 tokens, or give non-empty completions")
    rows = []
    for name, key, direction, _, _ in variants:
        for metric, total in sums[name].items():
            value = total / (n_tokens if metric == "loss" else n_prompts)
            base = sums[NONE][metric] / (n_tokens if metric == "loss" else n_prompts)
            rows.append(
                {
                    "removed": name,
                    "key": key,
                    "direction": direction,
                    "metric": metric,
                    "value": value,
                    "delta": value - base,
                }
            )
    return pd.DataFrame(rows)


def _labels(batch: Any, has_completion: bool) -> Tensor:
    labels = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)
    if has_completion:
        in_prompt = torch.arange(labels.shape[1], device=labels.device)[None] < batch.prompt_lengths[:, None]
        labels = labels.masked_fill(in_prompt, -100)
    return labels
