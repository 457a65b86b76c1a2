"""The benchmarks' one timer (compile + first call, then the median of timed calls) and the
machine line every recorded figure carries."""

from __future__ import annotations

import os
import platform
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


def machine(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU a figure was measured on, e.g. ``"AMD EPYC (x86_64 family 26 model 2, AVX-512), 2
    CPUs"``: the model name and, on Linux, the family and model numbers, which tell apart CPU
    generations sold under one name (read from ``cpuinfo``; without it, Python's ``platform``)."""
    name, family, model, avx512 = platform.processor() or platform.machine(), "", "", False
    try:
        with open(cpuinfo, encoding="utf-8") as f:
            for line in f:
                key, _, value = (part.strip() for part in line.partition(":"))
                if key == "model name" and value:
                    name = value
                elif key == "cpu family":
                    family = value
                elif key == "model":
                    model = value
                elif key == "flags":
                    avx512 = "avx512f" in value.split()
                    break
    except OSError:
        pass
    detail = ", ".join(x for x in (f"{platform.machine()} family {family} model {model}"
                                   if family else "", "AVX-512" if avx512 else "") if x)
    return f"{name}{f' ({detail})' if detail else ''}, {os.cpu_count()} CPUs"
