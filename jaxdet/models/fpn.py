"""Feature Pyramid Network over a backbone's C2..C5 maps (torchvision's FPN, NHWC).

``FPN(out_channels)({"C2": ..., "C5": ...})`` returns ``{"P2": ..., "P5": ..., "P6": ...}``:
for each input level a 1x1 lateral conv (``inner_blocks_{i}``) to ``out_channels``, added to
the 2x nearest-neighbour upsampled coarser result (top-down, coarsest first), then a 3x3 conv
(``layer_blocks_{i}``); ``P6`` is ``P5`` max-pooled with kernel 1, stride 2 (torchvision's
``LastLevelMaxPool``) when ``extra_max_pool`` is set. ``P{k}`` has the stride of ``C{k}``
(``P6``: twice ``P5``'s). Input ``C{k}`` keys may be any contiguous subset (e.g. only ``C4``
for a one-level pyramid).

Upsampling: torchvision interpolates to the lateral map's exact size (``nearest``), which for
sizes that are not multiples of the strides is not an exact 2x; here the coarser map is
repeated 2x and cropped to the lateral size, which equals torchvision's for every even size
and for odd sizes produced by the ResNet's ``floor((n - 1) / 2) + 1`` halving.

Parameter names follow torchvision's ``backbone.fpn.inner_blocks.{i}.0`` /
``backbone.fpn.layer_blocks.{i}.0`` (``i`` = 0 for the finest input level), so a state_dict
maps 1:1 (conv weight ``[out, in, kh, kw]`` -> kernel ``[kh, kw, in, out]``). Initialisation
as torchvision: ``kaiming_uniform_(a=1)`` (uniform, bound ``sqrt(3 / fan_in)``), bias 0.
"""

from __future__ import annotations

from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

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
    """Top-down pyramid; see the module docstring.

    Attributes:
      out_channels: channels of every ``P`` level (256 in torchvision's detectors).
      extra_max_pool: add ``P6`` = stride-2 subsampling of the coarsest level.
      dtype: compute dtype (None: float32).
    """

    out_channels: int = 256
    extra_max_pool: bool = True
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, features: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
        keys = level_keys(features)

        def conv(name: str, kernel: int) -> nn.Conv:
            return nn.Conv(self.out_channels, (kernel, kernel), padding=kernel // 2,
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
