"""Shared timing for the benchmarks: interleaved repeats, medians (machine noise hits every side alike)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def interleaved(runs: dict[str, Callable[[], object]], repeats: int) -> tuple[dict[str, float], dict[str, list[float]]]:
    """One warm-up each, then ``repeats`` rounds of every run in turn; returns (medians, all times)."""
    times: dict[str, list[float]] = {k: [] for k in runs}
    with torch.inference_mode():
        for fn in runs.values():
            fn()
        for _ in range(repeats):
            for name, fn in runs.items():
                times[name].append(timed(fn))
    return {k: statistics.median(v) for k, v in times.items()}, times
