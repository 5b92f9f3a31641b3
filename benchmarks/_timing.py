"""Timing helper shared by the benchmarks (run from the project root; scripts import it by name)."""

from __future__ import annotations

import statistics
import time


def timed(fn, repeat: int, warmup: int = 2) -> float:
    """Median wall time of fn() in milliseconds, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)
