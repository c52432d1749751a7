"""Who runs when, in plain Python: the queues, admission, who leaves, and the counters.

Continuous batching decides three things at every step, none of which needs the model:

- **admission**: requests added from any thread (``submit``) wait in arrival order; at each step
  the first ones that fit in ``max_batch`` rows join (``admit``), and a request cancelled while
  it waited leaves the queue without running (``take_new`` hands it back to be reported);
- **who leaves**: a running request leaves once it is done (eos, a stop string, ``max_tokens``)
  or cancelled (``leaving``);
- **counters**: ``Stats``, shown on ``/health``.

The engine (``reftlab.serve.engine``) asks, the runner (``reftlab.serve.runner``) runs the
forwards, ``reftlab.serve.kv`` edits the cache. Nothing here imports torch: a job is anything with
a ``route``, a ``cancelled`` flag and a ``done`` property.

>>> from dataclasses import dataclass
>>> @dataclass(eq=False)
... class Req:
...     route: tuple[str, ...] = ()
...     cancelled: bool = False
...     done: bool = False
>>> s = Scheduler[Req](max_batch=2)
>>> a, b, c = Req(), Req(("x",)), Req()
>>> for job in (a, b, c):
...     s.submit(job)
>>> s.take_new(), s.admit(running=0) == [a, b], s.waiting == 1
([], True, True)
>>> a.done = True
>>> s.leaving([a, b])
([1], [])
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar, runtime_checkable


@runtime_checkable
class Job(Protocol):
    """What the scheduler reads of a request."""

    route: tuple[str, ...]
    cancelled: bool

    @property
    def done(self) -> bool: ...


J = TypeVar("J", bound=Job)


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

    def count_forward(self, jobs: Sequence[Job], *, prefill: bool) -> None:
        """One forward over ``jobs``' rows (a prefill or a decode step)."""
        routes = {j.route for j in jobs}
        self.forwards += 1
        self.prefill_forwards += prefill
        self.decode_forwards += not prefill
        self.mixed_forwards += len(routes) > 1
        self.max_rows, self.max_routes = max(self.max_rows, len(jobs)), max(self.max_routes, len(routes))

    def count_end(self, reason: str) -> None:
        """A request ended with ``reason`` ("stop", "length", "cancelled" or "error")."""
        if reason == "cancelled":
            self.requests_cancelled += 1
        elif reason == "error":
            self.requests_failed += 1
        else:
            self.requests_finished += 1


class Scheduler(Generic[J]):
    """The queues of one engine: ``submit``/``cancel``/``stop`` from any thread, the rest from the
    engine's own thread (see the module)."""

    def __init__(self, max_batch: int) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch={max_batch} must be >= 1")
        self.max_batch = max_batch
        self.stats = Stats()
        self._incoming: deque[J] = deque()  # added, not yet seen by the engine thread
        self._waiting: deque[J] = deque()  # seen, waiting for a free row
        self._cond = threading.Condition()
        self._stopping = False

    # --- any thread ------------------------------------------------------------------
    def submit(self, job: J) -> None:
        with self._cond:
            self._incoming.append(job)
            self._cond.notify()

    def cancel(self, job: J) -> None:
        """Mark ``job`` cancelled; it leaves at the engine's next step."""
        with self._cond:
            job.cancelled = True
            self._cond.notify()

    def stop(self) -> None:
        """Wake the engine thread and make ``wait_for_work`` return False."""
        with self._cond:
            self._stopping = True
            self._cond.notify()

    def reopen(self) -> None:
        self._stopping = False

    # --- the engine thread -------------------------------------------------------------
    def wait_for_work(self, busy: bool) -> bool:
        """Block until a job is queued (or ``busy``: rows are running); False once stopping."""
        with self._cond:
            while not (self._stopping or self._incoming or self._waiting or busy):
                self._cond.wait()
            return not self._stopping

    def take_new(self) -> list[J]:
        """Queue the newly submitted jobs; remove and return the waiting ones that were cancelled."""
        with self._cond:
            self._waiting.extend(self._incoming)
            self._incoming.clear()
        gone = [j for j in self._waiting if j.cancelled]
        for job in gone:
            self._waiting.remove(job)
        return gone

    def admit(self, running: int) -> list[J]:
        """The waiting jobs that join a batch of ``running`` rows, first come first served."""
        room = self.max_batch - running
        return [self._waiting.popleft() for _ in range(min(room, len(self._waiting)))]

    @staticmethod
    def leaving(running: Sequence[J]) -> tuple[list[int], list[J]]:
        """(rows that stay, cancelled jobs still to report) of a running batch: done or cancelled jobs leave."""
        keep = [i for i, j in enumerate(running) if not (j.cancelled or j.done)]
        return keep, [j for j in running if j.cancelled and not j.done]

    def drop_waiting(self) -> list[J]:
        """Empty the waiting queue (after a failed step) and return what was in it."""
        out = list(self._waiting)
        self._waiting.clear()
        return out

    def queued(self) -> list[J]:
        """Every job submitted and not yet running (at shutdown)."""
        return [*self._incoming, *self._waiting]

    def tally(self, running: int) -> None:
        """Record the batch and queue sizes at the end of a step."""
        self.stats.running, self.stats.waiting = running, len(self._waiting) + len(self._incoming)

    @property
    def waiting(self) -> int:
        return len(self._waiting)
