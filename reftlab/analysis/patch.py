"""Activation patching sweeps: which (layer, component, position) carries what the clean run knows.

For pairs of equally long prompts (clean c, corrupted x) and an answer token a (optionally a
wrong one w), each cell patches the clean representation at one hook and one position into the
corrupted run (all of it, or only its coordinates in a given subspace, ``h + R^T R (s - h)``) and
reads the metric at the last position:

    metric     = logit[a] - logit[w]             (``wrong`` given: the logit difference)
               = softmax(logits)[a]              (otherwise: the probability of a)
    recovered  = (patched - corrupted) / (clean - corrupted)     1: the cell restores the clean answer

Cost: one clean forward (every hook's states captured at once, stopped after the deepest),
one corrupted forward, then one batched forward per hook holding every (pair, position) cell
(``batch_size`` rows at a time), instead of one forward per cell. The model runs through
``reftlab.attach`` only, under ``torch.inference_mode``.

Columns: pair, hook, layer, component, position, metric, clean, corrupted, recovered.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch
from jaxtyping import Int
from torch import Tensor

from ..attach import Binding, ReftLike, attach
from ..interventions import orthonormal_rows, rotated_patch
from ..models.hooked import HookedModel
from ..sites import COMPONENTS
from .interchange import capture


class _CellPatch:
    """An ``Edit`` that writes its source vectors (or their part in span(R)) over the gathered ones."""

    kind = "patch"
    arity = 1

    def __init__(self, source: Tensor, R: Tensor | None) -> None:
        self.source, self.R = source, R

    def __call__(self, h: Tensor) -> Tensor:
        s = self.source.to(device=h.device, dtype=h.dtype)
        if self.R is None:
            return s.clone()
        return rotated_patch(h, s, self.R.to(device=h.device, dtype=h.dtype))


def _hooks(hooked: HookedModel, layers: Sequence[int] | None, components: Sequence[str]) -> list[tuple[str, int, str]]:
    for c in components:
        if c not in COMPONENTS:
            raise ValueError(f"component {c!r} is not known; valid components: {', '.join(COMPONENTS)}")
    layer_list = range(hooked.n_layers) if layers is None else layers
    for layer in layer_list:
        if not 0 <= layer < hooked.n_layers:
            raise ValueError(f"layer {layer} is out of range; this model has layers 0..{hooked.n_layers - 1}")
    return [(f"blocks.{layer}.{COMPONENTS[c]}", layer, c) for layer in layer_list for c in components]


def _metric(logits: Tensor, answer: Tensor, wrong: Tensor | None) -> Tensor:
    last = logits[:, -1]  # [rows, vocab]
    last = last.float() if last.dtype in (torch.float16, torch.bfloat16) else last
    rows = torch.arange(len(last), device=last.device)
    if wrong is None:
        return last.softmax(-1)[rows, answer.to(last.device)]
    return last[rows, answer.to(last.device)] - last[rows, wrong.to(last.device)]


def _per_pair(x: Any, n: int, what: str) -> Tensor:
    t = torch.as_tensor(x, dtype=torch.long)
    t = t.expand(n) if t.ndim == 0 else t
    if t.shape != (n,):
        raise ValueError(f"{what} must be one token id or one per pair ({n}), got shape {tuple(t.shape)}")
    return t


def patch(
    model: HookedModel | ReftLike,
    clean_ids: Int[Tensor, "pair pos"],
    corrupted_ids: Int[Tensor, "pair pos"],
    answer: int | Sequence[int] | Tensor,
    wrong: int | Sequence[int] | Tensor | None = None,
    *,
    layers: Sequence[int] | None = None,
    components: Sequence[str] = ("block_input",),
    positions: Sequence[int] | None = None,
    subspace: Tensor | None = None,
    batch_size: int = 64,
) -> pd.DataFrame:
    """The sweep as a tidy table, one row per (pair, hook, position); see the module docstring.

    ``model``: a HookedModel or a ReftModel (its base runs, without its interventions).
    ``positions``: the positions to patch (default every position). ``subspace``: ``[k, d_model]``
    rows spanning the subspace to patch (orthonormalised here), e.g. a DAS rotation.
    """
    hooked = model if isinstance(model, HookedModel) else model.hooked
    if clean_ids.shape != corrupted_ids.shape or clean_ids.ndim != 2:
        raise ValueError(
            f"clean and corrupted prompts must be [pair, pos] of one shape (token-aligned pairs), got "
            f"{tuple(clean_ids.shape)} and {tuple(corrupted_ids.shape)}"
        )
    n, T = clean_ids.shape
    ans = _per_pair(answer, n, "answer")
    wr = None if wrong is None else _per_pair(wrong, n, "wrong")
    pos_list = list(range(T)) if positions is None else [int(p) for p in positions]
    bad = [p for p in pos_list if not 0 <= p < T]
    if bad:
        raise ValueError(f"positions {bad} are outside the prompts' 0..{T - 1}")
    R = None if subspace is None else orthonormal_rows(torch.as_tensor(subspace).reshape(-1, hooked.d_model))
    hooks = _hooks(hooked, layers, components)
    was = hooked.model.training
    hooked.model.eval()
    try:
        with torch.inference_mode():
            ones = torch.ones_like(clean_ids)
            clean_logits = hooked.model(input_ids=clean_ids, attention_mask=ones, use_cache=False).logits
            corrupt_logits = hooked.model(input_ids=corrupted_ids, attention_mask=ones, use_cache=False).logits
            m_clean, m_corrupt = _metric(clean_logits, ans, wr), _metric(corrupt_logits, ans, wr)
            states = capture(hooked, clean_ids, ones, [(h, None) for h, _, _ in hooks])  # [pair, pos, d] each
            # every cell of one hook as a row: (pair i, position p), pair-major
            cell_pair = torch.arange(n).repeat_interleave(len(pos_list))  # [cells]
            cell_pos = torch.tensor(pos_list).repeat(n)  # [cells]
            rows = []
            for (hook, layer, comp), clean_states in zip(hooks, states):
                values = []
                for start in range(0, len(cell_pair), batch_size):
                    i, p = cell_pair[start : start + batch_size], cell_pos[start : start + batch_size]
                    edit = _CellPatch(clean_states[i, p], R)  # [rows, d_model]
                    with attach(hooked, [Binding(hook, edit, p[:, None])]):
                        logits = hooked.model(
                            input_ids=corrupted_ids[i], attention_mask=ones[i], use_cache=False
                        ).logits
                    values.append(_metric(logits, ans[i], None if wr is None else wr[i]))
                metric = torch.cat(values).cpu()
                rows.append(
                    pd.DataFrame(
                        {
                            "pair": cell_pair.numpy(),
                            "hook": hook,
                            "layer": layer,
                            "component": comp,
                            "position": cell_pos.numpy(),
                            "metric": metric.numpy(),
                            "clean": m_clean.cpu()[cell_pair].numpy(),
                            "corrupted": m_corrupt.cpu()[cell_pair].numpy(),
                        }
                    )
                )
    finally:
        hooked.model.train(was)
    table = pd.concat(rows, ignore_index=True)
    gap = table["clean"] - table["corrupted"]
    table["recovered"] = (table["metric"] - table["corrupted"]) / gap.where(gap != 0)
    return table
