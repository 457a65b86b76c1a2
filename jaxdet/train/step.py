"""Per-device train and eval step bodies and their ``shard_map`` / ``pmap`` wrappers.

A body sees its device's batch shard and communicates only via collectives over
:data:`AXIS_NAME`, independent of the device count: loss terms are global means (``(sum,
count)`` per term, local sum over ``psum(count)``, gradients ``psum``-ed); randomness is
``fold_in(base_rng, step)`` (per-example: fold in ``batch["index"]``, never the device);
BatchNorm statistics are cross-device. :func:`shard_map_step` uses ``check_vma=False``
deliberately: with replication checking the gradient of the replicated params is already
summed and the body's ``psum`` would scale the update by N (checked against ``jax.pmap``).
:func:`pmap_step` wraps the same body (tests check equality).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.sharding import Mesh, PartitionSpec

from jaxdet.core import AXIS_NAME, EvalFn, LossFn, SumCount
from jaxdet.train import compile_guard
from jaxdet.train.state import TrainState


def _global_mean(pair: SumCount, axis_name: str) -> jax.Array:
    total, count = pair
    count = lax.psum(lax.stop_gradient(count.astype(jnp.float32)), axis_name)
    return total / jnp.maximum(count, 1.0)


def _sum_over_devices(tree: Any, axis_name: str) -> Any:
    """``lax.psum``; on a one-device axis the tree itself (XLA:CPU would copy every leaf)."""
    return tree if lax.axis_size(axis_name) == 1 else lax.psum(tree, axis_name)


def _all_finite(tree: Any) -> jax.Array:
    leaves = jax.tree.leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


Hparams = Mapping[str, Any]  # {"loss_weights": {term: weight}, "lr_scale": scalar}


def make_train_step_body(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    loss_weights: Mapping[str, float],
    base_rng: jax.Array,
    axis_name: str = AXIS_NAME,
) -> Callable[[TrainState, Mapping[str, jax.Array]], tuple[TrainState, dict[str, jax.Array]]]:
    """``body(state, batch) -> (new_state, metrics)`` for one device's shard.

    ``loss_fn(params, batch_stats, batch, rng) -> LossOutput``; ``loss_weights`` per term
    (missing: 1.0); step key ``fold_in(base_rng, state.step)``. Metrics (replicated scalars):
    ``loss`` (weighted total), ``loss/<term>``, the task's metrics (global means), ``grad_norm``,
    ``nonfinite`` (1.0 when the update was skipped for a non-finite loss or gradient).
    """
    body = make_hparam_train_step_body(loss_fn, optimizer, base_rng, axis_name)
    hparams = {"loss_weights": {k: float(v) for k, v in loss_weights.items()}, "lr_scale": None}
    return lambda state, batch: body(state, batch, hparams)


def make_hparam_train_step_body(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    base_rng: jax.Array,
    axis_name: str = AXIS_NAME,
) -> Callable[[TrainState, Mapping[str, jax.Array], Hparams], tuple[TrainState, dict]]:
    """:func:`make_train_step_body` with ``body(state, batch, hparams)``:
    ``hparams["loss_weights"]`` (missing terms 1.0) and ``hparams["lr_scale"]`` (None = 1;
    multiplies the update, i.e. the learning rate for :func:`~jaxdet.train.state.make_optimizer`'s
    optimizers) may be traced, so ``jax.vmap`` trains stacked sweep members.
    """

    def body(state: TrainState, batch: Mapping[str, jax.Array], hparams: Hparams):
        rng = jax.random.fold_in(base_rng, state.step)
        weights = hparams["loss_weights"]

        def objective(params):
            out = loss_fn(params, state.batch_stats, batch, rng)
            means = {k: _global_mean(v, axis_name) for k, v in out.terms.items()}
            total = sum(weights.get(k, 1.0) * m for k, m in means.items())
            return total, (means, out)

        (total, (means, out)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        # Each device's `total` is its share of the global mean: the sums give the global values.
        grads = _sum_over_devices(grads, axis_name)
        total = lax.psum(total, axis_name)
        means = lax.psum(means, axis_name)
        extra = {k: lax.psum(_global_mean(v, axis_name), axis_name) for k, v in out.metrics.items()}

        updates, new_opt_state = optimizer.update(grads, state.opt_state, state.params)
        if hparams.get("lr_scale") is not None:
            scale = hparams["lr_scale"]
            updates = jax.tree.map(lambda u: (u * scale).astype(u.dtype), updates)
        new_params = optax.apply_updates(state.params, updates)
        finite = jnp.isfinite(total) & _all_finite(grads)
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
        new_state = state.replace(
            step=state.step + 1,
            params=keep(new_params, state.params),
            opt_state=keep(new_opt_state, state.opt_state),
            batch_stats=keep(out.batch_stats, state.batch_stats),
            nonfinite_count=state.nonfinite_count + (~finite).astype(jnp.int32),
        )
        metrics = {"loss": total, **{f"loss/{k}": v for k, v in means.items()}, **extra}
        metrics["grad_norm"] = optax.tree.norm(grads)
        metrics["nonfinite"] = (~finite).astype(jnp.float32)
        return new_state, metrics

    return body


def make_eval_step_body(
    eval_fn: EvalFn, axis_name: str = AXIS_NAME
) -> Callable[[TrainState, dict[str, jax.Array], Mapping[str, jax.Array]], dict[str, jax.Array]]:
    """``body(state, accumulator, batch) -> accumulator + psum(eval_fn(...))``; ``eval_fn`` returns
    additive statistics over the shard's valid (``batch["mask"]``) examples.
    """

    def body(state: TrainState, accumulator: dict[str, jax.Array], batch):
        stats = eval_fn(state.params, state.batch_stats, batch)
        stats = lax.psum(stats, axis_name)
        return jax.tree.map(jnp.add, accumulator, stats)

    return body


def make_mesh(devices: list[jax.Device] | None = None) -> Mesh:
    """1-D mesh over ``devices`` (default: all devices of all processes) named ``AXIS_NAME``."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (AXIS_NAME,))


def shard_map_step(body: Callable, mesh: Mesh, num_replicated: int = 1,
                   donate: bool = True) -> compile_guard.CountedStep:
    """``jax.jit(jax.shard_map(body))`` over ``mesh``: the first ``num_replicated`` arguments are
    replicated, the last (global batch) split along axis 0; outputs replicated; compilations
    counted (:mod:`jaxdet.train.compile_guard`).
    """
    in_specs = (PartitionSpec(),) * num_replicated + (PartitionSpec(AXIS_NAME),)

    def wrap(fn: Callable) -> Callable:
        mapped = jax.shard_map(
            fn, mesh=mesh, in_specs=in_specs, out_specs=PartitionSpec(), check_vma=False
        )
        return jax.jit(mapped, donate_argnums=(0,) if donate else ())

    return compile_guard.count_compilations(body, wrap)


def predict_step(predict_fn: Callable, mesh: Mesh) -> compile_guard.CountedStep:
    """``jit(shard_map(...))`` of ``predict_fn(params, batch_stats, batch)`` taking ``(state, global
    batch)``; per-example outputs stay split over the mesh like the batch.
    """

    def body(state: TrainState, batch):
        return predict_fn(state.params, state.batch_stats, batch)

    return compile_guard.count_compilations(body, lambda fn: jax.jit(jax.shard_map(
        fn, mesh=mesh, in_specs=(PartitionSpec(), PartitionSpec(AXIS_NAME)),
        out_specs=PartitionSpec(AXIS_NAME), check_vma=False,
    )))


def pmap_step(body: Callable):
    """``jax.pmap`` of the same body (legacy, for equality tests): replicated arguments with a
    leading device axis (:func:`replicate`), batch ``[num_devices, per_device, ...]``.
    """
    return jax.pmap(body, axis_name=AXIS_NAME)


def replicate(tree: Any, num_devices: int) -> Any:
    """Stacks ``num_devices`` copies of every leaf along a new leading axis (for pmap)."""
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (num_devices, *jnp.shape(x))), tree)
