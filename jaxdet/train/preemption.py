"""Preemption notices (SIGTERM): every process stops at the same step, after saving it.

The loop asks :meth:`PreemptionWatch.reached` after every step; on True it saves and returns,
and rerunning resumes. One process: a SIGTERM handler sets a flag. Several processes: JAX's
preemption sync manager (``jax.distributed.initialize``) picks a step all processes reach
through Orbax's ``CheckpointManager.reached_preemption``, so none waits alone in a collective.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

import jax


class PreemptionWatch:
    """``reached(step)``: True at the step where this process should save and stop.

    ``sync_point(step)``: with several processes, whether all of them reached the agreed
    preemption step; pass Orbax's ``CheckpointManager.reached_preemption`` (False when JAX's
    preemption service is off, where the raw JAX call raises). ``multiprocess``: default
    ``jax.process_count() > 1``.
    """

    def __init__(self, sync_point: Callable[[int], bool] | None = None,
                 multiprocess: bool | None = None) -> None:
        self._multiprocess = jax.process_count() > 1 if multiprocess is None else multiprocess
        if self._multiprocess and sync_point is None:
            raise ValueError("PreemptionWatch with several processes needs sync_point (e.g. "
                             "CheckpointManager.reached_preemption)")
        self._sync_point = sync_point
        self._noticed = threading.Event()
        self._previous: Any = None
        if not self._multiprocess and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        del signum, frame
        self._noticed.set()

    def reached(self, step: int) -> bool:
        if self._multiprocess:
            return bool(self._sync_point(step))
        return self._noticed.is_set()

    def close(self) -> None:
        """Gives SIGTERM back to the handler that was installed before."""
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None
