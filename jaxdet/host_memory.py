"""Opt-in C heap policy for CPU runs: keep freed memory for reuse (glibc;
``JAXDET_KEEP_HOST_MEMORY=1``, applied by ``import jaxdet``).

XLA:CPU allocates each program's temporaries (hundreds of MB for a detector step) with
``malloc`` on every call and frees them after it. By default glibc serves blocks that large
with fresh ``mmap`` pages, so every call pays a page fault and a zeroing per 4 KiB page (10-35 %
of a CPU detector step). With one arena, no ``mmap`` and a 2 GiB trim threshold, freed blocks
stay in the heap and the next call reuses them; resident memory stays at its peak, as with a
caching allocator. The cost: with one arena XLA's compiler threads contend for the heap's lock
and compilation takes 25-40 % longer (2 cores), so it pays in long runs, not in compile-bound
ones (tests, short jobs); hence opt-in. Without that cost, where the kernel's transparent huge
pages are in ``madvise`` mode: start the process with ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``
(2 MiB pages for those blocks; the same step times here).

This module imports nothing from JAX: threads keep the arena they first allocated from, so the
policy must be set before JAX starts any (import jaxdet before jax; where jax came first, some
of its threads may keep another arena and still fault).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["keep_freed_host_memory", "OPT_IN_VARIABLE"]

OPT_IN_VARIABLE = "JAXDET_KEEP_HOST_MEMORY"
"""Set to ``1`` for the policy; anything else leaves glibc's defaults alone."""

# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8


def keep_freed_host_memory() -> bool:
    """Set the policy above where ``JAXDET_KEEP_HOST_MEMORY=1``; returns whether it was applied
    (False otherwise, and off Linux / glibc). Idempotent."""
    if os.environ.get(OPT_IN_VARIABLE) != "1" or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):  # a C library without mallopt (musl)
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return all(mallopt(param, value) == 1 for param, value in (
        (_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1)))
