"""Activation patching sweeps: which (layer, component, position) carries what the clean run knows.

For pairs of equally long prompts (clean c, corrupted x) and an answer token a (optionally a
wrong one w), each cell patches the clean representation at one hook and one position into the
corrupted run (all of it, or only its coordinates in a given subspace, ``h + R^T R (s - h)``) and
reads the metric at the last position:

    metric     = logit[a] - logit[w]             (``wrong`` given: the logit difference)
               = softmax(logits)[a]              (otherwise: the probability of a)
    recovered  = (patched - corrupted) / (clean - corrupted)     1: the cell restores the clean answer

How it runs, and why it is exact. A patch at any hook of block L leaves blocks 0..L-1 as
they were in the corrupted run, so their output (the input of block L) is taken from that run
instead of being recomputed for every cell:

1. the clean and corrupted forwards give the two reference metrics;
2. one clean pass captures every patched hook's states, one corrupted pass the input of every
   patched block (both stop after the deepest block they need);
3. per hook of block L, every (pair, position) cell is one row of a batch (``batch_size`` rows
   at a time) that runs blocks L..n-1 only, fed the cached corrupted input of block L, through
   ``reftlab.models.partial.partial_forward`` (the family's own decoder forward, its masks and
   positions), with the cell's patch attached by ``reftlab.attach``; the head runs at the last
   position only (``reftlab.models.arch.lm_logits``).

So a sweep of L layers x P positions costs about L x P forwards of the patched part, batched,
instead of L x P full forwards. The blocks that run see the inputs a full forward would give
them, so the metrics equal a full forward's with the same patch to float rounding
(``tests/analysis/test_patch.py`` checks several families in float64). The model runs under
``torch.inference_mode``; hooks only through ``attach`` and ``partial_forward``.

Columns: pair, hook, layer, component, position, metric, clean, corrupted, recovered.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from ..attach import Binding, ReftLike, attach
from ..interventions import orthonormal_rows, rotated_patch
from ..models.arch import get_module, lm_logits
from ..models.hooked import HookedModel
from ..models.partial import partial_forward
from ..sites import COMPONENTS
from .attribute import target_ids
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


def _from_block(
    hooked: HookedModel, layer: int, feed: Tensor, mask: Tensor, binding: Binding
) -> Float[Tensor, "rows vocab"]:
    """Last-position logits of a run of blocks ``layer..n-1`` fed ``feed`` (the input of block ``layer``),
    ``binding`` attached. ``attach`` is entered first, so ``partial_forward``'s feed (prepended later)
    reaches block ``layer`` before a ``hook_resid_pre`` patch does."""
    hf, arch = hooked.hf_model, hooked.arch
    decoder = get_module(hf, arch.decoder)
    with attach(hooked, [binding]), partial_forward(hf, arch, layer, hooked.n_layers, feed=feed):
        out = decoder(inputs_embeds=feed, attention_mask=mask, use_cache=False)
    return lm_logits(hf, out.last_hidden_state[:, -1])  # [rows, d_model] -> [rows, vocab]


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
            starts = sorted({layer for _, layer, _ in hooks})
            block_in = capture(hooked, corrupted_ids, ones, [(f"blocks.{s}.hook_resid_pre", None) for s in starts])
            corrupt_in = dict(zip(starts, block_in))  # layer -> the corrupted input of block layer, [pair, pos, d]
            # every cell of one hook as a row: (pair i, position p), pair-major
            cell_pair = torch.arange(n).repeat_interleave(len(pos_list))  # [cells]
            cell_pos = torch.tensor(pos_list).repeat(n)  # [cells]
            rows = []
            for (hook, layer, comp), clean_states in zip(hooks, states):
                values = []
                for start in range(0, len(cell_pair), batch_size):
                    i, p = cell_pair[start : start + batch_size], cell_pos[start : start + batch_size]
                    edit = _CellPatch(clean_states[i, p], R)  # [rows, d_model]
                    binding = Binding(hook, edit, p[:, None])
                    logits = _from_block(hooked, layer, corrupt_in[layer][i], ones[i], binding)  # [rows, vocab]
                    values.append(_metric(logits[:, None], ans[i], None if wr is None else wr[i]))
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


@dataclass(frozen=True, kw_only=True)
class PatchSweep:
    """A sweep given as text, for the dashboard (``reftlab.viz.write_dashboard(..., patching=...)``).

    ``clean`` and ``corrupted``: prompts paired in order; each pair, and all pairs, must tokenize to
    the same number of tokens (the cells are token-aligned). ``answer`` / ``wrong``: single tokens
    (text or id); without ``wrong`` the metric is the answer's probability. ``layers`` (default
    every layer), ``components`` and ``positions``: as in ``patch``.
    """

    clean: Sequence[str]
    corrupted: Sequence[str]
    answer: str | int
    wrong: str | int | None = None
    layers: Sequence[int] | None = None
    components: Sequence[str] = ("block_input",)
    positions: Sequence[int] | None = None

    def __post_init__(self) -> None:
        for name in ("clean", "corrupted"):
            value = getattr(self, name)
            if isinstance(value, str) or not value or not all(isinstance(p, str) for p in value):
                raise ValueError(f"PatchSweep.{name} must be a non-empty list of prompts, got {value!r}")
        if len(self.clean) != len(self.corrupted):
            raise ValueError(
                f"PatchSweep pairs clean and corrupted prompts in order: got {len(self.clean)} clean and "
                f"{len(self.corrupted)} corrupted; give as many of each"
            )

    def run(self, model: HookedModel | ReftLike, batch_size: int = 64) -> pd.DataFrame:
        """Tokenize with the model's tokenizer and run ``patch``; the table as ``patch`` returns it."""
        hooked = model if isinstance(model, HookedModel) else model.hooked
        tok = hooked.tokenizer
        ids = [tok(p)["input_ids"] for p in [*self.clean, *self.corrupted]]
        if len({len(x) for x in ids}) != 1:
            lengths = {p: len(x) for p, x in zip([*self.clean, *self.corrupted], ids)}
            raise ValueError(
                f"PatchSweep prompts must all tokenize to the same length (token-aligned pairs), got {lengths}; "
                "reword them so that they do"
            )
        both = torch.tensor(ids)  # [2 * pair, pos]
        n = len(self.clean)
        answer, *wrong = target_ids(tok, [self.answer] if self.wrong is None else [self.answer, self.wrong]).values()
        return patch(
            hooked,
            both[:n],
            both[n:],
            answer,
            wrong[0] if wrong else None,
            layers=self.layers,
            components=self.components,
            positions=self.positions,
            batch_size=batch_size,
        )
