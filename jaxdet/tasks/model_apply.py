"""How every task feeds a batch to its Flax model (shared by the task modules).

``model_input``: uint8 images ``[B, H, W, 3]`` -> float32 in ``[0, 1]``.
``init_variables``: a model's initial variables from a batch of images.
``apply_model``: one forward pass; in training with BatchNorm it also returns the updated
``batch_stats`` (``mutable``), otherwise the ones it was given.
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
    """``(outputs, batch_stats)``: the model on ``images``, with updated statistics in training."""
    variables = {"params": params}
    if batch_stats:
        variables["batch_stats"] = batch_stats
    if train and batch_stats:
        outputs, updates = model.apply(variables, images, train=True, mutable=["batch_stats"])
        return outputs, updates["batch_stats"]
    return model.apply(variables, images, train=train), batch_stats
