"""Exact shortcuts for training interventions on a frozen causal LM: cache, pack, score sparsely.

While the base model is frozen, nothing below the lowest intervened block can change,
so the input of that block (``start``) is computed once per example (no grad) and cached
across epochs. Each step then runs only blocks ``start..L-1``, on the batch *packed* into
one row, and scores only the tokens that have a target:

    h      = concat_b cache[b]                          [1, N, d_model],  N = sum_b T_b
    pos    = concat_b arange(P_b, T_b)                   positions restart per example
    mask   = same example AND pos_k <= pos_q (AND pos_q - pos_k < window on sliding layers)
    loss   = CE(lm_logits(norm(h_L))[scored], targets)  logits only at scored tokens

With ``reuse_prefix`` the keys/values of each example's untouched prefix (the tokens
before its first intervened or scored position: no intervention can reach them) are
cached too, and only the rest of the tokens run: keys = [all prefixes; packed tokens].
That needs blocks ``start..L-1`` frozen as well: a trainable weight there (LoRA, an
unfrozen layer) changes the prefix's keys/values at every step and needs their gradient,
so while one requires grad each step runs every token from the cached block input instead.
Both conditions are checked at every step (``requires_grad`` can change during training).

How the blocks run (the decision, and why). The family's *own decoder forward* runs
(``ArchSpec.decoder``), not a hand-written loop: its rotary or learned positions, embedding
scaling, per-layer attention types (sliding windows, Gemma's soft-capped attention), MoE
routing and attention implementation (SDPA or eager) are the family's code, so one path
serves every family in ``ARCHS``. ``reftlab.models.partial.partial_forward`` makes it run
the cached part only (blocks outside ``lo..hi-1`` skipped, block ``lo`` fed the cached hidden
states, the final norm's input captured), and two things here make it exact:

- the attention mask is an explicit 4-D mask (a dict keyed by layer type where the family
  takes one), built here from each token's example and position, with the family's sliding
  window. transformers 5 can also detect packed rows from restarting ``position_ids``
  (``masking_utils.find_packed_sequence_indices``), but only without a cache: the reused
  prefix keys sit before all packed tokens, a layout no position-id pattern describes, so
  the mask is explicit. The prefix keys/values enter through a minimal cache object whose
  ``update`` records them (first pass) or prepends them (training steps).

Measured on the walkthrough's recipe (SmolLM2, four LoReFTs at ``l1``, batch 10, steps
interleaved), a step through the family's own forward took no longer than through the
former hand-written Llama loop, with the same loss; without the reused prefix it took about
1.7x as long.

The result equals the HF forward of the right-padded batch to float rounding; per family,
``tests/models/test_architectures.py`` checks loss and gradients against the plain path to
1e-5 in float32. ``why_not(reft_model)`` says why a model cannot take this path (then
training uses ``loss.plain_loss``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from ..attach import Binding, ReftLike, apply_at_positions, attach
from ..data.encode import IGNORE_INDEX
from ..models.arch import get_layers, get_module, text_config
from ..models.cache import cache_keyword
from ..models.partial import partial_forward
from ..sites import BLOCK_HOOK
from .loss import batch_positions, scored_ce
from .packing import COLUMNS, Layout, PrefixKV, batch_refusal, unpadded

_DROPOUT_FIELDS = ("attention_dropout", "attn_pdrop", "resid_pdrop", "embd_pdrop", "hidden_dropout", "dropout")


def start_block(hooks: Sequence[str]) -> tuple[int, str | None] | None:
    """The first block that must run, and the boundary hook applied on its cached input.

    ``blocks.L.hook_resid_post`` edits block L's output, so blocks 0..L are unaffected
    and running starts at L+1; every other block site starts at its own block. None if
    a site is not inside a block (e.g. ``hook_embed``).
    """
    start, boundary = None, None
    for hook in hooks:
        m = BLOCK_HOOK.match(hook)
        if not m:
            return None
        layer, part = int(m.group(1)), m.group(2)
        s = layer + 1 if part in ("hook_resid_post", "hook_out") else layer
        if start is None or s < start:
            start = s
    if start is None:
        return None
    for hook in hooks:
        m = BLOCK_HOOK.match(hook)
        if m and int(m.group(1)) == start - 1 and m.group(2) in ("hook_resid_post", "hook_out"):
            boundary = hook
    return start, boundary


def why_not(reft_model: ReftLike) -> str | None:
    """None if the fast path applies to ``reft_model``, else the reason it does not (naming the family)."""
    hooked = reft_model.hooked
    hf, arch = hooked.hf_model, hooked.arch
    family = arch.family
    cfg = text_config(hf)
    impl = getattr(hf.config, "_attn_implementation", "sdpa")
    if impl not in ("sdpa", "eager"):
        return f"{family}: attention implementation {impl!r} (the fast path needs sdpa or eager)"
    if getattr(cfg, "alibi", False):
        return f"{family}: ALiBi positions (config.alibi=True) are built into the model's own attention mask"
    if getattr(cfg, "use_bidirectional_attention", False):
        return f"{family}: bidirectional attention (config.use_bidirectional_attention=True)"
    found = start_block([s.hook for s in reft_model.sites])
    if found is None:
        return f"{family}: an intervention sits outside the transformer blocks"
    start = found[0]
    layers = get_layers(hf, arch)
    frozen_below = [get_module(hf, arch.embed), *list(layers)[:start]]
    if any(p.requires_grad for m in frozen_below for p in m.parameters()):
        return f"{family}: parameters below block {start} are trainable, so their outputs cannot be cached"
    if hf.training and _has_dropout(hf, cfg):
        return (
            f"{family}: the base model is in training mode with dropout, so the steps are random; "
            "put the base model in eval mode (reft_model.model.eval())"
        )
    return None


def _has_dropout(hf: nn.Module, cfg: Any) -> bool:
    if any(isinstance(m, nn.Dropout) and m.p > 0 for m in hf.modules()):
        return True
    return any(isinstance(getattr(cfg, f, None), float) and getattr(cfg, f) > 0 for f in _DROPOUT_FIELDS)


@dataclass(frozen=True)
class _Entry:
    """One example's cache entry: its prefix length P, the input of block ``start`` ``[T, d_model]``,
    and per block from ``start`` on the prefix's keys and values ``[kv_heads, P, head_dim]``."""

    prefix: int
    states: Tensor
    kv: list[tuple[Tensor, Tensor]]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in [self.states, *[x for pair in self.kv for x in pair]])


class FastForward:
    """Cached-prefix, packed, sparse-logit loss for one ``ReftModel`` (see the module docstring).

    ``reuse_prefix``: also cache, per example, the keys/values of the tokens before its
    first intervened (or scored) position at every block from ``start`` on.
    ``cache_bytes`` caps the cache; examples beyond it are recomputed (still no grad).
    Cache keys are example indices (``reftlab.train``) or contents (``content_keys``).
    """

    def __init__(self, reft_model: ReftLike, *, reuse_prefix: bool = True, cache_bytes: int = 2 << 30) -> None:
        reason = why_not(reft_model)
        if reason is not None:
            raise ValueError(f"the fast path does not apply: {reason}")
        self.reft_model = reft_model
        hooked = reft_model.hooked
        self.hf, self.arch = hooked.hf_model, hooked.arch
        self.decoder = get_module(self.hf, self.arch.decoder)
        self.layers = get_layers(self.hf, self.arch)
        found = start_block([s.hook for s in reft_model.sites])
        if found is None:  # why_not said so already; this keeps the types honest
            raise ValueError("the fast path does not apply: an intervention sits outside the transformer blocks")
        self.start, self.boundary = found
        self.n_layers = len(self.layers)
        self.reuse_prefix = reuse_prefix
        self.cache_bytes = cache_bytes
        self._cache: dict[Any, _Entry] = {}
        self._used = 0
        cfg = text_config(self.hf)
        self._window: int | None = getattr(cfg, "sliding_window", None)
        self._layer_types: list[str] = list(getattr(cfg, "layer_types", None) or [])
        self._additive = getattr(self.hf.config, "_attn_implementation", "sdpa") == "eager"
        self._cache_kw = cache_keyword(self.decoder.forward)

    # --- the packed forward -----------------------------------------------------------
    def run_blocks(
        self,
        h: Float[Tensor, "1 N d_model"],
        layout: Layout,
        lo: int,
        hi: int,
        kv: "PrefixKV | None" = None,
    ) -> Float[Tensor, "1 N d_model"]:
        """Run blocks ``lo..hi-1`` of the family's decoder on the packed row ``h`` (the input of
        block ``lo``); returns the output of block ``hi-1`` after the final norm."""
        with partial_forward(self.hf, self.arch, lo, hi, feed=h):
            out = self.decoder(
                inputs_embeds=h,
                attention_mask=self._masks(layout, h.dtype),
                position_ids=layout.q_pos[None],
                use_cache=False,
                **{self._cache_kw: kv},
            )
        return out.last_hidden_state

    def _masks(self, layout: Layout, dtype: torch.dtype) -> Tensor | dict[str, Tensor]:
        """The decoder's ``attention_mask``: one [1, 1, N, K] mask, or one per layer type."""

        def form(allowed: Tensor) -> Tensor:
            if not self._additive:  # SDPA takes a boolean mask, as transformers builds it
                return allowed[None, None]
            zero = torch.zeros((), dtype=dtype, device=allowed.device)
            return torch.where(allowed, zero, torch.finfo(dtype).min)[None, None]

        if self.arch.masks == "single":
            return form(layout.allowed(self._window))
        masks = {"full_attention": form(layout.allowed())}
        if "sliding_attention" in self._layer_types:
            masks["sliding_attention"] = form(layout.allowed(self._window))
        return masks

    @torch.no_grad()
    def _compute(self, ids: Sequence[Tensor], prefixes: Sequence[int], pos: Sequence[Tensor]) -> list[_Entry]:
        """Per example: (prefix length P, input of block ``start`` [T, d], per block >= start the
        prefix's keys/values [kv_heads, P, head_dim])."""
        lengths = [len(x) for x in ids]
        device = self.hf.device
        zeros = [0] * len(lengths)
        layout = Layout.packed(lengths, zeros, device, pos)
        with partial_forward(self.hf, self.arch, 0, self.start) as run:
            self.decoder(
                input_ids=torch.cat(list(ids))[None].to(device),
                attention_mask=self._masks(layout, self.hf.dtype),
                position_ids=layout.q_pos[None],
                use_cache=False,
            )
        assert run.before_norm is not None  # the decoder's final norm always runs
        states = list(run.before_norm[0].split(lengths))  # input of block `start`, per example
        per_layer: list[list[tuple[Tensor, Tensor]]] = [[] for _ in ids]
        if any(prefixes):
            rec = PrefixKV(self.start)
            hp = torch.cat([st[:p] for st, p in zip(states, prefixes)])[None]  # [1, sum P, d]
            prefix_pos = [x[:p] for x, p in zip(pos, prefixes)]
            self.run_blocks(hp, Layout.packed(prefixes, zeros, device, prefix_pos), self.start, self.n_layers, rec)
            for layer_kv in rec.captured:  # ([1, H, sum P, hd], [1, H, sum P, hd]) per block
                ks, vs = layer_kv[0][0].split(prefixes, dim=1), layer_kv[1][0].split(prefixes, dim=1)
                for b in range(len(ids)):
                    per_layer[b].append((ks[b], vs[b]))
        return [_Entry(p, st, kv) for p, st, kv in zip(prefixes, states, per_layer)]

    def _entries(
        self, keys: Sequence[Any] | None, ids: Sequence[Tensor], prefixes: Sequence[int], pos: Sequence[Tensor]
    ) -> list[_Entry]:
        if keys is None:
            return self._compute(ids, prefixes, pos)
        # Without a prefix (P = 0) any cached entry serves: it holds the example's whole block input.
        missing = [
            i for i, k in enumerate(keys) if k not in self._cache or prefixes[i] not in (0, self._cache[k].prefix)
        ]
        fresh = (
            dict(
                zip(
                    missing,
                    self._compute([ids[i] for i in missing], [prefixes[i] for i in missing], [pos[i] for i in missing]),
                )
            )
            if missing
            else {}
        )
        for i, entry in fresh.items():
            size = entry.nbytes
            if keys[i] not in self._cache and self._used + size <= self.cache_bytes:
                self._cache[keys[i]] = entry
                self._used += size
        return [fresh[i] if i in fresh else self._cache[k] for i, k in enumerate(keys)]

    @property
    def full(self) -> bool:
        """Whether the cache has reached ``cache_bytes`` (further examples are recomputed each time)."""
        return self._used >= self.cache_bytes

    def warm(self, examples: Sequence[Mapping[str, Any]], chunk: int = 16, keys: Sequence[Any] | None = None) -> None:
        """Fill the cache for ``examples`` (keyed by index, or by ``keys``) in fixed chunks, so the
        cached values do not depend on how batches were drawn (resumed runs see the same numbers)."""
        keys = list(range(len(examples))) if keys is None else list(keys)
        reuse = self._reuse()
        for lo in range(0, len(examples), chunk):
            if self._used >= self.cache_bytes:
                return
            exs = [unpadded(e) for e in examples[lo : lo + chunk]]
            prefixes = [self._prefix_length(e.locations, e.targets, reuse) for e in exs]
            self._entries(keys[lo : lo + chunk], [e.ids for e in exs], prefixes, [e.pos for e in exs])

    def _reuse(self) -> bool:
        """Whether prefix keys/values may be reused now: they depend on blocks ``start..L-1`` only."""
        upper = self.layers[self.start :]
        return self.reuse_prefix and not any(p.requires_grad for p in upper.parameters())

    def _prefix_length(self, locs: Int[Tensor, "k n"], targets: Int[Tensor, " T"], reuse: bool) -> int:
        """Tokens before the first intervened position and before the first scored target
        (``locs`` and ``targets`` count the example's own tokens, padding left out)."""
        if not reuse:
            return 0
        valid = locs[locs >= 0]
        first_loc = int(valid.min()) if valid.numel() else len(targets)
        scored = (targets != IGNORE_INDEX).nonzero()
        first_scored = int(scored[0]) if len(scored) else len(targets)
        return max(0, min(first_loc, first_scored, len(targets) - 1))

    def hidden(
        self, batch: Mapping[str, Tensor], keys: Sequence[Any] | None = None
    ) -> tuple[Float[Tensor, "1 N d_model"], list[int], list[int], Int[Tensor, "1 N"]]:
        """Final-norm hidden states of the packed non-prefix tokens, interventions applied; also each
        example's length and prefix length, and the packed tokens' next-token targets."""
        reason = batch_refusal(batch)
        if reason is not None:
            raise ValueError(f"the fast path cannot take this batch: {reason}")
        reason = why_not(self.reft_model)  # again: the model may have changed since the cache was built
        if reason is not None:
            raise ValueError(f"the fast path no longer applies: {reason}; train with fast=False")
        reuse = self._reuse()
        exs = [unpadded({k: batch[k][b] for k in COLUMNS}) for b in range(batch["input_ids"].shape[0])]
        lengths = [len(e.ids) for e in exs]
        prefixes = [self._prefix_length(e.locations, e.targets, reuse) for e in exs]
        entries = self._entries(keys, [e.ids for e in exs], prefixes, [e.pos for e in exs])
        rest = [t - p for t, p in zip(lengths, prefixes)]
        h = torch.cat([e.states[p:] for p, e in zip(prefixes, entries)])[None]  # [1, N_rest, d]
        kv = None
        if any(prefixes):  # then every entry's own prefix length is the one asked for
            kv = PrefixKV(
                self.start,
                [
                    (
                        torch.cat([e.kv[i][0] for p, e in zip(prefixes, entries) if p], dim=1)[None],
                        torch.cat([e.kv[i][1] for p, e in zip(prefixes, entries) if p], dim=1)[None],
                    )
                    for i in range(self.n_layers - self.start)
                ],
            )
        packed = self._packed_bindings(torch.stack([e.locations for e in exs]), rest, prefixes)
        for b in packed:
            if b.hook == self.boundary:
                h = apply_at_positions(h, b.intervention, b.positions)
        layout = Layout.packed(rest, prefixes, h.device, [e.pos for e in exs])
        with attach(self.reft_model.hooked, [b for b in packed if b.hook != self.boundary]):
            normed = self.run_blocks(h, layout, self.start, self.n_layers, kv)
        targets = torch.cat([e.targets[p:] for e, p in zip(exs, prefixes)])[None]  # [1, N_rest]
        return normed, lengths, prefixes, targets

    def loss(self, batch: Mapping[str, Tensor], keys: Sequence[Any] | None = None) -> Float[Tensor, ""]:
        """The batch's causal-LM loss (equal to ``loss.plain_loss``); ``keys`` index the cache."""
        h, _, _, targets = self.hidden(batch, keys)
        return scored_ce(self.hf, h, targets.to(h.device))

    def _packed_bindings(
        self, locations: Int[Tensor, "batch k n"], rest: Sequence[int], prefixes: Sequence[int]
    ) -> list[Binding]:
        """Each intervention's ``[batch, n]`` positions as ``[1, batch * n]`` positions in the packed
        row. Empty slots stay -1 in place, so groups of k slots (concatenated-position kinds)
        never pair tokens of different examples; a group with an empty slot is skipped, as in
        the padded forward."""
        rm = self.reft_model
        per = batch_positions({"intervention_locations": locations}, len(rm.interventions))
        if per is None:
            raise ValueError("the batch has no intervention_locations")
        offsets = torch.tensor([0, *rest[:-1]]).cumsum(0) - torch.tensor(prefixes)  # [batch]
        ends = torch.tensor(prefixes) + torch.tensor(rest)
        out = []
        for (key, iv), site, pos in zip(rm.interventions.items(), rm.sites, per):
            arity = iv.arity
            if pos.shape[1] % arity:
                raise ValueError(
                    f"intervention {key!r} ({iv.kind}) reads groups of {arity} positions but got "
                    f"{pos.shape[1]} per example; give a multiple of {arity} (e.g. 'l{arity}')"
                )
            if bool((pos >= ends[:, None]).any()):
                raise ValueError(f"intervention {key!r}: a position lies beyond its example's length")
            flat = torch.where(pos >= 0, pos + offsets[:, None], -1).reshape(1, -1)  # [1, batch * n]
            out.append(Binding(site.hook, iv, flat))
        return out
