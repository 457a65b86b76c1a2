"""One-program hyperparameter sweeps: K members trained and evaluated by one compiled step.

``config.sweep`` holds tuples of values (``--config.sweep.box_weight='(0.1, 1.0, 10.0)'``);
a field is a loss weight (``config.loss.<x>_weight`` or an entry of ``config.loss.weights``)
or ``learning_rate``; several fields make a grid; empty tuples: no sweep. Fields that change
the program are swept by separate runs (``experiments/sweeps/sweep.py``).

Members share the initial state (``config.seed``) and batches; their stacked states run
through :func:`jaxdet.train.step.make_hparam_train_step_body` by ``config.sweep_strategy``
``"vmap"``, ``"map"`` (``lax.map``) or ``"unroll"`` (compile time grows with K), with loss
weights and learning-rate factors traced. Member ``k`` reproduces the single run of its
values (tested); the member axis lives inside the device body.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from jax import lax

from jaxdet.core import ConfigError
from jaxdet.train import step as step_lib

STRATEGIES = ("vmap", "map", "unroll")

Member = dict[str, float]  # config path ("loss.box_weight") -> value


def _sweep_path(config: ml_collections.ConfigDict, field: str) -> str:
    if field == "learning_rate":
        return "optimizer.learning_rate"
    loss = config.get("loss", ml_collections.ConfigDict())
    if field.endswith("_weight") and field in loss:
        return f"loss.{field}"
    if field in loss.get("weights", {}):
        return f"loss.weights.{field}"
    weights = sorted([k for k in loss if k.endswith("_weight")] + list(loss.get("weights", {})))
    raise ConfigError(
        f"config.sweep.{field}: not a loss weight of config.loss ({weights}) nor "
        "'learning_rate'; other fields are swept by separate runs (experiments/sweeps/sweep.py)"
    )


def sweep_members(config: ml_collections.ConfigDict) -> list[Member]:
    """The grid of ``config.sweep`` as ``[{config path: value}]`` (``[]``: no sweep). ValueError,
    naming ``config.sweep.<field>``, for a field that is no loss weight, a non-number or a
    repeated value, and for an unknown ``sweep_strategy``.
    """
    sweep = config.get("sweep")
    if not sweep:
        return []
    strategy = config.get("sweep_strategy", "vmap")
    if strategy not in STRATEGIES:
        raise ConfigError(f"config.sweep_strategy={strategy!r}; expected one of {list(STRATEGIES)}")
    axes = []
    for field in sorted(sweep.keys()):
        values = sweep[field]
        if values is None or (isinstance(values, Sequence) and len(values) == 0):
            continue
        if isinstance(values, str) or not isinstance(values, Sequence):
            raise ConfigError(
                f"config.sweep.{field}={values!r}: expected a tuple of numbers, e.g. '(0.1, 1.0)'"
            )
        numbers = []
        for v in values:
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise ConfigError(
                    f"config.sweep.{field}={tuple(values)!r}: {v!r} is not a number"
                )
            numbers.append(float(v))
        if len(set(numbers)) != len(numbers):
            raise ConfigError(f"config.sweep.{field}={tuple(values)!r} repeats a value")
        axes.append([(_sweep_path(config, field), v) for v in numbers])
    if not axes:
        return []
    return [dict(combo) for combo in itertools.product(*axes)]


def member_config(config: ml_collections.ConfigDict, member: Member) -> ml_collections.ConfigDict:
    """``config`` with the member's values set and no sweep: the equivalent single run."""
    out = copy.deepcopy(config)
    with out.unlocked():
        for path, value in member.items():
            *parents, leaf = path.split(".")
            node = out
            for p in parents:
                node = node[p]
            node[leaf] = value
        if "sweep" in out:
            for field in out.sweep.keys():
                out.sweep[field] = ()
    return out


def member_name(member: Member) -> str:
    """Short label, e.g. ``box_weight=0.1,learning_rate=0.001``."""
    return ",".join(f"{path.rsplit('.', 1)[-1]}={value:g}" for path, value in member.items())


def stacked_hparams(
    config: ml_collections.ConfigDict,
    members: list[Member],
    loss_weights: Callable[[ml_collections.ConfigDict], Mapping[str, float]],
) -> dict[str, Any]:
    """Every member's hparams stacked: ``{"loss_weights": {term: float32 [K]}, "lr_scale": float32
    [K]}`` (member's rate over ``config``'s); ``loss_weights(config)`` is the task's mapping.
    """
    base_lr = float(config.optimizer.learning_rate)
    if base_lr <= 0:
        raise ConfigError("config.optimizer.learning_rate must be > 0 to sweep learning rates")
    per_member = [member_config(config, m) for m in members]
    terms = sorted(loss_weights(per_member[0]))
    return {
        "loss_weights": {
            t: jnp.asarray([float(loss_weights(c)[t]) for c in per_member], jnp.float32)
            for t in terms
        },
        "lr_scale": jnp.asarray(
            [float(c.optimizer.learning_rate) / base_lr for c in per_member], jnp.float32
        ),
    }


def stack(tree: Any, num_members: int) -> Any:
    """``num_members`` copies of every leaf along a new leading axis."""
    return step_lib.replicate(tree, num_members)


def unstack(tree: Any, index: int) -> Any:
    """Member ``index`` of a stacked pytree."""
    return jax.tree.map(lambda x: x[index], tree)


def _over_members(fn: Callable, strategy: str, members_args: tuple, shared_args: tuple):
    if strategy == "vmap":
        in_axes = (0,) * len(members_args) + (None,) * len(shared_args)
        return jax.vmap(fn, in_axes=in_axes)(*members_args, *shared_args)
    if strategy == "map":
        return lax.map(lambda a: fn(*a, *shared_args), members_args)
    if strategy == "unroll":
        num = jax.tree.leaves(members_args)[0].shape[0]
        outs = [fn(*unstack(members_args, k), *shared_args) for k in range(num)]
        return jax.tree.map(lambda *xs: jnp.stack(xs), *outs)
    raise ConfigError(f"config.sweep_strategy={strategy!r}; expected one of {list(STRATEGIES)}")


def make_sweep_train_body(hparam_body: Callable, hparams: Mapping[str, Any], strategy: str):
    """``body(states, batch) -> (states, metrics [K])`` over stacked states; ``hparams``
    (:func:`stacked_hparams`) are constants of the program.
    """
    def body(states, batch):
        return _over_members(
            lambda s, h, b: hparam_body(s, b, h), strategy, (states, hparams), (batch,)
        )

    return body


def make_sweep_eval_body(eval_body: Callable, strategy: str):
    """``body(states, accumulators, batch)`` over stacked states and accumulators."""
    def body(states, accumulators, batch):
        return _over_members(eval_body, strategy, (states, accumulators), (batch,))

    return body


def best_member(results: list[dict[str, float]], metric: str, higher_is_better: bool = True) -> int:
    """Index of the member with the best validation ``metric`` (never the loss value)."""
    if not results:
        raise ValueError("no sweep members")
    missing = [i for i, r in enumerate(results) if metric not in r]
    if missing:
        raise ValueError(f"validation metric {metric!r} missing for members {missing}")
    values = [float(r[metric]) for r in results]
    pick = max if higher_is_better else min
    return values.index(pick(values))
