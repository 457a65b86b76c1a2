"""Preemption notices (SIGTERM): every process stops at the same step, after saving it.

A cluster scheduler that is about to evict a job sends SIGTERM (Cloud TPU VMs, Kubernetes,
SLURM with ``--signal``). The training loop asks :meth:`PreemptionWatch.reached` after every
step; when it says yes, the loop saves a checkpoint of that step and returns, and rerunning the
same command resumes from it.

* One process: a Python SIGTERM handler sets a flag; the next step boundary stops.
* Several processes (``jax.distributed``): a notice may reach only some of them, and a process
  that stopped alone would leave the others waiting forever in the next collective. JAX's
  preemption sync manager (started by ``jax.distributed.initialize``, which also catches
  SIGTERM) spreads the notice and picks a step every process reaches
  (:func:`jax.experimental.multihost_utils.reached_preemption_sync_point`, called at every
  step by every process); all of them stop and save there.
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
