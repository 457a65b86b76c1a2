"""Preemption notices (SIGTERM): every process stops at the same step, after saving it.

The loop asks :meth:`PreemptionWatch.reached` after every step; on True it saves and returns,
and rerunning resumes. One process: a SIGTERM handler sets a flag. Several processes: JAX's
preemption sync manager (``jax.distributed.initialize``) picks a step all processes reach
(:func:`jax.experimental.multihost_utils.reached_preemption_sync_point`), so none waits alone
in a collective.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

import jax
from jax.experimental import multihost_utils


class PreemptionWatch:
    """``reached(step)``: True at the step where this process should save and stop."""

    def __init__(self) -> None:
        self._multiprocess = jax.process_count() > 1
        self._noticed = threading.Event()
        self._previous: Any = None
        if not self._multiprocess and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        del signum, frame
        self._noticed.set()

    def reached(self, step: int) -> bool:
        if self._multiprocess:
            return bool(multihost_utils.reached_preemption_sync_point(step))
        return self._noticed.is_set()

    def close(self) -> None:
        """Gives SIGTERM back to the handler that was installed before."""
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None
