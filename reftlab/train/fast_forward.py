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

import inspect
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ..attach import Binding, ReftLike, apply_at_positions, attach
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


def why_not(reft_model: ReftLike) -> str | None:
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

    ``reuse_prefix``: also cache, per example, the keys/values of the tokens before its
    first intervened (or scored) position at every block from ``start`` on; those tokens
    are unaffected by every intervention, so each step only runs the rest of the tokens.
    ``cache_bytes`` caps the cache; examples beyond it are recomputed (still no grad).
    """

    def __init__(self, reft_model: ReftLike, *, reuse_prefix: bool = True, cache_bytes: int = 2 << 30) -> None:
        reason = why_not(reft_model)
        if reason is not None:
            raise ValueError(f"the fast path does not apply: {reason}")
        self.reft_model = reft_model
        self.hf = reft_model.hooked.hf_model
        self.start, self.boundary = start_block([s.hook for s in reft_model.sites])  # type: ignore[misc]
        self.n_layers = len(self.hf.model.layers)
        self.reuse_prefix = reuse_prefix
        self.cache_bytes = cache_bytes
        self._cache: dict[Any, tuple[int, Tensor, list[tuple[Tensor, Tensor]]]] = {}
        self._used = 0
        params = inspect.signature(type(self.hf.model.layers[0]).forward).parameters
        self._cache_kwarg = "cache" if "cache" in params else "past_key_values"

    # --- the packed forward -----------------------------------------------------------
    def run_blocks(
        self,
        h: Float[Tensor, "1 N d_model"],
        position_ids: Int[Tensor, "1 N"],
        mask: Float[Tensor, "1 1 N K"],
        lo: int,
        hi: int,
        kv: "_PrefixKV | None" = None,
    ) -> Float[Tensor, "1 N d_model"]:
        """Run blocks ``lo..hi-1`` on a packed row; ``kv`` records or prepends keys/values."""
        if lo >= hi:
            return h
        rotary = self.hf.model.rotary_emb(h, position_ids)
        extra = {self._cache_kwarg: kv} if kv is not None else {}
        for layer in self.hf.model.layers[lo:hi]:
            out = layer(h, attention_mask=mask, position_ids=position_ids, position_embeddings=rotary, **extra)
            h = out[0] if isinstance(out, tuple) else out
        return h

    @torch.no_grad()
    def _compute(
        self, ids: Sequence[Tensor], prefixes: Sequence[int]
    ) -> list[tuple[int, Tensor, list[tuple[Tensor, Tensor]]]]:
        """Per example: (prefix length P, input of block ``start`` [T, d], per block >= start the
        prefix's keys/values [kv_heads, P, head_dim])."""
        lengths = [len(x) for x in ids]
        h = self.hf.model.embed_tokens(torch.cat(list(ids))[None].to(self.hf.device))  # [1, N, d]
        h = self.run_blocks(
            h,
            _positions(lengths, [0] * len(lengths)),
            packed_causal_mask(lengths, [0] * len(lengths), h.dtype, h.device),
            0,
            self.start,
        )
        states = list(h[0].split(lengths))
        per_layer: list[list[tuple[Tensor, Tensor]]] = [[] for _ in ids]
        if any(prefixes):
            rec = _PrefixKV(self.start)
            hp = torch.cat([st[:p] for st, p in zip(states, prefixes)])[None]  # [1, sum P, d]
            zeros = [0] * len(prefixes)
            self.run_blocks(
                hp,
                _positions(prefixes, zeros),
                packed_causal_mask(prefixes, zeros, hp.dtype, hp.device),
                self.start,
                self.n_layers,
                rec,
            )
            for layer_kv in rec.captured:  # ([1, H, sum P, hd], [1, H, sum P, hd]) per block
                ks, vs = layer_kv[0][0].split(prefixes, dim=1), layer_kv[1][0].split(prefixes, dim=1)
                for b in range(len(ids)):
                    per_layer[b].append((ks[b], vs[b]))
        return [(p, st, kv) for p, st, kv in zip(prefixes, states, per_layer)]

    def _entries(self, keys: Sequence[Any] | None, ids: Sequence[Tensor], prefixes: Sequence[int]) -> list[Any]:
        if keys is None:
            return self._compute(ids, prefixes)
        missing = [i for i, k in enumerate(keys) if k not in self._cache or self._cache[k][0] != prefixes[i]]
        fresh = (
            dict(zip(missing, self._compute([ids[i] for i in missing], [prefixes[i] for i in missing])))
            if missing
            else {}
        )
        for i, entry in fresh.items():
            size = sum(t.numel() * t.element_size() for t in [entry[1], *[x for kv in entry[2] for x in kv]])
            if keys[i] not in self._cache and self._used + size <= self.cache_bytes:
                self._cache[keys[i]] = entry
                self._used += size
        return [fresh[i] if i in fresh else self._cache[k] for i, k in enumerate(keys)]

    def warm(self, examples: Sequence[Mapping[str, Any]], chunk: int = 16) -> None:
        """Fill the cache for ``examples`` (keyed by index) in fixed chunks, so the cached
        values do not depend on how batches were drawn (resumed runs see the same numbers)."""
        for lo in range(0, len(examples), chunk):
            if self._used >= self.cache_bytes:
                return
            keys = list(range(lo, min(lo + chunk, len(examples))))
            exs = [examples[k] for k in keys]
            ids = [torch.as_tensor(e["input_ids"]) for e in exs]
            prefixes = [
                self._prefix_length(torch.as_tensor(e["intervention_locations"]), torch.as_tensor(e["labels"]))
                for e in exs
            ]
            self._entries(keys, ids, prefixes)

    def _prefix_length(self, locs: Int[Tensor, "k n"], labels: Int[Tensor, " T"]) -> int:
        """Tokens before the first intervened position and before the first scored target."""
        if not self.reuse_prefix:
            return 0
        valid = locs[locs >= 0]
        first_loc = int(valid.min()) if valid.numel() else len(labels)
        scored = (labels[1:] != IGNORE_INDEX).nonzero()
        first_scored = int(scored[0]) if len(scored) else len(labels)
        return max(0, min(first_loc, first_scored, len(labels) - 1))

    def hidden(
        self, batch: Mapping[str, Tensor], keys: Sequence[Any] | None = None
    ) -> tuple[Float[Tensor, "1 N d_model"], list[int], list[int]]:
        """Final-norm hidden states of the packed non-prefix tokens, interventions applied;
        also each example's length and prefix length."""
        mask = batch["attention_mask"]
        lengths = [int(x) for x in mask.sum(dim=1)]
        if any(not bool(mask[b, :t].all()) for b, t in enumerate(lengths)):
            raise ValueError("the fast path needs right-padded batches (attention_mask 1...1 0...0)")
        ids = [batch["input_ids"][b, :t] for b, t in enumerate(lengths)]
        locs = torch.as_tensor(batch["intervention_locations"])
        prefixes = [self._prefix_length(locs[b], batch["labels"][b, :t]) for b, t in enumerate(lengths)]
        entries = self._entries(keys, ids, prefixes)
        rest = [t - p for t, p in zip(lengths, prefixes)]
        h = torch.cat([st[p:] for p, st, _ in entries])[None]  # [1, N_rest, d]
        kv = None
        if any(prefixes):
            kv = _PrefixKV(
                self.start,
                [
                    (
                        torch.cat([e[2][i][0] for e in entries if e[0]], dim=1)[None],
                        torch.cat([e[2][i][1] for e in entries if e[0]], dim=1)[None],
                    )
                    for i in range(self.n_layers - self.start)
                ],
            )
        attn = packed_causal_mask(rest, prefixes, h.dtype, h.device)  # [1, 1, N_rest, sum P + N_rest]
        packed = self._packed_bindings(batch, rest, prefixes)
        for b in packed:
            if b.hook == self.boundary:
                h = apply_at_positions(h, b.intervention, b.positions)
        with attach(self.reft_model.hooked, [b for b in packed if b.hook != self.boundary]):
            h = self.run_blocks(h, _positions(rest, prefixes), attn, self.start, self.n_layers, kv)
            h = self.hf.model.norm(h)
        return h, lengths, prefixes

    def loss(self, batch: Mapping[str, Tensor], keys: Sequence[Any] | None = None) -> Float[Tensor, ""]:
        """The batch's causal-LM loss (equal to ``loss.plain_loss``); ``keys`` index the cache."""
        h, lengths, prefixes = self.hidden(batch, keys)
        targets = torch.cat(
            [_row_targets(batch["labels"][b, :t])[p:] for b, (t, p) in enumerate(zip(lengths, prefixes))]
        )[None]  # [1, N_rest]
        return scored_ce(self.hf, h, targets)

    def _packed_bindings(
        self, batch: Mapping[str, Tensor], rest: Sequence[int], prefixes: Sequence[int]
    ) -> list[Binding]:
        rm = self.reft_model
        per = batch_positions(batch, len(rm.interventions))
        if per is None:
            raise ValueError("the batch has no intervention_locations")
        offsets = torch.tensor([0, *rest[:-1]]).cumsum(0) - torch.tensor(prefixes)  # [batch]
        ends = torch.tensor(prefixes) + torch.tensor(rest)
        out = []
        for (key, iv), site, pos in zip(rm.interventions.items(), rm.sites, per):
            valid = pos >= 0
            if bool((pos >= ends[:, None]).any()):
                raise ValueError(f"intervention {key!r}: a position lies beyond its example's length")
            flat = (pos + offsets[:, None])[valid]  # [n_valid]
            out.append(Binding(site.hook, iv, flat[None]))
        return out


class _PrefixKV:
    """A duck-typed HF cache for one packed call: records each block's keys/values, or
    prepends the cached prefix keys/values (``[1, kv_heads, P, head_dim]``) to the new ones."""

    def __init__(self, first_layer: int, prefix: list[tuple[Tensor, Tensor]] | None = None) -> None:
        self.first_layer, self.prefix = first_layer, prefix
        self.captured: list[tuple[Tensor, Tensor]] = []

    def update(self, key: Tensor, value: Tensor, layer_idx: int, *args: Any, **kwargs: Any) -> tuple[Tensor, Tensor]:
        if self.prefix is None:
            self.captured.append((key, value))
            return key, value
        pk, pv = self.prefix[layer_idx - self.first_layer]
        return torch.cat([pk, key], dim=2), torch.cat([pv, value], dim=2)


def _positions(rest: Sequence[int], prefixes: Sequence[int]) -> Int[Tensor, "1 N"]:
    """Rotary positions of the packed tokens: example b's run from prefixes[b] on."""
    return torch.cat([torch.arange(p, p + t) for t, p in zip(rest, prefixes)])[None]


def packed_causal_mask(
    lengths: Sequence[int], prefixes: Sequence[int], dtype: torch.dtype, device: Any
) -> Float[Tensor, "1 1 N K"]:
    """Additive mask over keys ``[all prefixes; packed tokens]`` (K = sum P + N): a token of
    example b sees b's whole cached prefix and b's packed tokens up to itself.

    >>> (packed_causal_mask([2, 1], [0, 1], torch.float32, "cpu")[0, 0] == 0).int().tolist()
    [[0, 1, 0, 0], [0, 1, 1, 0], [1, 0, 0, 1]]
    """
    seg_q = torch.cat([torch.full((t,), i, device=device) for i, t in enumerate(lengths)])  # [N]
    seg_p = torch.cat(
        [torch.full((p,), i, device=device) for i, p in enumerate(prefixes)]
        + [torch.empty(0, dtype=seg_q.dtype, device=device)]
    )  # [sum P]
    idx = torch.arange(len(seg_q), device=device)
    own = (seg_q[:, None] == seg_q[None, :]) & (idx[None, :] <= idx[:, None])  # [N, N]
    allowed = torch.cat([seg_q[:, None] == seg_p[None, :], own], dim=1)  # [N, sum P + N]
    mask = torch.zeros(allowed.shape, dtype=dtype, device=device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)[None, None]


def _row_targets(labels: Int[Tensor, " T"]) -> Int[Tensor, " T"]:
    """Next-token targets of one example: position t predicts labels[t+1]; the last predicts nothing."""
    return torch.cat([labels[1:], labels.new_full((1,), IGNORE_INDEX)])
