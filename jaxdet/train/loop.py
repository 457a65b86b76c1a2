"""The training loop shared by every task: train, checkpoint, evaluate, write metrics.

``train_and_evaluate(config, workdir)`` (what ``python -m jaxdet.main`` runs) resumes from the
latest readable checkpoint in ``workdir/checkpoints`` (train state + input iterator state): a
restarted run ends with the same numbers as an uninterrupted one.
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
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

from jaxdet import core, tasks, visualize
from jaxdet.core import ConfigError
from jaxdet.data import pipeline
from jaxdet.models import weights
from jaxdet.train import checkpointing, compile_guard, metric_writing, preemption
from jaxdet.train import state as state_lib
from jaxdet.train import step as step_lib
from jaxdet.train import sweep as sweep_lib
from jaxdet.train import workdir as workdir_lib

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """Training met more consecutive non-finite losses than ``config.max_nonfinite_steps``."""


def _replicated(tree: Any, mesh) -> Any:
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def evaluate(
    task, config: ml_collections.ConfigDict, state: state_lib.TrainState, source, mesh,
    eval_step: Callable | None = None, members: list[sweep_lib.Member] | None = None,
    results_dir: str | None = None,
) -> Any:
    """Metrics over every example of ``source`` exactly once (padded, masked batches): the task's
    summary dict, or for a sweep (``members``, stacked ``state``) one summary per member.
    """
    num_members = len(members or ())
    if task.EVALUATES_ON_HOST:
        return _evaluate_on_host(
            task, config, state, source, mesh, eval_step, members, results_dir)
    if eval_step is None:
        eval_step = make_eval_step(task, config, mesh, num_members)
    accumulator = task.eval_accumulator(config)
    if num_members:
        accumulator = sweep_lib.stack(accumulator, num_members)
    accumulator = _replicated(accumulator, mesh)
    limit = config.get("eval_limit") or None
    for local_batch in pipeline.eval_batches(
        source, preprocess_fn(task, config), config.eval_batch_size, limit=limit
    ):
        accumulator = eval_step(state, accumulator, pipeline.to_global_batch(local_batch, mesh))
    accumulator = jax.device_get(accumulator)
    if not num_members:
        return task.summarize(accumulator, config)
    return [
        task.summarize(sweep_lib.unstack(accumulator, i), sweep_lib.member_config(config, m))
        for i, m in enumerate(members)
    ]


def _evaluate_on_host(
    task, config, state, source, mesh, predict_step, members, results_dir=None
) -> Any:
    """Evaluation by ``task.host_evaluator(config)`` (e.g. COCO AP) of the per-example outputs of
    ``task.make_predict_fn``, gathered to every process; sweep members one after another. With
    ``results_dir``, process 0 calls the evaluator's ``write(results_dir)``.
    """
    if predict_step is None:
        predict_step = make_eval_step(task, config, mesh)
    if members:
        return [
            _evaluate_on_host(task, sweep_lib.member_config(config, m),
                              sweep_lib.unstack(state, i), source, mesh, predict_step, None)
            for i, m in enumerate(members)
        ]
    evaluator = task.host_evaluator(config)
    limit = config.get("eval_limit") or None
    for local_batch in pipeline.eval_batches(
        source, preprocess_fn(task, config), config.eval_batch_size, limit=limit
    ):
        outputs = predict_step(state, pipeline.to_global_batch(local_batch, mesh))
        if jax.process_count() > 1:
            batch = multihost_utils.process_allgather(local_batch, tiled=True)
            outputs = multihost_utils.process_allgather(outputs, tiled=True)
        else:
            batch, outputs = local_batch, jax.device_get(outputs)
        evaluator.add(batch, outputs)
    summary = evaluator.summarize()
    if results_dir and jax.process_index() == 0:
        evaluator.write(results_dir)
    return summary


def split_sources(task, config: ml_collections.ConfigDict) -> tuple[Any, Any]:
    """``(train source, evaluation source)`` (``config.eval_split``; else ValueError). With several
    processes, process 0 builds the datasets first while the others wait.
    """
    if jax.process_count() > 1:
        if jax.process_index() == 0:
            task.datasets(config)
        multihost_utils.sync_global_devices("jaxdet: datasets built")
    sources = task.datasets(config)
    eval_split = config.get("eval_split", "validation")
    where = config.data.get("path") or config.data.get("source") or config.data.get("name", "")
    for split in ("train", eval_split):
        if split in sources and len(sources[split]) == 0:
            raise core.UserError(f"the dataset {where} has no {split} examples (config.data)")
    if eval_split not in sources:
        raise ConfigError(f"config.eval_split={eval_split!r}; expected one of {sorted(sources)}")
    return sources["train"], sources[eval_split]


def preprocess_fn(task: core.Task, config: ml_collections.ConfigDict) -> Callable:
    """The task's per-example preprocessing (``task.make_preprocess(config)``)."""
    return task.make_preprocess(config)


def make_eval_step(task, config, mesh, num_members: int = 0) -> Callable:
    """The compiled eval step: additive statistics (one run or all sweep members), or for host
    evaluated tasks the per-example predictions of one state.
    """
    model = task.create_model(config, bn_axis_name=None)
    if task.EVALUATES_ON_HOST:
        return step_lib.predict_step(task.make_predict_fn(model, config), mesh)
    body = step_lib.make_eval_step_body(task.make_eval_fn(model, config))
    if num_members:
        body = sweep_lib.make_sweep_eval_body(body, config.get("sweep_strategy", "vmap"))
    return step_lib.shard_map_step(body, mesh, num_replicated=2, donate=False)


def loss_weights(task: core.Task, config: ml_collections.ConfigDict) -> dict[str, float]:
    """The task's loss weights for ``config``."""
    return dict(task.loss_weights(config))


def initial_state(
    task, config, mesh, example: dict[str, np.ndarray], num_members: int = 0
) -> state_lib.TrainState:
    """Fresh train state from ``config.seed``, replicated over ``mesh``; ``config.init_from`` (a
    ``python -m jaxdet.convert`` directory) replaces matching arrays
    (:func:`jaxdet.models.weights.init_from`); ``num_members > 0`` stacks that many copies.
    """
    model = task.create_model(config, bn_axis_name=None)
    batch = {k: jnp.asarray(v[None]) for k, v in example.items()}
    rng = jax.random.key(config.seed)
    variables = jax.jit(lambda r, b: task.init_variables(model, r, b))(rng, batch)
    if config.get("init_from"):  # converted weights (python -m jaxdet.convert)
        variables = weights.init_from(variables, config.init_from)
    optimizer = state_lib.make_optimizer(config)
    state = state_lib.create_train_state(variables, optimizer)
    if num_members:
        state = sweep_lib.stack(state, num_members)
    return _replicated(state, mesh)


def make_train_step(task, config, mesh, optimizer, members: list[sweep_lib.Member]) -> Callable:
    """The compiled train step: one run, or every sweep member in one program."""
    train_model = task.create_model(config, bn_axis_name=core.AXIS_NAME)
    loss_fn = task.make_loss_fn(train_model, config)
    rng = jax.random.key(config.seed + 1)
    if not members:
        body = step_lib.make_train_step_body(
            loss_fn, optimizer, loss_weights(task, config), rng
        )
    else:
        hparams = sweep_lib.stacked_hparams(
            config, members, lambda c: loss_weights(task, c)
        )
        body = sweep_lib.make_sweep_train_body(
            step_lib.make_hparam_train_step_body(loss_fn, optimizer, rng),
            hparams, config.get("sweep_strategy", "vmap"),
        )
    return step_lib.shard_map_step(body, mesh)


def _flatten_members(values: dict[str, Any], names: list[str]) -> dict[str, float]:
    """``{metric: [K] array}`` -> ``{"<member>/<metric>": float}`` (sweeps) or floats."""
    if not names:
        return {k: float(v) for k, v in values.items()}
    return {f"{name}/{k}": float(v[i]) for k, v in values.items() for i, name in enumerate(names)}


def _write_json(path: str, payload: dict) -> None:
    """Process 0 writes ``payload`` to ``path`` atomically (a temporary file, then rename)."""
    if jax.process_index() == 0:
        with open(f"{path}.tmp", "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=2, sort_keys=True)
        os.replace(f"{path}.tmp", path)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Train ``config.num_train_steps`` steps (resuming if possible), then evaluate.

    Writes ``workdir/checkpoints/``, TensorBoard events, ``metrics.jsonl``, ``config.json`` and
    ``eval_results.json`` (the returned final metrics, plus ``train_step_compilations`` /
    ``eval_step_compilations``). ``config.sweep``: all members in one step; returns the best
    member's metrics plus the sweep summary. SIGTERM (:mod:`jaxdet.train.preemption`) saves the
    step and returns ``{"preempted": True, "step": s}``. Recompilation after
    ``config.recompile_after_steps`` warns or fails by ``config.recompile_policy``. Raises
    :class:`NonFiniteLossError` past ``config.max_nonfinite_steps`` consecutive bad steps.
    """
    workdir_lib.check_same_run(config, workdir)  # before anything in the workdir is touched
    os.makedirs(workdir, exist_ok=True)
    task = tasks.get_task(config.task)
    mesh = step_lib.make_mesh()
    local_batch = pipeline.per_process_batch_size(config.batch_size, mesh)
    pipeline.per_process_batch_size(config.eval_batch_size, mesh, "config.eval_batch_size")
    train_source, eval_source = split_sources(task, config)
    _write_json(os.path.join(workdir, workdir_lib.CONFIG_FILE), workdir_lib.config_as_json(config))

    members = sweep_lib.sweep_members(config)
    names = [sweep_lib.member_name(m) for m in members]
    state = initial_state(
        task, config, mesh, preprocess_fn(task, config)(train_source[0]),
        num_members=len(members),
    )
    train_iter = iter(
        pipeline.train_dataset(
            train_source, preprocess_fn(task, config), local_batch, seed=config.seed,
            num_workers=int(config.data.get("num_workers", 0)))
    )
    ckpt = checkpointing.Checkpointer(
        os.path.join(workdir, "checkpoints"), config.checkpoint_every_steps,
        config.get("keep_checkpoints", 3),
    )
    restored = ckpt.restore_latest(state, set_aside_unreadable=True)
    if restored is not None:
        state, data_state = restored
        if data_state.get("sweep", []) != names:
            raise workdir_lib.WorkdirMismatchError(
                f"{ckpt.directory} holds a run of the sweep members {data_state.get('sweep', [])}"
                f", not {names}: use a new workdir for a different config.sweep"
            )
        train_iter.set_state(data_state["train"])
        log.info("resumed from step %d in %s", int(np.max(state.step)), ckpt.directory)
    elif workdir_lib.has_checkpoints(workdir):  # checkpoints, none readable: never train over
        ckpt.close()
        raise workdir_lib.WorkdirMismatchError(
            f"no checkpoint in {ckpt.directory} can be restored (the warnings above say why); "
            "move the workdir aside or use a new --workdir")

    schedule = state_lib.learning_rate_schedule(config)
    train_step = make_train_step(task, config, mesh, state_lib.make_optimizer(config), members)
    eval_step = make_eval_step(task, config, mesh, len(members))
    start = int(np.max(state.step))
    total = int(config.num_train_steps)
    if jax.process_index() == 0:  # rows the resumed run writes again are not kept twice
        metric_writing.forget_rows_after(os.path.join(workdir, "metrics.jsonl"), start,
                                         reevaluated=start >= total)
    writer = metric_writing.create_writer(workdir)
    # Per member: a member past config.max_nonfinite_steps non-finite steps in a row has failed
    # (its updates are skipped in the step); training stops when every member has failed.
    max_nonfinite = int(config.get("max_nonfinite_steps", 0))
    consecutive_nonfinite = np.zeros(max(len(members), 1), np.int64)
    failed = np.zeros(len(members), bool)
    history: list[dict[str, float]] = []
    bar = tqdm.tqdm(
        total=total, initial=start, desc="train", unit="step", dynamic_ncols=True,
        disable=jax.process_index() != 0 or not config.get("progress_bar", True),
    )
    train_seconds, steps_since = 0.0, 0  # steps/s: input + step only (no eval, no saving)
    watch = preemption.PreemptionWatch(sync_point=ckpt.reached_preemption)
    preempted_at = None
    guard = compile_guard.CompilationGuard(config.get("recompile_policy", "warn"),
                                           config.get("recompile_after_steps", 1))
    try:
        for step in range(start + 1, total + 1):
            t_step = time.perf_counter()
            batch = pipeline.to_global_batch(next(train_iter), mesh)
            state, metrics = train_step(state, batch)
            guard.check_train(train_step, step, start)
            metrics = jax.device_get(metrics)
            train_seconds += time.perf_counter() - t_step
            bad = np.atleast_1d(metrics["nonfinite"]) > 0
            consecutive_nonfinite = np.where(bad, consecutive_nonfinite + 1, 0)
            loss = np.atleast_1d(metrics["loss"])
            headline = float(np.nanmin(loss)) if np.isfinite(loss).any() else float("nan")
            metrics = _flatten_members(metrics, names)
            if np.all(consecutive_nonfinite > max_nonfinite):
                raise NonFiniteLossError(
                    f"non-finite loss or gradient at step {step} (loss={loss.tolist()}); "
                    f"{consecutive_nonfinite.min()} in a row, config.max_nonfinite_steps="
                    f"{max_nonfinite}. The update was not applied and the last good "
                    f"checkpoint (step {ckpt.latest_step()}) is intact."
                )
            if members:
                failed |= consecutive_nonfinite > max_nonfinite
            history.append(metrics)
            steps_since += 1
            bar.update(1)
            bar.set_postfix(loss=f"{headline:.4f}")
            if step % config.log_every_steps == 0 or step == total:
                means = {k: float(np.mean([h[k] for h in history])) for k in history[0]}
                means["steps_per_sec"] = steps_since / max(train_seconds, 1e-9)
                means["learning_rate"] = float(schedule(step - 1))
                means["nonfinite_total"] = float(np.sum(state.nonfinite_count))
                writer.write_scalars(step, {f"train/{k}": v for k, v in means.items()})
                history, train_seconds, steps_since = [], 0.0, 0
            data_state = {"train": train_iter.get_state(), "sweep": names}
            if watch.reached(step):  # SIGTERM (on any process): save this step and stop
                ckpt.save(step, state, data_state, force=True)
                preempted_at = step
                break
            ckpt.save(step, state, data_state, force=step == total)
            if config.eval_every_steps and step % config.eval_every_steps == 0 and step != total:
                results = evaluate(task, config, state, eval_source, mesh, eval_step, members)
                guard.check("eval_step", eval_step, step)
                _write_eval(writer, step, results, names)
                _write_pictures(writer, task, config, state, eval_source, step, members)
                bar.write(f"step {step}: " + _format_eval(results, names))
    finally:
        watch.close()
        bar.close()
        ckpt.close()
        getattr(train_iter, "close", lambda: None)()  # input worker processes, if any
    if preempted_at is not None:
        writer.flush()
        writer.close()
        log.warning("preempted: saved step %d in %s", preempted_at, ckpt.directory)
        return {"preempted": True, "step": preempted_at}
    final_step = int(np.max(state.step))
    results = evaluate(task, config, state, eval_source, mesh, eval_step, members,
                       results_dir=workdir)
    guard.check("eval_step", eval_step, final_step)
    _write_eval(writer, final_step, results, names)
    _write_pictures(writer, task, config, state, eval_source, final_step, members)
    writer.flush()
    writer.close()
    if members:
        results = _finish_sweep(
            task, config, workdir, state, members, results, final_step,
            {"train": train_iter.get_state(), "sweep": []}, failed.tolist(),
        )
    results["step"] = final_step
    # compilations of this process's steps (1 each unless a shape changed; see compile_guard)
    results.update({f"{name}_compilations": n for name, n in guard.counts.items()})
    _write_json(os.path.join(workdir, "eval_results.json"), results)
    log.info("final evaluation at step %d: %s", final_step, format_results(results))
    return results


def prediction_pictures(task: core.Task, config: ml_collections.ConfigDict, state: Any,
                        source: Any, count: int) -> list[Any]:
    """PIL pictures of the task's predictions (``task.draw_predictions``) on the first ``count``
    examples of ``source`` with the host copy of a single run's ``state``."""
    model = task.create_model(config, bn_axis_name=None)
    batch = next(pipeline.eval_batches(source, preprocess_fn(task, config), count, 0, 1,
                                       limit=count))
    state = jax.device_get(state)
    return task.draw_predictions(model, state.params, state.batch_stats, batch, config)


def _write_pictures(writer, task, config, state, source, step: int, members) -> None:
    """``config.tensorboard_images`` prediction pictures to TensorBoard (one process, one run)."""
    count = int(config.get("tensorboard_images", 0))
    if not count or members or jax.process_count() > 1:
        return
    pictures = prediction_pictures(task, config, state, source, count)
    writer.write_images(step, {"eval/predictions": np.asarray(
        visualize.stack_vertically(pictures).convert("RGB"))})


def _write_eval(writer, step: int, results: Any, names: list[str]) -> None:
    if not names:
        writer.write_scalars(step, {f"eval/{k}": v for k, v in results.items()})
        return
    rows = zip(names, results, strict=True)
    writer.write_scalars(step, {f"eval/{n}/{k}": v for n, r in rows for k, v in r.items()})


def _format_eval(results: Any, names: list[str]) -> str:
    if not names:
        return format_results(results)
    return "; ".join(f"[{n}] {format_results(r)}" for n, r in zip(names, results, strict=True))


def _finish_sweep(
    task, config, workdir, state, members, member_results, step, data_state, failed
) -> dict[str, Any]:
    """Save the best non-failed member (task's validation metric) as a single run in
    ``workdir/best/`` (checkpoint and equivalent ``config.json``); returns its metrics plus
    ``best_member``, ``best``, ``selected_by`` and ``members`` (values, metrics, ``failed``).
    """
    metric = task.PRIMARY_METRIC
    higher = task.PRIMARY_METRIC_HIGHER_IS_BETTER
    candidates = [r if not f else {} for r, f in zip(member_results, failed, strict=True)]
    ranked = [i for i, r in enumerate(candidates) if r]
    best = ranked[sweep_lib.best_member([candidates[i] for i in ranked], metric, higher)]
    best_dir = os.path.join(workdir, "best")
    os.makedirs(best_dir, exist_ok=True)
    best_config = sweep_lib.member_config(config, members[best])
    _write_json(os.path.join(best_dir, "config.json"),
                json.loads(best_config.to_json_best_effort()))
    ckpt = checkpointing.Checkpointer(os.path.join(best_dir, "checkpoints"), save_every=1)
    try:
        ckpt.save(step, sweep_lib.unstack(state, best), data_state, force=True)
    finally:
        ckpt.close()
    summary = {
        "selected_by": metric,
        "best_member": best,
        "best": sweep_lib.member_name(members[best]),
        "members": [
            {"name": sweep_lib.member_name(m), "values": m, "failed": f, **r}
            for m, r, f in zip(members, member_results, failed, strict=True)
        ],
    }
    return {**member_results[best], **summary}


def format_results(results: dict[str, Any]) -> str:
    """One line with the headline metrics (per-class values and sweep details left out)."""
    keys = [k for k in results if "/" not in k and isinstance(results[k], int | float)]
    line = ", ".join(f"{k}={results[k]:.4f}" for k in keys if k != "best_member")
    if "best" in results:
        line += f" (best of the sweep: {results['best']}, by {results['selected_by']})"
    return line
