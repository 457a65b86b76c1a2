"""Convolution blocks shared by the segmentation models (Flax linen, NHWC).

:func:`pixel_classifier` is the final 1x1 conv (float32 scores, parameters ``classifier``).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdet.core import ConfigError
from jaxdet.models import upsampling

NORM_MODES = ("batch", "group")


he_init = nn.initializers.variance_scaling(2.0, "fan_in", "truncated_normal")


def choose(field: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ConfigError(f"model.{field}={value!r} is not one of {list(allowed)}")
    return value


def scale_input(images: jax.Array) -> jax.Array:
    """float32 [B, H, W, 3] in [0, 1] -> [-1, 1]."""
    return images.astype(jnp.float32) * 2.0 - 1.0


class ConvNormAct(nn.Module):
    """conv (no bias) -> BatchNorm/GroupNorm -> ReLU, ``[B, H, W, Cin] -> [B, H', W', F]``.

    ``linear=True``: the conv only. ``transpose=True``:
    :func:`jaxdet.models.upsampling.transpose_conv` (``H' = H * strides``, kernel ``[k, k, Cin,
    F]``); else ``nn.Conv`` SAME (``H' = ceil(H / strides)``).
    """

    features: int
    kernel_size: int = 3
    strides: int = 1
    transpose: bool = False
    linear: bool = False
    norm: str = "batch"
    bn_momentum: float = 0.9
    gn_groups: int = 8
    bn_axis_name: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        k = self.kernel_size
        if self.transpose:
            kernel = self.param("kernel", he_init, (k, k, x.shape[-1], self.features))
            x = upsampling.transpose_conv(x, kernel, self.strides)
        else:
            x = nn.Conv(
                self.features,
                (k, k),
                strides=(self.strides, self.strides),
                padding="SAME",
                use_bias=False,
                kernel_init=he_init,
            )(x)
        if self.linear:
            return x
        if choose("norm", self.norm, NORM_MODES) == "batch":
            x = nn.BatchNorm(
                use_running_average=not train,
                axis_name=self.bn_axis_name,
                momentum=self.bn_momentum,
            )(x)
        else:
            x = nn.GroupNorm(num_groups=math.gcd(self.gn_groups, self.features))(x)
        return nn.relu(x)


class ConvNormMixin(nn.Module):
    """Norm settings shared by every model (a dataclass mixin, no __call__)."""

    norm: str = "batch"
    bn_momentum: float = 0.9
    gn_groups: int = 8
    bn_axis_name: str | None = None

    def block(self, features: int, kernel_size: int = 3, **kw: Any) -> ConvNormAct:
        return ConvNormAct(
            features,
            kernel_size,
            norm=self.norm,
            bn_momentum=self.bn_momentum,
            gn_groups=self.gn_groups,
            bn_axis_name=self.bn_axis_name,
            **kw,
        )


def pixel_classifier(num_classes: int) -> nn.Conv:
    return nn.Conv(num_classes, (1, 1), dtype=jnp.float32, name="classifier")
