"""The C heap's policy for freed memory: keep it for reuse (glibc; applied by ``import jaxdet``).

XLA:CPU allocates each program's temporaries (hundreds of MB for a detector step) with
``malloc`` on every call and frees them after it. By default glibc serves blocks that large
with fresh ``mmap`` pages, so every call pays a page fault and a zeroing per 4 KiB page (10-35 %
of a CPU detector step). With one arena, no ``mmap`` and a 2 GiB trim threshold, freed blocks
stay in the heap and the next call reuses them; resident memory stays at its peak, as with a
caching allocator. This module imports nothing from JAX: threads keep the arena they first
allocated from, so the policy must be set before JAX starts any (import jaxdet before jax; where
jax came first, some of its threads may keep another arena and still fault).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["keep_freed_host_memory", "OPT_OUT_VARIABLE"]

OPT_OUT_VARIABLE = "JAXDET_KEEP_HOST_MEMORY"
"""Set to ``0`` to leave glibc's defaults alone."""

# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8


def keep_freed_host_memory() -> bool:
    """Set the policy above; returns whether it was applied (False off Linux / glibc, or where
    ``JAXDET_KEEP_HOST_MEMORY=0``). Idempotent."""
    if os.environ.get(OPT_OUT_VARIABLE, "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):  # a C library without mallopt (musl)
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return all(mallopt(param, value) == 1 for param, value in (
        (_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1)))
