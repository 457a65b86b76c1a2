"""Train state (step, params, batch_stats, opt_state), replicated over the mesh, and the
optimizer built from ``config.optimizer``.
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxdet.core import ConfigError
from jaxdet.models import resnet


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training: ``step`` (int32, updates applied), ``params``
    (float32 pytree), ``batch_stats`` (``{}`` without BatchNorm), ``opt_state``,
    ``nonfinite_count`` (int32, updates skipped for a non-finite loss or gradient).
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    nonfinite_count: jax.Array


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
    """Schedule from ``config.optimizer`` (``learning_rate`` peak, ``schedule`` in {"constant",
    "cosine", "step"}, ``warmup_steps`` linear, "step": ``decay_steps``, ``decay_factor``) and
    ``config.num_train_steps``; ValueError on another schedule.
    """
    opt = config.optimizer
    total = int(config.num_train_steps)
    warmup = int(opt.get("warmup_steps", 0))
    peak = float(opt.learning_rate)
    kind = opt.get("schedule", "constant")
    if kind == "constant":
        main = optax.constant_schedule(peak)
    elif kind == "cosine":
        main = optax.cosine_decay_schedule(peak, max(total - warmup, 1))
    elif kind == "step":
        boundaries = {int(s) - warmup: float(opt.decay_factor) for s in opt.decay_steps}
        main = optax.piecewise_constant_schedule(peak, boundaries)
    else:
        raise ConfigError(
            f"config.optimizer.schedule={kind!r}; expected one of 'constant', 'cosine', 'step'"
        )
    if warmup == 0:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), main], [warmup])


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """Optimizer from ``config.optimizer``.

    ``name`` in {"sgd", "momentum", "adam", "adamw"}; ``momentum`` (0.9), ``nesterov`` (True);
    ``weight_decay`` (default 0, "adamw" 1e-4): coupled L2 added to the gradients (torch.optim's)
    except "adamw" (decoupled); ``grad_clip_norm`` (0 = off) clips the global norm first.
    ``config.model.frozen_stages``: frozen ResNet parameters get no update (no decay either), as
    torchvision's ``requires_grad=False``. ValueError on unknown name or negative decay.
    """
    opt = config.optimizer
    schedule = learning_rate_schedule(config)
    name = opt.name
    decay = float(opt.get("weight_decay", 1e-4 if name == "adamw" else 0.0))
    if decay < 0:
        raise ConfigError(f"config.optimizer.weight_decay={decay}; expected >= 0")
    if name == "sgd":
        tx = optax.sgd(schedule)
    elif name == "momentum":
        tx = optax.sgd(schedule, momentum=float(opt.get("momentum", 0.9)),
                       nesterov=bool(opt.get("nesterov", True)))
    elif name == "adam":
        tx = optax.adam(schedule)
    elif name == "adamw":
        tx = optax.adamw(schedule, weight_decay=decay)
    else:
        raise ConfigError(
            f"config.optimizer.name={name!r}; expected one of 'sgd', 'momentum', 'adam', 'adamw'"
        )
    if decay > 0 and name != "adamw":
        tx = optax.chain(optax.add_decayed_weights(decay), tx)
    clip = float(opt.get("grad_clip_norm", 0.0))
    if clip > 0:
        tx = optax.chain(optax.clip_by_global_norm(clip), tx)
    frozen = int(config.get("model", {}).get("frozen_stages", 0))
    if frozen:
        def labels(params):
            return jax.tree_util.tree_map_with_path(
                lambda path, _: "frozen" if resnet.is_frozen(
                    tuple(str(getattr(k, "key", k)) for k in path), frozen) else "trained",
                params)
        tx = optax.multi_transform({"trained": tx, "frozen": optax.set_to_zero()}, labels)
    return tx


def create_train_state(
    variables: dict[str, Any], optimizer: optax.GradientTransformation
) -> TrainState:
    """Initial state at step 0 from Flax ``variables`` ({"params": ..., "batch_stats": ...})."""
    params = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=optimizer.init(params),
        nonfinite_count=jnp.zeros((), jnp.int32),
    )
