"""What a client asks of the engine and what it hears back: ``Request``, ``Sampling``, ``Delta``, ``Finished``."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

from .text import TextStream


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

    @property
    def done(self) -> bool:
        """Its text ended (eos, a stop string, ``max_tokens``, or finished by the engine)."""
        return self.stream is not None and self.stream.done


_ids: Iterator[int] = itertools.count()


@runtime_checkable
class ServingEngine(Protocol):
    """What the HTTP app (``reftlab.serve.app``) asks of an engine: reftlab's own ``Engine`` or
    ``reftlab.serve.vllm.engine.VllmEngine``."""

    @property
    def tokenizer(self) -> Any: ...

    @property
    def tokenizer_lock(self) -> Any: ...

    @property
    def refts(self) -> Mapping[str, Any]: ...

    @property
    def max_batch(self) -> int: ...

    @property
    def stats(self) -> Any: ...

    @property
    def context_length(self) -> int | None: ...

    def add(self, request: Request) -> None: ...

    def cancel(self, request: Request) -> None: ...

    def start(self) -> Any: ...

    def stop(self, timeout: float = 10.0) -> None: ...


log = logging.getLogger("reftlab.serve")


def accept(req: Request, tok: int, stop_ids: Sequence[int], stats: Any) -> None:
    """One new token of ``req``: a stop token ends it, any other is appended and its settled
    text emitted; ``max_tokens`` ends it (both engines cut as ``reftlab.generate`` cuts)."""
    stream = req.stream
    assert stream is not None
    if tok in stop_ids:
        stream.finish("stop")
        return
    req.generated.append(tok)
    stats.tokens_generated += 1
    text = stream.push(req.generated)
    if text:
        emit(req, Delta(text))
    if not stream.done and len(req.generated) >= req.sampling.max_tokens:
        stream.finish("length")


def report(req: Request, reason: str, message: str, *, tokenizer: Any, lock: Any, stats: Any) -> None:
    """Send ``req``'s last text and its ``Finished`` event, once."""
    if req.stream is not None and req.stream.reported:
        return
    if req.stream is None:
        req.stream = TextStream(tokenizer, req.sampling.stop, lock)
    if not req.stream.done:
        req.stream.finish(reason)
    req.stream.reported = True
    tail = req.stream.finalize(req.generated, complete=reason in ("stop", "length"))
    if tail:
        emit(req, Delta(tail))
    stats.count_end(reason)
    emit(req, Finished(reason, req.stream.text, len(req.prompt_ids), len(req.generated), message))


def emit(req: Request, event: Event) -> None:
    try:
        req.sink(event)
    except Exception:  # a sink whose client went away must not stop the engine
        log.debug("sink of %s failed", req.id, exc_info=True)
