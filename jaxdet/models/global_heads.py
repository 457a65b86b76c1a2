"""Image-level heads on a backbone: classification + localisation and joint regression.

The "classification + localisation" network: a CNN backbone, its last feature map
flattened (or averaged), one hidden fully connected layer, then one linear head per output
(class scores, 4 box numbers, 2K joint coordinates).

    outputs = model.apply(variables, images, train=train, mutable=...)
    # images: float32 [B, H, W, 3] in [0, 1] -> {head name: float32 [B, dim]}

``pool="flatten"`` keeps where things are (what box regression needs); ``"avg"`` (global
average pooling) throws position away and suits classification only; ``"flatten_avg"``
concatenates both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdet.models import resnet, vgg

POOL_MODES = ("flatten", "avg", "flatten_avg")
BACKBONES = ("resnet", "vgg")

_he_init = nn.initializers.variance_scaling(2.0, "fan_in", "truncated_normal")


class GlobalHeadsNet(nn.Module):
    """backbone -> feature map ``feature`` -> pool -> [dense(hidden) + relu] -> linear heads.

    Attributes:
      backbone: a module mapping ``[B, H, W, 3]`` images in ``[0, 1]`` to a dict of feature
        maps (``{"C2": ..., "C5": ...}``), called with ``train=``; it normalises its input
        (``model.input_norm``, see :mod:`jaxdet.models.resnet`).
      heads: ``((name, dim), ...)``: one linear output of ``dim`` numbers per name.
      hidden: width of the hidden fully connected layer (0: none).
      pool: "flatten" or "avg" (see the module docstring).
      feature: which backbone map feeds the heads.
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
            raise ValueError(f"model.feature={self.feature!r}; backbone gives {sorted(features)}")
        x = features[self.feature].astype(jnp.float32)
        if self.pool == "flatten":
            x = x.reshape(x.shape[0], -1)
        elif self.pool == "avg":
            x = x.mean(axis=(1, 2))
        elif self.pool == "flatten_avg":
            x = jnp.concatenate([x.reshape(x.shape[0], -1), x.mean(axis=(1, 2))], axis=-1)
        else:
            raise ValueError(f"model.pool={self.pool!r}; expected one of {list(POOL_MODES)}")
        if self.hidden:
            x = nn.relu(nn.Dense(self.hidden, kernel_init=_he_init, name="hidden")(x))
        return {
            name: nn.Dense(dim, name=f"head_{name}")(x).astype(jnp.float32)
            for name, dim in self.heads
        }


def create_backbone(model_config: Mapping[str, Any], bn_axis_name: str | None) -> nn.Module:
    """The backbone named by ``model_config.backbone`` ("resnet" or "vgg").

    resnet fields: ``depth`` (18/34/50, or 0 with ``stage_sizes`` and ``block``), ``width``,
    ``stem`` ("imagenet"/"small"), ``norm``, ``input_norm``. vgg fields: ``vgg_widths`` (stage
    ``s`` gives ``"C{s}"`` at stride ``2**s``), ``vgg_convs``, ``norm``, ``input_norm``. See
    :func:`jaxdet.models.resnet.create_resnet` and :func:`jaxdet.models.vgg.create_vgg`.
    """
    name = model_config.get("backbone", "resnet")
    if name == "resnet":
        return resnet.create_resnet(model_config, bn_axis_name=bn_axis_name)
    if name == "vgg":
        return vgg.create_vgg(model_config, bn_axis_name=bn_axis_name)
    raise ValueError(f"model.backbone={name!r}; expected one of {list(BACKBONES)}")


def create_model(
    model_config: Mapping[str, Any], heads: tuple[tuple[str, int], ...],
    bn_axis_name: str | None = None,
) -> GlobalHeadsNet:
    """:class:`GlobalHeadsNet` from a flat ``model`` config section and the task's heads."""
    pool = model_config.get("pool", "flatten")
    if pool not in POOL_MODES:
        raise ValueError(f"model.pool={pool!r}; expected one of {list(POOL_MODES)}")
    return GlobalHeadsNet(
        backbone=create_backbone(model_config, bn_axis_name),
        heads=tuple(heads),
        hidden=int(model_config.get("hidden", 256)),
        pool=pool,
        feature=model_config.get("feature", "C5"),
    )
