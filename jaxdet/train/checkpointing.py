"""Orbax checkpoints of the train state and the input iterator state.

A checkpoint at step ``s`` holds ``state`` (:class:`~jaxdet.train.state.TrainState`) and
``data`` (JSON iterator states), so a restarted run continues with the same batches. Saving is
asynchronous (:meth:`Checkpointer.close` waits); :meth:`Checkpointer.restore_latest` falls back
to older steps when the newest cannot be read.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

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

    def restore_latest(self, abstract_state: Any) -> tuple[Any, dict[str, Any]] | None:
        """The newest readable checkpoint as ``(state, data_state)``, or None; ``abstract_state``
        gives structure, shapes, dtypes and shardings (e.g. the initial state). Skips are logged.
        """
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                restored = self.manager.restore(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()
                    ),
                )
            except Exception as err:  # noqa: BLE001 - any unreadable checkpoint: try an older one
                log.warning(
                    "checkpoint at step %d in %s cannot be restored (%s: %s); trying an older one",
                    step, self.directory, type(err).__name__, err,
                )
                continue
            return restored["state"], dict(restored["data"] or {})
        return None

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
