"""The forwards of continuous batching: prefill the joining prompts, decode one token per running row.

``Runner`` owns the model side of ``reftlab.serve.engine``: it left-pads the joining prompts into
one prefill forward in which each row gets its own ReFTs (``reftlab.route``'s ``rows`` masks,
positions resolved per prompt), runs one decode step over the running ``Batch`` (input
``[rows, 1]``; the mask and position ids count each row's own tokens, so a row's positions do not
depend on who else is in the batch; only ReFTs at ``positions="all"`` are attached, for their
rows), and samples each row's next token from its own generator. ``Batch`` is the running rows
and their right-aligned KV cache (``reftlab.serve.kv`` does the surgery).
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ..attach import Binding, attach
from ..models.cache import cache_keyword
from ..models.hooked import HookedModel
from ..reft_model import ReftModel
from ..routing import Routed
from . import kv
from .request import Request
from .text import TextStream


class Batch:
    """The running batch: rows, their right-aligned KV cache, and what each row still needs."""

    def __init__(self) -> None:
        self.reqs: list[Request] = []
        self.cache: Any = None
        self.lengths = torch.zeros(0, dtype=torch.long)  # [rows] tokens of each row in the cache
        self.next_ids = torch.zeros(0, dtype=torch.long)  # [rows] sampled, not yet in the cache

    @property
    def width(self) -> int:
        return kv.width(self.cache)

    def join(self, joining: list[Request], cache: Any, lengths: Tensor, first: Tensor) -> None:
        """Add prefilled rows: their cache, prompt lengths and first sampled tokens."""
        if not self.reqs:
            self.cache, self.lengths, self.next_ids, self.reqs = cache, lengths, first, list(joining)
            return
        kv.join_rows(self.cache, cache)  # a failure here leaves the running batch intact
        self.lengths = torch.cat([self.lengths, lengths])
        self.next_ids = torch.cat([self.next_ids, first])
        self.reqs.extend(joining)

    def keep(self, rows: list[int]) -> None:
        """Keep only ``rows`` (not empty) and trim cache columns none of them uses."""
        idx = torch.tensor(rows)
        kv.keep_rows(self.cache, rows, int(self.lengths[idx].max()))
        self.reqs = [self.reqs[i] for i in rows]
        self.lengths, self.next_ids = self.lengths[idx], self.next_ids[idx]


class Runner:
    """Prefill, decode and sample for one ``HookedModel`` and the named ReftModels on it."""

    def __init__(self, model: HookedModel, refts: Mapping[str, ReftModel]) -> None:
        tok = model.tokenizer
        if tok is None:
            raise ValueError("serving needs the model's tokenizer; load the model with reftlab.load_model")
        self.hooked, self.tokenizer = model, tok
        # HF fast tokenizers are not safe to use from two threads at once: the HTTP side encodes,
        # the engine decodes; both hold this lock.
        self.tokenizer_lock = threading.Lock()
        self.routed = Routed(refts, model) if refts else None
        for name, reft in refts.items():
            if reft.hooked.model is not model.model:
                raise ValueError(f"ReFT {name!r} is attached to another base model; load it onto the served one")
            for site in reft.sites:
                if site.positions is None:
                    raise ValueError(
                        f"ReFT {name!r} has a site at {site.hook} without positions; serving needs each site's "
                        "positions: give them with ReftModel.with_positions (reftlab serve --positions), e.g. 'l1'"
                    )
        self._every = {n for n, r in refts.items() if any(s.positions and s.positions.all for s in r.sites)}
        self.stop_ids = stop_ids(model, tok)
        kv.new_cache(model)  # refuse a model whose cache the engine cannot edit, now
        params = inspect.signature(model.hf_model.forward).parameters
        self._cache_kw = cache_keyword(model.hf_model.forward)
        self._keep_kw = {"logits_to_keep": 1} if "logits_to_keep" in params else {}

    def prefill(self, joining: Sequence[Request]) -> tuple[Float[Tensor, "rows vocab"], Any, Int[Tensor, " rows"]]:
        """One forward over the left-padded prompts: (last logits, their KV cache, prompt lengths)."""
        width = max(len(r.prompt_ids) for r in joining)
        pad = self.stop_ids[0]
        ids = torch.tensor([[pad] * (width - len(r.prompt_ids)) + r.prompt_ids for r in joining])  # [n, width]
        mask = torch.tensor([[0] * (width - len(r.prompt_ids)) + [1] * len(r.prompt_ids) for r in joining])
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # [n, width]: each prompt counts from 0
        cache = kv.new_cache(self.hooked)
        routes = [r.route or None for r in joining]
        bindings = self.routed.bindings(routes, mask.to(self.hooked.device)) if self.routed else []
        logits = self.forward(ids, mask, positions, cache, bindings)  # [n, vocab]
        return logits, cache, mask.sum(-1)

    def decode(self, b: Batch) -> Float[Tensor, "rows vocab"]:
        """One forward of every running row's pending token through the cache; the next logits."""
        width = b.width
        cols = torch.arange(width + 1)
        mask = (cols[None, :] >= width - b.lengths[:, None]).long()  # [rows, width + 1], own tokens + the new one
        positions = b.lengths[:, None].clone()  # [rows, 1]
        bindings = []
        routes = [r.route or None for r in b.reqs]
        if self.routed is not None and any(set(r or ()) & self._every for r in routes):
            # only sites at positions="all" touch generated tokens (prompt edits reach them via the cache)
            every = self.routed.bindings(routes, mask.to(self.hooked.device))
            bindings = [x for x in every if x.positions is None]
        return self.forward(b.next_ids[:, None], mask, positions, b.cache, bindings)

    def forward(
        self, ids: Int[Tensor, "rows pos"], mask: Tensor, positions: Tensor, cache: Any, bindings: list[Binding]
    ) -> Float[Tensor, "rows vocab"]:
        dev = self.hooked.device
        kwargs = {
            "input_ids": ids.to(dev),
            "attention_mask": mask.to(dev),
            "position_ids": positions.to(dev),
            self._cache_kw: cache,
            "use_cache": True,
            **self._keep_kw,
        }
        with attach(self.hooked, bindings):
            out = self.hooked.model(**kwargs)
        return out.logits[:, -1, :].float().cpu()  # [rows, vocab]

    def start(self, reqs: Sequence[Request]) -> None:
        """Give each joining request its text stream and, if seeded, its own generator."""
        for req in reqs:
            req.stream = TextStream(self.tokenizer, req.sampling.stop, self.tokenizer_lock)
            if req.sampling.seed is not None:
                req.generator = torch.Generator().manual_seed(req.sampling.seed)

    @staticmethod
    def sample(logits: Float[Tensor, "rows vocab"], reqs: Sequence[Request]) -> Int[Tensor, " rows"]:
        out = logits.argmax(-1)  # [rows]: greedy, as HF generate (first index on ties)
        for i, req in enumerate(reqs):
            s = req.sampling
            if s.temperature > 0:
                out[i] = sample_row(logits[i], s.temperature, s.top_p, req.generator)
        return out


def sample_row(
    logits: Float[Tensor, " vocab"], temperature: float, top_p: float, generator: torch.Generator | None
) -> int:
    """One token from ``softmax(logits / temperature)`` restricted to the top-p nucleus."""
    probs = torch.softmax(logits.double() / temperature, dim=-1)  # [vocab]
    if top_p < 1.0:
        sorted_p, order = probs.sort(descending=True)
        outside = sorted_p.cumsum(0) - sorted_p >= top_p  # mass before a token already reaches top_p
        sorted_p = sorted_p.masked_fill(outside, 0.0)
        probs = torch.zeros_like(probs).scatter(0, order, sorted_p)
    return int(torch.multinomial(probs, 1, generator=generator))


def stop_ids(model: HookedModel, tok: Any) -> list[int]:
    """Token ids that end a request, as ``reftlab.generate`` cuts: the generation config's eos,
    the tokenizer's eos, and the pad token (first: also used to pad prompts)."""
    cfg = getattr(model.hf_model, "generation_config", None)
    return stop_ids_of(getattr(cfg, "eos_token_id", None), tok)


def stop_ids_of(eos: int | list[int] | None, tok: Any) -> list[int]:
    """``stop_ids`` from a generation config's ``eos_token_id`` and the tokenizer."""
    ids = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    out = [pad] if pad is not None else []
    out += [i for i in [*ids, tok.eos_token_id] if i is not None and i not in out]
    if not out:
        raise ValueError("the tokenizer has no eos or pad token; set tokenizer.eos_token before serving")
    return [int(i) for i in out]
