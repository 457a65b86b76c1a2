"""The per-device train and eval steps, written as pmap bodies, and their wrappers.

A body sees its device's shard of the global batch and talks to the other devices only through
collectives over the named axis :data:`AXIS_NAME`. It is device-count independent:

* every loss term is a *global* mean: the task returns a ``(sum, count)`` pair per term, the
  body divides the local sum by ``psum(count)`` and the gradients are ``psum``-ed, so the update
  equals the gradient of the mean over the whole global batch, however it is split;
* randomness comes from ``fold_in(base_rng, step)``; tasks that need per-example randomness fold
  in the global example index ``batch["index"]`` — never the device index;
* BatchNorm statistics are cross-device (the model's ``bn_axis_name`` is :data:`AXIS_NAME`).

The body is wrapped by :func:`shard_map_step` (``jax.shard_map`` over a 1-D mesh, what
``jax.pmap`` compiles to since JAX 0.8) for training, and can be wrapped by :func:`pmap_step`
(tests check both give equal results). ``check_vma=False`` is deliberate: with replication
checking on, the gradient w.r.t. the replicated params is already summed over the axis and the
body's own ``psum`` would make the update N× too large (see NOTES.md).
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
    """Builds ``body(state, batch) -> (new_state, metrics)`` for one device's shard.

    Args:
      loss_fn: ``(params, batch_stats, batch, rng) -> LossOutput``.
      optimizer: the optax transformation the state's ``opt_state`` belongs to.
      loss_weights: weight of each loss term (a term missing here has weight 1.0).
      base_rng: PRNG key; the step's key is ``fold_in(base_rng, state.step)``.
      axis_name: the named device axis.

    Returns:
      The body. Its metrics are replicated scalars: ``loss`` (weighted total), ``loss/<term>``
      (global mean of each term), the task's metrics (global means), ``grad_norm``, and
      ``nonfinite`` (1.0 when this step's update was
      skipped because the loss or a gradient was not finite).
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
    """Like :func:`make_train_step_body`, with the hyperparameters an argument of the body.

    ``body(state, batch, hparams)``: ``hparams["loss_weights"]`` maps loss terms to weights
    (missing terms weigh 1.0) and ``hparams["lr_scale"]`` (None = 1) multiplies the optimizer's
    update, which for the optimizers of :func:`jaxdet.train.state.make_optimizer` is the same
    as multiplying the learning rate. Both may be traced arrays, so that ``jax.vmap`` over
    stacked states and hparams trains several sweep members in one program
    (:mod:`jaxdet.train.sweep`).
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
        grads = lax.psum(grads, axis_name)
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
    """Builds ``body(state, accumulator, batch) -> accumulator + psum(eval_fn(...))``.

    ``eval_fn(params, batch_stats, batch)`` returns additive statistics (e.g. a confusion
    matrix) over the *valid* examples of the shard (``batch["mask"]``); the accumulator lives on
    device for the whole split and is read once at the end.
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
    """Wraps a body with ``jax.shard_map`` over ``mesh`` and ``jax.jit``.

    The first ``num_replicated`` arguments (state, accumulators) are replicated (``P()``); the
    last argument is the global batch, split along its leading axis. Outputs are replicated.
    The returned step counts its compilations (:mod:`jaxdet.train.compile_guard`).
    """
    in_specs = (PartitionSpec(),) * num_replicated + (PartitionSpec(AXIS_NAME),)

    def wrap(fn: Callable) -> Callable:
        mapped = jax.shard_map(
            fn, mesh=mesh, in_specs=in_specs, out_specs=PartitionSpec(), check_vma=False
        )
        return jax.jit(mapped, donate_argnums=(0,) if donate else ())

    return compile_guard.count_compilations(body, wrap)


def predict_step(predict_fn: Callable, mesh: Mesh) -> compile_guard.CountedStep:
    """``jit(shard_map(...))`` of ``predict_fn(params, batch_stats, batch) -> per-example
    outputs`` taking ``(state, global batch)``; outputs stay split over the mesh axis like the
    batch (no collective)."""

    def body(state: TrainState, batch):
        return predict_fn(state.params, state.batch_stats, batch)

    return compile_guard.count_compilations(body, lambda fn: jax.jit(jax.shard_map(
        fn, mesh=mesh, in_specs=(PartitionSpec(), PartitionSpec(AXIS_NAME)),
        out_specs=PartitionSpec(AXIS_NAME), check_vma=False,
    )))


def pmap_step(body: Callable):
    """Wraps the same body with ``jax.pmap`` (legacy path, kept to test equality).

    Replicated arguments need a leading device axis (see :func:`replicate`) and the batch the
    shape ``[num_devices, per_device_batch, ...]``; outputs have a leading device axis.
    """
    return jax.pmap(body, axis_name=AXIS_NAME)


def replicate(tree: Any, num_devices: int) -> Any:
    """Stacks ``num_devices`` copies of every leaf along a new leading axis (for pmap)."""
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (num_devices, *jnp.shape(x))), tree)
