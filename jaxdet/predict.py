"""Prediction pictures and evaluation of a trained checkpoint.

  python -m jaxdet.main --mode=predict --config=configs/segmentation.py --workdir=DIR

writes ``DIR/predictions/NNNN.png`` for the first ``config.num_prediction_images`` validation
images and ``DIR/predictions.png`` with all of them.
"""

from __future__ import annotations

import os

import jax
import ml_collections
import numpy as np

from jaxdet import tasks, visualize
from jaxdet.train import checkpointing
from jaxdet.train import loop as loop_lib
from jaxdet.train import step as step_lib
from jaxdet.train import workdir as workdir_lib
from jaxdet.train.state import TrainState


def restore_state(task, config, workdir: str, mesh, train_source) -> TrainState:
    """The latest readable checkpoint's train state; else the ``config.init_from`` weights if set,
    else FileNotFoundError.
    """
    directory = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(directory) and not config.get("init_from"):
        raise FileNotFoundError(f"no checkpoints in {workdir} (expected {directory}/ written by "
                                "--mode=train, or config.init_from)")
    example = loop_lib.preprocess_fn(task, config)(train_source[0])
    state = loop_lib.initial_state(task, config, mesh, example)
    ckpt = checkpointing.Checkpointer(directory, save_every=1)
    try:
        restored = ckpt.restore_latest(state)
    finally:
        ckpt.close()
    if restored is None:
        if config.get("init_from"):  # imported weights (jaxdet.convert), not trained here
            return state
        raise FileNotFoundError(f"no readable checkpoint under {workdir}/checkpoints")
    return restored[0]


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Validation metrics of the latest readable checkpoint in ``workdir``, with its ``step``."""
    workdir_lib.check_same_run(config, workdir)
    task = tasks.get_task(config.task)
    mesh = step_lib.make_mesh()
    train_source, eval_source = loop_lib.split_sources(task, config)
    state = restore_state(task, config, workdir, mesh, train_source)
    results = loop_lib.evaluate(task, config, state, eval_source, mesh, results_dir=workdir)
    return {**results, "step": int(np.max(jax.device_get(state.step)))}


def write_predictions(config: ml_collections.ConfigDict, workdir: str) -> str:
    """Draws predictions of the latest checkpoint; returns the combined picture's path."""
    workdir_lib.check_same_run(config, workdir)
    task = tasks.get_task(config.task)
    mesh = step_lib.make_mesh()
    train_source, eval_source = loop_lib.split_sources(task, config)
    state = restore_state(task, config, workdir, mesh, train_source)
    pictures = loop_lib.prediction_pictures(task, config, state, eval_source,
                                            int(config.get("num_prediction_images", 8)))
    path = os.path.join(workdir, "predictions.png")
    if jax.process_index() != 0:  # every process restores (a collective); one writes
        return path
    out_dir = os.path.join(workdir, "predictions")
    os.makedirs(out_dir, exist_ok=True)
    for i, picture in enumerate(pictures):
        picture.save(os.path.join(out_dir, f"{i:04d}.png"))
    visualize.stack_vertically(pictures).save(path)
    return path
