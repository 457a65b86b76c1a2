"""Preemption notices (SIGTERM) and Ctrl-C: every process stops at the same step, after saving.

The loop asks :meth:`PreemptionWatch.reached` after every step; on True it saves and returns,
and rerunning resumes. One process: SIGTERM and the first Ctrl-C (SIGINT) set a flag; a second
Ctrl-C interrupts at once (``KeyboardInterrupt``). Several processes: JAX's
preemption sync manager (``jax.distributed.initialize``) picks a step all processes reach
through Orbax's ``CheckpointManager.reached_preemption``, so none waits alone in a collective.
"""

from __future__ import annotations

import signal
import sys
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
        self._previous: dict[int, Any] = {}
        if not self._multiprocess and threading.current_thread() is threading.main_thread():
            self._previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._on_sigterm)
            self._previous[signal.SIGINT] = signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        del signum, frame
        self._noticed.set()

    def _on_sigint(self, signum: int, frame: Any) -> None:
        del signum, frame
        if self._noticed.is_set():  # the second Ctrl-C: stop now
            raise KeyboardInterrupt
        self._noticed.set()
        sys.stderr.write("\nCtrl-C: saving a checkpoint after this step, then stopping "
                         "(Ctrl-C again to stop without saving)\n")

    def reached(self, step: int) -> bool:
        if self._multiprocess:
            return bool(self._sync_point(step))
        return self._noticed.is_set()

    def close(self) -> None:
        """Gives SIGTERM and SIGINT back to the handlers that were installed before."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}
