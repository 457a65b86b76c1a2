"""Orbax checkpoints of the train state and the input iterator state.

A checkpoint at step ``s`` holds ``state`` (:class:`~jaxdet.train.state.TrainState`) and
``data`` (JSON iterator states), so a restarted run continues with the same batches. Saving is
asynchronous (:meth:`Checkpointer.close` waits); :meth:`Checkpointer.restore_latest` falls back
to older steps when the newest cannot be read, and a training run moves the unreadable newer
steps to ``<workdir>/unreadable_checkpoints/`` so that it saves those steps again.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

#: Where a training run moves checkpoints it cannot read (a sibling of the checkpoint folder).
UNREADABLE_DIR = "unreadable_checkpoints"

log = logging.getLogger(__name__)


class Checkpointer:
    """Saves every ``save_every`` steps (and when forced), keeps the last ``max_to_keep``."""

    def __init__(self, directory: str, save_every: int, max_to_keep: int = 3):
        self.directory = os.path.abspath(directory)
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep,
                save_interval_steps=max(int(save_every), 1),
                create=True,
                enable_async_checkpointing=True,
            ),
        )

    def save(self, step: int, state: Any, data_state: dict[str, Any], force: bool = False) -> bool:
        """Saves if ``step`` is on the interval (or ``force``); returns whether it saved."""
        if not force and not self.manager.should_save(step):
            return False
        if step in self.manager.all_steps():
            return False
        return self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)
            ),
            force=force,
        )

    def restore_latest(self, abstract_state: Any, set_aside_unreadable: bool = False
                       ) -> tuple[Any, dict[str, Any]] | None:
        """The newest readable checkpoint as ``(state, data_state)``, or None; ``abstract_state``
        gives structure, shapes, dtypes and shardings (e.g. the initial state). Skips are logged.
        ``set_aside_unreadable``: when an older step was read, the unreadable newer ones are moved
        to :data:`UNREADABLE_DIR` (kept for inspection, no longer in the way of saving those steps
        again).
        """
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
        unreadable = []
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                restored = self.manager.restore(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()
                    ),
                )
            except Exception as err:  # noqa: BLE001 - any unreadable checkpoint: try an older one
                reason = (str(err).strip().splitlines() or [""])[0][:300]
                log.warning(
                    "checkpoint at step %d in %s cannot be restored (%s: %s); trying an older one",
                    step, self.directory, type(err).__name__, reason,
                )
                unreadable.append(step)
                continue
            if set_aside_unreadable and unreadable:
                self._set_aside(unreadable)
            return restored["state"], dict(restored["data"] or {})
        return None

    def _set_aside(self, steps: list[int]) -> None:
        target = os.path.join(os.path.dirname(self.directory), UNREADABLE_DIR)
        if jax.process_index() == 0:
            os.makedirs(target, exist_ok=True)
            stamp = time.strftime("%Y%m%d-%H%M%S")
            for step in steps:
                source = os.path.join(self.directory, str(step))
                if os.path.isdir(source):
                    destination = os.path.join(target, f"{step}-{stamp}")
                    os.replace(source, destination)
                    log.warning("moved the unreadable checkpoint of step %d to %s; training "
                                "continues from an older step and saves step %d again",
                                step, destination, step)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("jaxdet_set_aside_unreadable_checkpoints")
        self.manager.reload()

    def reached_preemption(self, step: int) -> bool:
        """Whether all processes reached JAX's agreed preemption step (Orbax's wrapper: False
        when the preemption service is off)."""
        return bool(self.manager.reached_preemption(step))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def close(self) -> None:
        """Waits for pending asynchronous saves, then releases the manager."""
        self.manager.wait_until_finished()
        self.manager.close()
