"""The scheduler alone, without a model: admission in arrival order within max_batch, who leaves, the counters."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import pytest

from reftlab.serve.scheduler import Scheduler, Stats


@dataclass(eq=False)
class Job:
    route: tuple[str, ...] = ()
    cancelled: bool = False
    done: bool = False


def test_waiting_jobs_join_in_arrival_order_as_rows_free_up():
    s: Scheduler[Job] = Scheduler(max_batch=3)
    jobs = [Job() for _ in range(5)]
    for job in jobs:
        s.submit(job)
    assert s.take_new() == [] and s.waiting == 5
    assert s.admit(running=1) == jobs[:2]  # two free rows
    assert s.admit(running=3) == []  # full
    assert s.admit(running=0) == jobs[2:]
    assert s.waiting == 0 and s.admit(running=0) == []


def test_a_job_cancelled_while_waiting_never_runs():
    s: Scheduler[Job] = Scheduler(max_batch=2)
    a, b, c = Job(), Job(), Job()
    for job in (a, b, c):
        s.submit(job)
    s.cancel(b)
    assert b.cancelled and s.take_new() == [b]
    assert s.admit(running=0) == [a, c]


def test_done_and_cancelled_rows_leave_and_only_unreported_cancellations_are_returned():
    running = [Job(), Job(done=True), Job(cancelled=True), Job(cancelled=True, done=True), Job()]
    keep, cancelled = Scheduler.leaving(running)
    assert keep == [0, 4] and cancelled == [running[2]]
    assert Scheduler.leaving([]) == ([], [])


def test_the_counters_count_forwards_routes_and_endings():
    stats = Stats()
    stats.count_forward([Job(()), Job(("a",)), Job(("a",))], prefill=True)
    stats.count_forward([Job(("a",))], prefill=False)
    for reason in ("stop", "length", "cancelled", "error", "error"):
        stats.count_end(reason)
    got = stats.as_dict()
    assert (got["forwards"], got["prefill_forwards"], got["decode_forwards"], got["mixed_forwards"]) == (2, 1, 1, 1)
    assert (got["max_rows"], got["max_routes"]) == (3, 2)
    assert (got["requests_finished"], got["requests_cancelled"], got["requests_failed"]) == (2, 1, 2)


def test_tally_counts_jobs_not_yet_taken_as_waiting():
    s: Scheduler[Job] = Scheduler(max_batch=1)
    s.submit(Job())
    s.take_new()
    s.submit(Job())
    s.tally(running=1)
    assert (s.stats.running, s.stats.waiting) == (1, 2)
    assert len(s.queued()) == 2 and len(s.drop_waiting()) == 1 and len(s.queued()) == 1


def test_the_engine_thread_sleeps_until_work_arrives_and_wakes_to_stop():
    s: Scheduler[Job] = Scheduler(max_batch=1)
    assert s.wait_for_work(busy=True)  # running rows: no wait
    woke: list[bool] = []
    t = threading.Thread(target=lambda: woke.append(s.wait_for_work(busy=False)))
    t.start()
    s.submit(Job())
    t.join(5)
    assert woke == [True]
    s.stop()
    assert not s.wait_for_work(busy=False)
    s.reopen()
    assert s.wait_for_work(busy=False)  # the job is still queued


def test_a_batch_needs_a_row():
    with pytest.raises(ValueError, match="max_batch=0 must be >= 1"):
        Scheduler(max_batch=0)
