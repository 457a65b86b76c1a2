"""The benchmarks' one timer: compile + first call, then the median of timed calls."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def first_and_median(fn: Callable[..., Any], *args: Any, calls: int) -> tuple[float, float]:
    """``(seconds of the first call (compilation included), median seconds of the next
    ``calls`` calls)`` of ``fn(*args)``, each blocking until its outputs are ready."""
    import jax

    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return first, statistics.median(times)
