"""Feature Pyramid Network over a backbone's C2..C5 maps (torchvision's FPN, NHWC).

``FPN(out_channels)({"C2": ..., "C5": ...})`` -> ``{"P2": ..., "P5": ..., "P6": ...}``, any
contiguous ``C{k}`` subset in, ``P{k}`` at ``C{k}``'s stride: a 1x1 lateral conv
(``inner_blocks_{i}``, ``i = 0`` finest) plus the coarser result upsampled 2x (repeat, then
crop: torchvision's size-matched ``nearest`` for even sizes and the ResNet's odd ones), then a
3x3 conv (``layer_blocks_{i}``); ``P6 = P5[:, ::2, ::2]`` (``LastLevelMaxPool``) with
``extra_max_pool``. Parameters map 1:1 to torchvision's ``backbone.fpn.inner_blocks.{i}.0`` /
``layer_blocks.{i}.0``; init ``kaiming_uniform_(a=1)``, bias 0.
"""

from __future__ import annotations

from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdet.models.conv import SameConv

_KAIMING_UNIFORM_A1 = nn.initializers.variance_scaling(1.0, "fan_in", "uniform")


def level_keys(features: Mapping[str, jax.Array], prefix: str = "C") -> list[str]:
    """The ``prefix{k}`` keys of ``features`` sorted by level, checked to be contiguous."""
    levels = sorted(int(k[len(prefix):]) for k in features if k.startswith(prefix))
    if not levels or levels != list(range(levels[0], levels[0] + len(levels))):
        raise ValueError(f"need contiguous {prefix}k feature levels, got {sorted(features)}")
    return [f"{prefix}{k}" for k in levels]


def upsample_to(x: jax.Array, height: int, width: int) -> jax.Array:
    """Nearest 2x upsampling of ``[B, h, w, C]`` cropped to ``[B, height, width, C]``."""
    y = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    if y.shape[1] < height or y.shape[2] < width:
        raise ValueError(f"cannot upsample {x.shape} 2x to {height}x{width}")
    return y[:, :height, :width]


class FPN(nn.Module):
    """Top-down pyramid (see the module).

    ``out_channels``: of every ``P`` level (torchvision: 256); ``extra_max_pool``: add the
    stride-2 subsampled ``P`` level above the coarsest; ``dtype``: compute dtype (None: float32).
    """

    out_channels: int = 256
    extra_max_pool: bool = True
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, features: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
        keys = level_keys(features)

        def conv(name: str, kernel: int) -> SameConv:
            return SameConv(self.out_channels, (kernel, kernel),
                            kernel_init=_KAIMING_UNIFORM_A1, dtype=self.dtype, name=name)

        outputs: dict[str, jax.Array] = {}
        top = None
        for i in reversed(range(len(keys))):
            lateral = conv(f"inner_blocks_{i}", 1)(features[keys[i]])
            if top is not None:
                lateral = lateral + upsample_to(top, lateral.shape[1], lateral.shape[2])
            top = lateral
            outputs[f"P{keys[i][1:]}"] = conv(f"layer_blocks_{i}", 3)(lateral)
        if self.extra_max_pool:
            coarsest = int(keys[-1][1:])
            outputs[f"P{coarsest + 1}"] = outputs[f"P{coarsest}"][:, ::2, ::2]
        return dict(sorted(outputs.items(), key=lambda kv: int(kv[0][1:])))
