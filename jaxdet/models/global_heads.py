"""Image-level heads on a backbone: classification + localisation and joint regression.

``outputs = model.apply(variables, images, train=train, mutable=...)``: images float32
``[B, H, W, 3]`` in [0, 1] -> ``{head name: float32 [B, dim]}``. A backbone map is pooled
(``"flatten"`` keeps position, needed for regression; ``"avg"`` drops it; ``"flatten_avg"``
concatenates both), then one hidden dense layer, then a linear head per output.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdet.core import ConfigError
from jaxdet.models import resnet, vgg

POOL_MODES = ("flatten", "avg", "flatten_avg")
BACKBONES = ("resnet", "vgg")

_he_init = nn.initializers.variance_scaling(2.0, "fan_in", "truncated_normal")


class GlobalHeadsNet(nn.Module):
    """backbone -> map ``feature`` -> ``pool`` -> [dense(``hidden``) + relu] -> linear ``heads``.

    ``backbone``: maps ``[B, H, W, 3]`` images in [0, 1] to ``{"C2": ..., "C5": ...}`` (called
    with ``train=``, normalising its own input); ``heads``: ``((name, dim), ...)``; ``hidden``: 0
    for none. ValueError for an unknown ``pool`` or ``feature``.
    """

    backbone: nn.Module
    heads: tuple[tuple[str, int], ...]
    hidden: int = 256
    pool: str = "flatten"
    feature: str = "C5"

    @nn.compact
    def __call__(self, images: jax.Array, *, train: bool) -> dict[str, jax.Array]:
        features = self.backbone(images.astype(jnp.float32), train=train)
        if self.feature not in features:
            raise ConfigError(f"model.feature={self.feature!r}; backbone gives {sorted(features)}")
        x = features[self.feature].astype(jnp.float32)
        if self.pool == "flatten":
            x = x.reshape(x.shape[0], -1)
        elif self.pool == "avg":
            x = x.mean(axis=(1, 2))
        elif self.pool == "flatten_avg":
            x = jnp.concatenate([x.reshape(x.shape[0], -1), x.mean(axis=(1, 2))], axis=-1)
        else:
            raise ConfigError(f"model.pool={self.pool!r}; expected one of {list(POOL_MODES)}")
        if self.hidden:
            x = nn.relu(nn.Dense(self.hidden, kernel_init=_he_init, name="hidden")(x))
        return {
            name: nn.Dense(dim, name=f"head_{name}")(x).astype(jnp.float32)
            for name, dim in self.heads
        }


def create_backbone(model_config: Mapping[str, Any], bn_axis_name: str | None) -> nn.Module:
    """The backbone named by ``model_config.backbone``: "resnet" or "vgg" (else ValueError).

    Fields: :func:`jaxdet.models.resnet.create_resnet` (``depth``, ``width``, ``stem``, ``norm``,
    ``input_norm``, ...) or :func:`jaxdet.models.vgg.create_vgg` (``vgg_widths``, ``vgg_convs``).
    """
    name = model_config.get("backbone", "resnet")
    if name == "resnet":
        return resnet.create_resnet(model_config, bn_axis_name=bn_axis_name)
    if name == "vgg":
        return vgg.create_vgg(model_config, bn_axis_name=bn_axis_name)
    raise ConfigError(f"model.backbone={name!r}; expected one of {list(BACKBONES)}")


def create_model(
    model_config: Mapping[str, Any], heads: tuple[tuple[str, int], ...],
    bn_axis_name: str | None = None,
) -> GlobalHeadsNet:
    """:class:`GlobalHeadsNet` from a flat ``model`` config section and the task's heads."""
    pool = model_config.get("pool", "flatten")
    if pool not in POOL_MODES:
        raise ConfigError(f"model.pool={pool!r}; expected one of {list(POOL_MODES)}")
    return GlobalHeadsNet(
        backbone=create_backbone(model_config, bn_axis_name),
        heads=tuple(heads),
        hidden=int(model_config.get("hidden", 256)),
        pool=pool,
        feature=model_config.get("feature", "C5"),
    )
