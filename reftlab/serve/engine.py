"""Continuous batching over one base model, each request steered by its own ReFTs.

One engine thread owns the model. Each iteration it

1. **admits** waiting requests while the running batch has room (``max_batch`` rows):
   their prompts are left-padded into one *prefill* forward in which each row gets its
   own ReFTs (``reftlab.route``'s ``rows`` masks, positions resolved per prompt), and
   the first token of each is sampled;
2. **merges** their KV cache into the running batch: every row's cache is right-aligned
   (left padding), so joining is a left-pad of the narrower cache plus a concatenation
   along the batch axis, with no recomputation;
3. runs one **decode** step for every running row: input ``[rows, 1]``, the attention mask
   marks each row's own tokens, position ids count each row's own tokens (so a row's
   positions do not depend on who else is in the batch), and only ReFTs whose sites act at
   ``positions="all"`` are attached (for their rows); prompt-position ReFTs reach the
   generated tokens through the cache, as in ``reftlab.generate``;
4. lets finished rows (eos, a stop string, ``max_tokens``, a cancelled client) **leave**:
   their rows are dropped from the cache and the left columns nobody needs are trimmed.

Hence greedy output of a request equals ``reftlab.generate`` of the same prompt and ReFT
alone, token for token, whatever else is in the batch: same prompt ids, same edited
positions, same RoPE positions, padding masked (up to floating-point summation order).

Why not transformers' own continuous batching (``ContinuousBatchingManager``)? Its batches
are packed token streams over a paged cache (``[1, total_tokens]``, ``cu_seq_lens``), so a
per-request intervention would need each step's packing layout from inside the manager,
and its attention path differs from the ``DynamicCache`` + SDPA path that ``reftlab.generate``
uses. ``docs/serving.md`` gives the comparison that ``benchmarks/serve.py`` measures.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from ..attach import attach
from ..models.hooked import HookedModel
from ..models.partial import cache_keyword
from ..reft_model import ReftModel
from ..routing import Routed
from .text import TextStream

log = logging.getLogger("reftlab.serve")


@dataclass(frozen=True, kw_only=True)
class Sampling:
    """How one request decodes. ``temperature == 0``: greedy (argmax); else softmax sampling
    from ``logits / temperature`` restricted to the top-p nucleus, from a generator seeded with
    ``seed`` (a request's own stream of randomness, whatever else is in the batch)."""

    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens={self.max_tokens} must be >= 1")
        if not self.temperature >= 0.0:
            raise ValueError(f"temperature={self.temperature} must be >= 0")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p={self.top_p} must be in (0, 1]")


@dataclass(frozen=True)
class Delta:
    """New text of a request (may be empty when a token only completes a character later)."""

    text: str


@dataclass(frozen=True)
class Finished:
    """A request is done: ``reason`` is "stop" (eos or a stop string), "length", "cancelled" or "error"."""

    reason: str
    text: str
    prompt_tokens: int
    completion_tokens: int
    message: str = ""


Event = Delta | Finished


@dataclass(eq=False)
class Request:
    """One generation: prompt ids, the ReFTs to apply (names; empty = the base), sampling, and a
    ``sink`` called from the engine thread with every ``Delta`` and the final ``Finished``."""

    prompt_ids: list[int]
    route: tuple[str, ...]
    sampling: Sampling
    sink: Callable[[Event], None]
    id: str = field(default_factory=lambda: f"req-{next(_ids)}")
    cancelled: bool = False
    generated: list[int] = field(default_factory=list)
    stream: TextStream | None = None
    generator: torch.Generator | None = None


_ids: Iterator[int] = itertools.count()


@dataclass
class Stats:
    """Counters shown on ``/health``: ``mixed_forwards`` counts forwards whose rows used more
    than one route (base or a ReFT set), the evidence that requests for different ReFTs share
    forwards."""

    forwards: int = 0
    prefill_forwards: int = 0
    decode_forwards: int = 0
    mixed_forwards: int = 0
    max_rows: int = 0
    max_routes: int = 0
    tokens_generated: int = 0
    requests_finished: int = 0
    requests_cancelled: int = 0
    requests_failed: int = 0
    running: int = 0
    waiting: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


class _Running:
    """The running batch: rows, their right-aligned KV cache, and what each row still needs."""

    def __init__(self) -> None:
        self.reqs: list[Request] = []
        self.cache: Any = None
        self.lengths = torch.zeros(0, dtype=torch.long)  # [rows] tokens of each row in the cache
        self.next_ids = torch.zeros(0, dtype=torch.long)  # [rows] sampled, not yet in the cache

    @property
    def width(self) -> int:
        return 0 if self.cache is None else int(self.cache.get_seq_length())


class Engine:
    """Continuous batching for one ``HookedModel`` and named ReftModels on it (see the module).

    ``add(request)`` queues a request (any thread); ``step()`` runs one iteration (admit,
    decode, retire) and returns whether it did anything; ``start()`` runs steps on a thread.

    >>> import reftlab
    >>> hooked = reftlab.load_model(reftlab.tiny_llama(), reftlab.tiny_tokenizer())
    >>> engine = Engine(hooked, {})
    >>> done = []
    >>> req = Request([72, 105], (), Sampling(max_tokens=3), done.append)
    >>> engine.add(req)
    >>> while engine.step(): pass
    >>> done[-1].reason, done[-1].completion_tokens
    ('length', 3)
    """

    def __init__(self, model: HookedModel, refts: Mapping[str, ReftModel], *, max_batch: int = 16) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch={max_batch} must be >= 1")
        tok = model.tokenizer
        if tok is None:
            raise ValueError("serving needs the model's tokenizer; load the model with reftlab.load_model")
        self.hooked, self.tokenizer, self.max_batch = model, tok, max_batch
        # HF fast tokenizers are not safe to use from two threads at once: the HTTP side encodes,
        # this engine decodes; both hold this lock.
        self.tokenizer_lock = threading.Lock()
        self.routed = Routed(refts, model) if refts else None
        self.refts = dict(refts)
        for name, reft in self.refts.items():
            if reft.hooked.model is not model.model:
                raise ValueError(f"ReFT {name!r} is attached to another base model; load it onto the served one")
            for site in reft.sites:
                if site.positions is None:
                    raise ValueError(
                        f"ReFT {name!r} has a site at {site.hook} without positions; serving needs each site's "
                        "positions: give them with ReftModel.with_positions (reftlab serve --positions), e.g. 'l1'"
                    )
        self._every = {n for n, r in self.refts.items() if any(s.positions and s.positions.all for s in r.sites)}
        self.stop_ids = _stop_ids(model, tok)
        self._cache_cls, self._cache_kw, self._keep_kw = _forward_kwargs(model)
        self.stats = Stats()
        self._incoming: deque[Request] = deque()
        self._waiting: deque[Request] = deque()
        self._batch = _Running()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False

    # --- any thread ------------------------------------------------------------------
    def add(self, request: Request) -> None:
        unknown = [r for r in request.route if r not in self.refts]
        if unknown:
            raise ValueError(f"unknown ReFT {unknown[0]!r}; served: {list(self.refts)}")
        with self._cond:
            self._incoming.append(request)
            self._cond.notify()

    def cancel(self, request: Request) -> None:
        """Stop ``request`` at the next step (no-op once it finished); its row is freed."""
        with self._cond:
            request.cancelled = True
            self._cond.notify()

    def start(self) -> Engine:
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._loop, name="reftlab-serve-engine", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not (self._stopping or self._incoming or self._waiting or self._batch.reqs):
                    self._cond.wait()
                if self._stopping:
                    break
            try:
                self.step()
            except Exception as e:  # a bug outside a forward: fail what is in flight, keep the thread alive
                log.exception("engine step failed")
                stuck, self._batch = [*self._waiting, *self._batch.reqs], _Running()
                self._waiting.clear()
                for req in stuck:
                    self._finish(req, "error", message=f"{type(e).__name__}: {e}")
        for req in [*self._incoming, *self._waiting, *self._batch.reqs]:
            self._finish(req, "cancelled", message="the server is shutting down")

    # --- the engine thread ---------------------------------------------------------------
    @torch.inference_mode()
    def step(self) -> bool:
        """One iteration: admit what fits, decode every running row once, retire the finished."""
        with self._cond:
            self._waiting.extend(self._incoming)
            self._incoming.clear()
        for req in [r for r in self._waiting if r.cancelled]:
            self._waiting.remove(req)
            self._finish(req, "cancelled")
        self._retire()
        room = self.max_batch - len(self._batch.reqs)
        joining = [self._waiting.popleft() for _ in range(min(room, len(self._waiting)))]
        did = bool(joining or self._batch.reqs)
        if joining:
            self._guarded(joining, lambda: self._prefill(joining), reset=False)
            self._retire()
        if self._batch.reqs:
            self._guarded(list(self._batch.reqs), self._decode, reset=True)
            self._retire()
        self.stats.running, self.stats.waiting = len(self._batch.reqs), len(self._waiting) + len(self._incoming)
        return did

    def _guarded(self, reqs: list[Request], fn: Callable[[], None], *, reset: bool) -> None:
        """Run ``fn``; if it raises, fail ``reqs`` (a failed prefill leaves the running batch as it
        was; a failed decode step drops the batch) and keep serving."""
        try:
            fn()
        except Exception as e:
            log.exception("forward failed")
            if reset:
                self._batch = _Running()
            for req in reqs:
                self._finish(req, "error", message=f"{type(e).__name__}: {e}")

    def _prefill(self, joining: list[Request]) -> None:
        width = max(len(r.prompt_ids) for r in joining)
        pad = self.stop_ids[0]
        ids = torch.tensor([[pad] * (width - len(r.prompt_ids)) + r.prompt_ids for r in joining])  # [n, width]
        mask = torch.tensor([[0] * (width - len(r.prompt_ids)) + [1] * len(r.prompt_ids) for r in joining])
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # [n, width]: each prompt counts from 0
        cache = self._cache_cls(config=self.hooked.hf_model.config)
        routes = [r.route or None for r in joining]
        bindings = self.routed.bindings(routes, mask.to(self.hooked.device)) if self.routed else []
        logits = self._forward(ids, mask, positions, cache, bindings)  # [n, vocab]
        self._count(joining, prefill=True)
        for req in joining:
            req.stream = TextStream(self.tokenizer, req.sampling.stop, self.tokenizer_lock)
            if req.sampling.seed is not None:
                req.generator = torch.Generator().manual_seed(req.sampling.seed)
        first = self._sample(logits, joining)
        lengths = mask.sum(-1)
        self._merge(joining, cache, lengths, first)
        self._accept(joining, first)

    def _decode(self) -> None:
        b = self._batch
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
        logits = self._forward(b.next_ids[:, None], mask, positions, b.cache, bindings)
        self._count(b.reqs, prefill=False)
        b.lengths = b.lengths + 1
        nxt = self._sample(logits, b.reqs)
        b.next_ids = nxt
        self._accept(b.reqs, nxt)

    def _forward(
        self, ids: Int[Tensor, "rows pos"], mask: Tensor, positions: Tensor, cache: Any, bindings: list
    ) -> Tensor:
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

    def _merge(self, joining: list[Request], cache: Any, lengths: Tensor, first: Tensor) -> None:
        b = self._batch
        if not b.reqs:
            b.cache, b.lengths, b.next_ids, b.reqs = cache, lengths, first, list(joining)
            return
        width = max(b.width, int(cache.get_seq_length()))
        merged = [  # [rows, kv_heads, pos, head_dim]: right-align both, stack the rows
            (
                torch.cat([_left_pad(o.keys, width), _left_pad(n.keys, width)]),
                torch.cat([_left_pad(o.values, width), _left_pad(n.values, width)]),
            )
            for o, n in zip(b.cache.layers, cache.layers)
        ]  # built in full before anything changes: a failure here leaves the running batch intact
        for layer, (keys, values) in zip(b.cache.layers, merged):
            layer.keys, layer.values = keys, values
        b.lengths = torch.cat([b.lengths, lengths])
        b.next_ids = torch.cat([b.next_ids, first])
        b.reqs.extend(joining)

    def _retire(self) -> None:
        """Drop finished rows from the batch and trim cache columns no row still uses."""
        b = self._batch
        keep = [i for i, r in enumerate(b.reqs) if not (r.cancelled or _done(r))]
        for r in b.reqs:
            if r.cancelled and not _done(r):
                self._finish(r, "cancelled")
        if len(keep) == len(b.reqs):
            return
        if not keep:
            self._batch = _Running()
            return
        idx = torch.tensor(keep)
        trim = b.width - int(b.lengths[idx].max())
        for layer in b.cache.layers:
            layer.keys = layer.keys[idx.to(layer.keys.device), :, trim:]
            layer.values = layer.values[idx.to(layer.values.device), :, trim:]
        b.reqs = [b.reqs[i] for i in keep]
        b.lengths, b.next_ids = b.lengths[idx], b.next_ids[idx]

    def _sample(self, logits: Tensor, reqs: Sequence[Request]) -> Tensor:
        out = logits.argmax(-1)  # [rows]: greedy, as HF generate (first index on ties)
        for i, req in enumerate(reqs):
            s = req.sampling
            if s.temperature > 0:
                out[i] = _sample_row(logits[i], s.temperature, s.top_p, req.generator)
        return out

    def _accept(self, reqs: Sequence[Request], tokens: Tensor) -> None:
        for req, tok in zip(reqs, tokens.tolist()):
            if _done(req) or req.cancelled:
                continue
            stream = req.stream
            assert stream is not None
            if tok in self.stop_ids:
                stream.finish("stop")
            else:
                req.generated.append(tok)
                self.stats.tokens_generated += 1
                text = stream.push(req.generated)
                if text:
                    _emit(req, Delta(text))
                if not stream.done and len(req.generated) >= req.sampling.max_tokens:
                    stream.finish("length")
            if stream.reason is not None:  # stream.done
                self._finish(req, stream.reason)

    def _finish(self, req: Request, reason: str, message: str = "") -> None:
        if req.stream is not None and req.stream.reported:
            return
        if req.stream is None:
            req.stream = TextStream(self.tokenizer, req.sampling.stop, self.tokenizer_lock)
        if not req.stream.done:
            req.stream.finish(reason)
        req.stream.reported = True
        tail = req.stream.finalize(req.generated, complete=reason in ("stop", "length"))
        if tail:
            _emit(req, Delta(tail))
        counter = {"cancelled": "requests_cancelled", "error": "requests_failed"}.get(reason, "requests_finished")
        setattr(self.stats, counter, getattr(self.stats, counter) + 1)
        _emit(req, Finished(reason, req.stream.text, len(req.prompt_ids), len(req.generated), message))

    def _count(self, reqs: Sequence[Request], *, prefill: bool) -> None:
        s = self.stats
        routes = {r.route for r in reqs}
        s.forwards += 1
        s.prefill_forwards += prefill
        s.decode_forwards += not prefill
        s.mixed_forwards += len(routes) > 1
        s.max_rows, s.max_routes = max(s.max_rows, len(reqs)), max(s.max_routes, len(routes))


def _done(req: Request) -> bool:
    return req.stream is not None and req.stream.done


def _emit(req: Request, event: Event) -> None:
    try:
        req.sink(event)
    except Exception:  # a sink whose client went away must not stop the engine
        log.debug("sink of %s failed", req.id, exc_info=True)


def _left_pad(x: Tensor, width: int) -> Tensor:
    """``[rows, heads, pos, dim]`` -> ``[rows, heads, width, dim]`` with zeros on the left."""
    extra = width - x.shape[2]
    if extra == 0:
        return x
    return torch.cat([x.new_zeros(x.shape[0], x.shape[1], extra, x.shape[3]), x], dim=2)


def _sample_row(logits: Tensor, temperature: float, top_p: float, generator: torch.Generator | None) -> int:
    probs = torch.softmax(logits.double() / temperature, dim=-1)  # [vocab]
    if top_p < 1.0:
        sorted_p, order = probs.sort(descending=True)
        outside = sorted_p.cumsum(0) - sorted_p >= top_p  # mass before a token already reaches top_p
        sorted_p = sorted_p.masked_fill(outside, 0.0)
        probs = torch.zeros_like(probs).scatter(0, order, sorted_p)
    return int(torch.multinomial(probs, 1, generator=generator))


def _stop_ids(model: HookedModel, tok: Any) -> list[int]:
    """Token ids that end a request, as ``reftlab.generate`` cuts: the generation config's eos,
    the tokenizer's eos, and the pad token (first: also used to pad prompts)."""
    cfg = getattr(model.hf_model, "generation_config", None)
    eos = getattr(cfg, "eos_token_id", None)
    ids = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    out = [pad] if pad is not None else []
    out += [i for i in [*ids, tok.eos_token_id] if i is not None and i not in out]
    if not out:
        raise ValueError("the tokenizer has no eos or pad token; set tokenizer.eos_token before serving")
    return [int(i) for i in out]


def _forward_kwargs(model: HookedModel) -> tuple[type, str, dict[str, int]]:
    """The cache class and the keyword names this model's forward takes (transformers renamed
    ``past_key_values`` to ``cache``); refuse caches that are not plain per-layer K/V tensors."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    params = inspect.signature(model.hf_model.forward).parameters
    cache_kw = cache_keyword(model.hf_model.forward)
    keep = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
    probe = DynamicCache(config=model.hf_model.config)
    odd = {type(layer).__name__ for layer in probe.layers if type(layer) is not DynamicLayer}
    if odd:
        raise ValueError(
            f"serving needs a full-attention KV cache; this {model.cfg['model_type']} model uses {sorted(odd)} "
            "(sliding-window or other cache layers are not supported yet)"
        )
    return DynamicCache, cache_kw, keep
