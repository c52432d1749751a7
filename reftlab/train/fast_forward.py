"""Exact shortcuts for training on a frozen Llama-family model: cache, pack, score sparsely.

While the base model is frozen, nothing below the lowest intervened block can change,
so its output is computed once per example (no grad) and cached across epochs. Each
step then runs only blocks ``start..L-1`` itself, on the batch *packed* into one row:

    h      = concat_b cache[b]                          [1, N, d_model],  N = sum_b T_b
    pos    = concat_b arange(T_b)                        rotary positions restart per example
    mask   = causal AND same-example                     [1, 1, N, N] additive
    loss   = CE(lm_head(norm(h_L))[scored], targets)     logits only at scored tokens

Packing removes all padding work; with right padding and the model's default position
ids this is the same computation as the HF forward of the padded batch (to float
rounding; ``tests/train/test_fast_forward.py`` checks ~1e-5). Interventions hook in
through ``reftlab.attach`` as usual; one at the cached boundary
(``blocks.{start-1}.hook_resid_post``) is applied with ``apply_at_positions``.

``why_not(reft_model)`` says why a model cannot take this path (then training uses
``loss.plain_loss``): only Llama-family blocks are run by hand here.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ..attach import Binding, apply_at_positions, attach
from ..data.encode import IGNORE_INDEX
from .loss import batch_positions, logits_need_full_forward, scored_ce

SUPPORTED = frozenset({"llama"})
_SITE = re.compile(r"^blocks\.(\d+)\.(.+)$")


def start_block(hooks: Sequence[str]) -> tuple[int, str | None] | None:
    """The first block that must run, and the boundary hook applied on its cached input.

    ``blocks.L.hook_resid_post`` edits block L's output, so blocks 0..L are unaffected
    and running starts at L+1; every other block site starts at its own block. None if
    a site is not inside a block (e.g. ``hook_embed``).
    """
    start, boundary = None, None
    for hook in hooks:
        m = _SITE.match(hook)
        if not m:
            return None
        layer, part = int(m.group(1)), m.group(2)
        s = layer + 1 if part in ("hook_resid_post", "hook_out") else layer
        if start is None or s < start:
            start = s
    if start is None:
        return None
    for hook in hooks:
        m = _SITE.match(hook)
        if m and int(m.group(1)) == start - 1 and m.group(2) in ("hook_resid_post", "hook_out"):
            boundary = hook
    return start, boundary


def why_not(reft_model: Any) -> str | None:
    """None if the fast path applies to ``reft_model``, else the reason it does not."""
    hooked = reft_model.hooked
    hf = hooked.hf_model
    if hooked.cfg["model_type"] not in SUPPORTED:
        return f"model_type {hooked.cfg['model_type']!r} is not one of {sorted(SUPPORTED)}"
    if logits_need_full_forward(hf):
        return "the model post-processes its logits"
    if getattr(hf.config, "_attn_implementation", "sdpa") not in ("sdpa", "eager"):
        return f"attention implementation {hf.config._attn_implementation!r} (needs sdpa or eager)"
    found = start_block([s.hook for s in reft_model.sites])
    if found is None:
        return "an intervention sits outside the transformer blocks"
    start = found[0]
    layers = hf.model.layers
    frozen_below = [hf.model.embed_tokens, *list(layers)[:start]]
    if any(p.requires_grad for m in frozen_below for p in m.parameters()):
        return f"parameters below block {start} are trainable, so their outputs cannot be cached"
    if hf.training and float(getattr(hf.config, "attention_dropout", 0.0) or 0.0) > 0:
        return "the base model is in training mode with attention dropout"
    return None


class FastForward:
    """Cached-prefix, packed, sparse-logit loss for one ``ReftModel`` (see the module docstring).

    ``cache_bytes`` caps the cache; examples beyond it are recomputed (still no grad).
    """

    def __init__(self, reft_model: Any, *, cache_bytes: int = 2 << 30) -> None:
        reason = why_not(reft_model)
        if reason is not None:
            raise ValueError(f"the fast path does not apply: {reason}")
        self.reft_model = reft_model
        self.hf = reft_model.hooked.hf_model
        self.start, self.boundary = start_block([s.hook for s in reft_model.sites])  # type: ignore[misc]
        self.cache_bytes = cache_bytes
        self._cache: dict[Any, Tensor] = {}
        self._used = 0

    # --- the packed forward -----------------------------------------------------------
    def run_blocks(
        self, h: Float[Tensor, "1 N d_model"], lengths: Sequence[int], lo: int, hi: int
    ) -> Float[Tensor, "1 N d_model"]:
        """Run blocks ``lo..hi-1`` on a packed row of examples of the given ``lengths``."""
        if lo >= hi:
            return h
        position_ids = torch.cat([torch.arange(t, device=h.device) for t in lengths])[None]  # [1, N]
        mask = packed_causal_mask(lengths, h.dtype, h.device)  # [1, 1, N, N]
        rotary = self.hf.model.rotary_emb(h, position_ids)
        for layer in self.hf.model.layers[lo:hi]:
            out = layer(h, attention_mask=mask, position_ids=position_ids, position_embeddings=rotary)
            h = out[0] if isinstance(out, tuple) else out
        return h

    @torch.no_grad()
    def prefix(self, ids: Sequence[Tensor]) -> list[Tensor]:
        """Per example, the input of block ``start`` (``[T_b, d_model]``), without grad."""
        lengths = [len(x) for x in ids]
        h = self.hf.model.embed_tokens(torch.cat(list(ids))[None].to(self.hf.device))  # [1, N, d]
        h = self.run_blocks(h, lengths, 0, self.start)
        return list(h[0].split(lengths))

    def cached_prefix(self, keys: Sequence[Any], ids: Sequence[Tensor]) -> list[Tensor]:
        missing = [i for i, k in enumerate(keys) if k not in self._cache]
        fresh = dict(zip(missing, self.prefix([ids[i] for i in missing]))) if missing else {}
        for i, t in fresh.items():
            size = t.numel() * t.element_size()
            if self._used + size <= self.cache_bytes:
                self._cache[keys[i]] = t
                self._used += size
        return [fresh[i] if i in fresh else self._cache[k] for i, k in enumerate(keys)]

    def warm(self, examples: Sequence[Mapping[str, Any]], chunk: int = 16) -> None:
        """Fill the cache for ``examples`` (keyed by index) in fixed chunks, so the cached
        values do not depend on how batches were drawn (resumed runs see the same numbers)."""
        for lo in range(0, len(examples), chunk):
            keys = list(range(lo, min(lo + chunk, len(examples))))
            if self._used >= self.cache_bytes:
                return
            self.cached_prefix(keys, [torch.as_tensor(examples[k]["input_ids"]) for k in keys])

    def hidden(
        self, batch: Mapping[str, Tensor], keys: Sequence[Any] | None = None
    ) -> tuple[Float[Tensor, "1 N d_model"], list[int]]:
        """Final-norm hidden states of the packed batch with the interventions applied."""
        mask = batch["attention_mask"]
        lengths = [int(x) for x in mask.sum(dim=1)]
        if any(not bool(mask[b, :t].all()) for b, t in enumerate(lengths)):
            raise ValueError("the fast path needs right-padded batches (attention_mask 1...1 0...0)")
        ids = [batch["input_ids"][b, :t] for b, t in enumerate(lengths)]
        states = self.cached_prefix(keys, ids) if keys is not None else self.prefix(ids)
        h = torch.cat(states)[None]  # [1, N, d]
        packed = self._packed_bindings(batch, lengths)
        boundary = [b for b in packed if b.hook == self.boundary]
        for b in boundary:
            h = apply_at_positions(h, b.intervention, b.positions)
        with attach(self.reft_model.hooked, [b for b in packed if b.hook != self.boundary]):
            h = self.run_blocks(h, lengths, self.start, len(self.hf.model.layers))
            h = self.hf.model.norm(h)
        return h, lengths

    def loss(self, batch: Mapping[str, Tensor], keys: Sequence[Any] | None = None) -> Float[Tensor, ""]:
        """The batch's causal-LM loss (equal to ``loss.plain_loss``); ``keys`` index the cache."""
        h, lengths = self.hidden(batch, keys)
        targets = torch.cat([_row_targets(batch["labels"][b, :t]) for b, t in enumerate(lengths)])[None]  # [1, N]
        return scored_ce(self.hf, h, targets)

    def _packed_bindings(self, batch: Mapping[str, Tensor], lengths: Sequence[int]) -> list[Binding]:
        rm = self.reft_model
        per = batch_positions(batch, len(rm.interventions))
        if per is None:
            raise ValueError("the batch has no intervention_locations")
        offsets = torch.tensor([0, *lengths[:-1]]).cumsum(0)  # [batch]
        out = []
        for (key, iv), site, pos in zip(rm.interventions.items(), rm.sites, per):
            valid = pos >= 0
            if bool((pos >= torch.tensor(lengths)[:, None]).any()):
                raise ValueError(f"intervention {key!r}: a position lies beyond its example's length")
            flat = (pos + offsets[:, None])[valid]  # [n_valid]
            out.append(Binding(site.hook, iv, flat[None]))
        return out


def packed_causal_mask(lengths: Sequence[int], dtype: torch.dtype, device: Any) -> Float[Tensor, "1 1 N N"]:
    """Additive mask: query i sees key j iff both are in the same example and j <= i."""
    seg = torch.cat([torch.full((t,), i, device=device) for i, t in enumerate(lengths)])  # [N]
    idx = torch.arange(len(seg), device=device)
    allowed = (seg[:, None] == seg[None, :]) & (idx[None, :] <= idx[:, None])  # [N, N]
    mask = torch.zeros(allowed.shape, dtype=dtype, device=device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)[None, None]


def _row_targets(labels: Int[Tensor, " T"]) -> Int[Tensor, " T"]:
    """Next-token targets of one example: position t predicts labels[t+1]; the last predicts nothing."""
    return torch.cat([labels[1:], labels.new_full((1,), IGNORE_INDEX)])
