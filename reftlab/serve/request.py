"""What a client asks of the engine and what it hears back: ``Request``, ``Sampling``, ``Delta``, ``Finished``."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

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
