"""How every task feeds a batch to its Flax model: :func:`model_input`, :func:`init_variables`,
:func:`apply_model`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def model_input(batch: Mapping[str, jax.Array]) -> jax.Array:
    """uint8 ``batch["image"]`` ``[B, H, W, 3]`` -> float32 in [0, 1]."""
    return batch["image"].astype(jnp.float32) / 255.0


def init_variables(model: nn.Module, rng: jax.Array, batch: Mapping[str, jax.Array]) -> Any:
    """The variables of a model that takes only the images (``batch["image"]``)."""
    return model.init(rng, model_input(batch), train=False)


def apply_model(
    model: nn.Module, params: Any, batch_stats: Any, images: jax.Array, train: bool
) -> tuple[Any, Any]:
    """``(outputs, batch_stats)`` of the model on ``images``; in training with BatchNorm the updated
    statistics (``mutable``), else the given ones.
    """
    variables = {"params": params}
    if batch_stats:
        variables["batch_stats"] = batch_stats
    if train and batch_stats:
        outputs, updates = model.apply(variables, images, train=True, mutable=["batch_stats"])
        return outputs, updates["batch_stats"]
    return model.apply(variables, images, train=train), batch_stats
