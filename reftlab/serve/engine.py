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

The engine is split the way serving engines are: ``reftlab.serve.scheduler`` decides who waits,
joins and leaves and keeps the counters (plain Python), ``reftlab.serve.runner`` runs the
prefill and decode forwards and samples, ``reftlab.serve.kv`` joins and trims the KV cache. This
module ties them together on one thread and turns tokens into the events a client hears.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

from ..data.encode import context_length
from ..models.hooked import HookedModel
from ..reft_model import ReftModel
from .request import Delta, Event, Finished, Request, Sampling, accept, report
from .runner import Batch, Runner
from .scheduler import Scheduler, Stats

__all__ = ["Delta", "Engine", "Event", "Finished", "Request", "Sampling", "Stats"]

log = logging.getLogger("reftlab.serve")


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
        self.scheduler: Scheduler[Request] = Scheduler(max_batch)
        self.runner = Runner(model, refts)
        self.hooked, self.tokenizer, self.max_batch = model, self.runner.tokenizer, max_batch
        self.tokenizer_lock = self.runner.tokenizer_lock  # the HTTP side encodes under it
        self.refts = dict(refts)
        self.context_length = context_length(self.tokenizer, model)
        self.stats: Stats = self.scheduler.stats
        self._batch = Batch()
        self._thread: threading.Thread | None = None

    # --- any thread ------------------------------------------------------------------
    def add(self, request: Request) -> None:
        unknown = [r for r in request.route if r not in self.refts]
        if unknown:
            raise ValueError(f"unknown ReFT {unknown[0]!r}; served: {list(self.refts)}")
        self.scheduler.submit(request)

    def cancel(self, request: Request) -> None:
        """Stop ``request`` at the next step (no-op once it finished); its row is freed."""
        self.scheduler.cancel(request)

    def start(self) -> Engine:
        if self._thread is None:
            self.scheduler.reopen()
            self._thread = threading.Thread(target=self._loop, name="reftlab-serve-engine", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.scheduler.stop()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while self.scheduler.wait_for_work(busy=bool(self._batch.reqs)):
            try:
                self.step()
            except Exception as e:  # a bug outside a forward: fail what is in flight, keep the thread alive
                log.exception("engine step failed")
                stuck, self._batch = [*self.scheduler.drop_waiting(), *self._batch.reqs], Batch()
                for req in stuck:
                    self._finish(req, "error", message=f"{type(e).__name__}: {e}")
        for req in [*self.scheduler.queued(), *self._batch.reqs]:
            self._finish(req, "cancelled", message="the server is shutting down")

    # --- the engine thread ---------------------------------------------------------------
    @torch.inference_mode()
    def step(self) -> bool:
        """One iteration: admit what fits, decode every running row once, retire the finished."""
        for req in self.scheduler.take_new():
            self._finish(req, "cancelled")
        self._retire()
        joining = self.scheduler.admit(running=len(self._batch.reqs))
        did = bool(joining or self._batch.reqs)
        if joining:
            self._guarded(joining, lambda: self._prefill(joining), reset=False)
            self._retire()
        if self._batch.reqs:
            self._guarded(list(self._batch.reqs), self._decode, reset=True)
            self._retire()
        self.scheduler.tally(running=len(self._batch.reqs))
        return did

    def _guarded(self, reqs: list[Request], fn: Callable[[], None], *, reset: bool) -> None:
        """Run ``fn``; if it raises, fail ``reqs`` (a failed prefill leaves the running batch as it
        was; a failed decode step drops the batch) and keep serving."""
        try:
            fn()
        except Exception as e:
            log.exception("forward failed")
            if reset:
                self._batch = Batch()
            for req in reqs:
                self._finish(req, "error", message=f"{type(e).__name__}: {e}")

    def _prefill(self, joining: list[Request]) -> None:
        logits, cache, lengths = self.runner.prefill(joining)
        self.stats.count_forward(joining, prefill=True)
        self.runner.start(joining)
        first = self.runner.sample(logits, joining)
        self._batch.join(joining, cache, lengths, first)
        self._accept(joining, first)

    def _decode(self) -> None:
        b = self._batch
        logits = self.runner.decode(b)
        self.stats.count_forward(b.reqs, prefill=False)
        b.lengths = b.lengths + 1
        b.next_ids = self.runner.sample(logits, b.reqs)
        self._accept(b.reqs, b.next_ids)

    def _retire(self) -> None:
        """Drop finished rows from the batch and trim cache columns no row still uses."""
        keep, cancelled = self.scheduler.leaving(self._batch.reqs)
        for req in cancelled:
            self._finish(req, "cancelled")
        if len(keep) == len(self._batch.reqs):
            return
        if not keep:
            self._batch = Batch()
            return
        self._batch.keep(keep)

    def _accept(self, reqs: Sequence[Request], tokens: Tensor) -> None:
        for req, tok in zip(reqs, tokens.tolist()):
            if req.done or req.cancelled:
                continue
            accept(req, tok, self.runner.stop_ids, self.stats)
            if req.stream is not None and req.stream.reason is not None:  # it ended
                self._finish(req, req.stream.reason)

    def _finish(self, req: Request, reason: str, message: str = "") -> None:
        report(req, reason, message, tokenizer=self.tokenizer, lock=self.tokenizer_lock, stats=self.stats)
