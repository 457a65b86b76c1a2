"""The training loop shared by every task: train, checkpoint, evaluate, write metrics.

``train_and_evaluate(config, workdir)`` is what ``python -m jaxdet.main`` runs. It resumes from
the latest readable checkpoint in ``workdir/checkpoints`` (train state + input iterator state),
so a killed run restarted with the same workdir ends with the same numbers as one that was never
interrupted.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm
from jax.sharding import NamedSharding, PartitionSpec

from jaxdet import tasks
from jaxdet.data import pipeline
from jaxdet.train import checkpointing, metric_writing
from jaxdet.train import state as state_lib
from jaxdet.train import step as step_lib

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """Training met more consecutive non-finite losses than ``config.max_nonfinite_steps``."""


def _replicated(tree: Any, mesh) -> Any:
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def evaluate(
    task, config: ml_collections.ConfigDict, state: state_lib.TrainState, source, mesh,
    eval_step: Callable | None = None,
) -> dict[str, float]:
    """Metrics over every example of ``source`` exactly once (padded batches, masked)."""
    if eval_step is None:
        eval_step = make_eval_step(task, config, mesh)
    accumulator = _replicated(task.eval_accumulator(config), mesh)
    limit = config.get("eval_limit") or None
    for local_batch in pipeline.eval_batches(
        source, task.preprocess, config.eval_batch_size, limit=limit
    ):
        accumulator = eval_step(state, accumulator, pipeline.to_global_batch(local_batch, mesh))
    return task.summarize(jax.device_get(accumulator), config)


def split_sources(task, config: ml_collections.ConfigDict) -> tuple[Any, Any]:
    """(train source, evaluation source); ``config.eval_split`` names the latter."""
    sources = task.datasets(config)
    eval_split = config.get("eval_split", "validation")
    if eval_split not in sources:
        raise ValueError(f"config.eval_split={eval_split!r}; expected one of {sorted(sources)}")
    return sources["train"], sources[eval_split]


def make_eval_step(task, config, mesh) -> Callable:
    model = task.create_model(config, bn_axis_name=None)
    body = step_lib.make_eval_step_body(task.make_eval_fn(model, config))
    return step_lib.shard_map_step(body, mesh, num_replicated=2, donate=False)


def initial_state(task, config, mesh, example: dict[str, np.ndarray]) -> state_lib.TrainState:
    """Fresh train state from ``config.seed``, replicated over ``mesh``."""
    model = task.create_model(config, bn_axis_name=None)
    images = task.model_input({k: jnp.asarray(v[None]) for k, v in example.items()})
    variables = jax.jit(model.init, static_argnames="train")(
        jax.random.key(config.seed), images, train=False
    )
    optimizer = state_lib.make_optimizer(config)
    return _replicated(state_lib.create_train_state(variables, optimizer), mesh)


def _write_json(path: str, payload: dict) -> None:
    if jax.process_index() == 0:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=2, sort_keys=True)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Trains ``config.num_train_steps`` steps (resuming if possible), then evaluates.

    Writes to ``workdir``: ``checkpoints/``, TensorBoard events, ``metrics.jsonl``,
    ``config.json`` and ``eval_results.json`` (the final validation metrics, also returned).
    """
    os.makedirs(workdir, exist_ok=True)
    task = tasks.get_task(config.task)
    mesh = step_lib.make_mesh()
    local_batch = pipeline.per_process_batch_size(config.batch_size, mesh)
    pipeline.per_process_batch_size(config.eval_batch_size, mesh)
    train_source, eval_source = split_sources(task, config)
    _write_json(os.path.join(workdir, "config.json"), json.loads(config.to_json_best_effort()))

    state = initial_state(task, config, mesh, task.preprocess(train_source[0]))
    train_iter = iter(
        pipeline.train_dataset(train_source, task.preprocess, local_batch, seed=config.seed)
    )
    ckpt = checkpointing.Checkpointer(
        os.path.join(workdir, "checkpoints"), config.checkpoint_every_steps,
        config.get("keep_checkpoints", 3),
    )
    restored = ckpt.restore_latest(state)
    if restored is not None:
        state, data_state = restored
        train_iter.set_state(data_state["train"])
        log.info("resumed from step %d in %s", int(state.step), ckpt.directory)

    optimizer = state_lib.make_optimizer(config)
    schedule = state_lib.learning_rate_schedule(config)
    train_model = task.create_model(config, bn_axis_name=step_lib.AXIS_NAME)
    body = step_lib.make_train_step_body(
        task.make_loss_fn(train_model, config), optimizer, dict(config.loss.weights),
        jax.random.key(config.seed + 1),
    )
    train_step = step_lib.shard_map_step(body, mesh)
    eval_step = make_eval_step(task, config, mesh)
    writer = metric_writing.create_writer(workdir)

    start = int(state.step)
    total = int(config.num_train_steps)
    consecutive_nonfinite = 0
    history: list[dict[str, float]] = []
    bar = tqdm.tqdm(
        total=total, initial=start, desc="train", unit="step", dynamic_ncols=True,
        disable=jax.process_index() != 0 or not config.get("progress_bar", True),
    )
    t_last, steps_since = time.perf_counter(), 0
    try:
        for step in range(start + 1, total + 1):
            batch = pipeline.to_global_batch(next(train_iter), mesh)
            state, metrics = train_step(state, batch)
            metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
            if metrics["nonfinite"]:
                consecutive_nonfinite += 1
                if consecutive_nonfinite > config.get("max_nonfinite_steps", 0):
                    raise NonFiniteLossError(
                        f"non-finite loss or gradient at step {step} (loss={metrics['loss']}); "
                        f"{consecutive_nonfinite} in a row, config.max_nonfinite_steps="
                        f"{config.get('max_nonfinite_steps', 0)}. The update was not applied "
                        f"and the last good checkpoint (step {ckpt.latest_step()}) is intact."
                    )
            else:
                consecutive_nonfinite = 0
            history.append(metrics)
            steps_since += 1
            bar.update(1)
            bar.set_postfix(loss=f"{metrics['loss']:.4f}")
            if step % config.log_every_steps == 0 or step == total:
                now = time.perf_counter()
                means = {k: float(np.mean([h[k] for h in history])) for k in history[0]}
                means["steps_per_sec"] = steps_since / (now - t_last)
                means["learning_rate"] = float(schedule(step - 1))
                means["nonfinite_total"] = float(state.nonfinite_count)
                writer.write_scalars(step, {f"train/{k}": v for k, v in means.items()})
                history, t_last, steps_since = [], now, 0
            ckpt.save(step, state, {"train": train_iter.get_state()}, force=step == total)
            if config.eval_every_steps and step % config.eval_every_steps == 0 and step != total:
                results = evaluate(task, config, state, eval_source, mesh, eval_step)
                writer.write_scalars(step, {f"eval/{k}": v for k, v in results.items()})
                bar.write(f"step {step}: " + format_results(results))
    finally:
        bar.close()
        ckpt.close()
    results = evaluate(task, config, state, eval_source, mesh, eval_step)
    writer.write_scalars(int(state.step), {f"eval/{k}": v for k, v in results.items()})
    writer.flush()
    writer.close()
    results["step"] = int(state.step)
    _write_json(os.path.join(workdir, "eval_results.json"), results)
    log.info("final evaluation at step %d: %s", int(state.step), format_results(results))
    return results


def format_results(results: dict[str, float]) -> str:
    """One line with the headline metrics (per-class values left out)."""
    keys = [k for k in results if "/" not in k]
    return ", ".join(f"{k}={results[k]:.4f}" for k in keys)
