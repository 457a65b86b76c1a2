"""A small VGG-style backbone with the ResNet backbones' output contract.

Images float ``[B, H, W, 3]`` in [0, 1] -> ``{"C2": [B, H/4, W/4, w2], ...}``. Stage ``s``
(1-based) is ``n_s`` x (3x3 conv ``conv{s}_{j}`` -> norm ``bn{s}_{j}`` -> ReLU) and a 2x2
stride-2 max-pool: stride ``2**s`` (odd sides floored), returned as ``"C{s}"`` for ``s >= 2``.
Five stages give C2..C5 (strides 4..32), four end at C4. Norm, dtype and input normalisation
as :class:`jaxdet.models.resnet.ResNet` (bias-free convs, He fan-out init).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax

from jaxdet.core import ConfigError
from jaxdet.models.resnet import NormSettings, compute_dtype, normalize_input


class SmallVGG(NormSettings):
    """conv-norm-relu x ``n_s`` + 2x2 max-pool per stage.

    ``stage_widths``: channels per stage (2 to 5 stages); ``convs_per_stage``: ``>= 1``, one
    number or one per stage (VGG-11: ``(1, 1, 2, 2, 2)``); ValueError otherwise. Other fields as
    :class:`resnet.ResNet`.
    """

    stage_widths: tuple[int, ...] = (16, 32, 64, 128, 256)
    convs_per_stage: int | tuple[int, ...] = 1
    input_norm: str = "imagenet"

    def stage_convs(self) -> tuple[int, ...]:
        """Conv layers of each stage, after checking the configuration."""
        num_stages = len(self.stage_widths)
        if not 2 <= num_stages <= 5:
            raise ConfigError(
                f"backbone.stage_widths={tuple(self.stage_widths)}: 2 to 5 stages needed"
            )
        convs = self.convs_per_stage
        convs = (convs,) * num_stages if isinstance(convs, int) else tuple(convs)
        if len(convs) != num_stages or min(convs) < 1:
            raise ConfigError(
                f"backbone.convs_per_stage={self.convs_per_stage}: one number >= 1, or one per "
                f"stage ({num_stages})"
            )
        return tuple(int(n) for n in convs)

    def output_strides(self) -> dict[str, int]:
        """``{"C2": 4, ..., "C{S}": 2**S}`` for ``S`` stages."""
        self.stage_convs()
        return {f"C{s}": 2**s for s in range(2, len(self.stage_widths) + 1)}

    def output_channels(self) -> dict[str, int]:
        """``{"C{s}": stage_widths[s - 1]}`` for ``s >= 2``."""
        self.stage_convs()
        widths = self.stage_widths
        return {f"C{s}": int(widths[s - 1]) for s in range(2, len(widths) + 1)}

    @nn.compact
    def __call__(self, images: jax.Array, *, train: bool) -> dict[str, jax.Array]:
        convs = self.stage_convs()
        x = normalize_input(images, self.input_norm)
        features = {}
        for s, (width, n) in enumerate(zip(self.stage_widths, convs, strict=True), start=1):
            for j in range(1, n + 1):
                x = self.conv_norm_relu(x, int(width), 3, 1, f"{s}_{j}", train=train)
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
            if s >= 2:
                features[f"C{s}"] = x
        return features


def create_vgg(model_config: Mapping[str, Any], bn_axis_name: str | None = None) -> SmallVGG:
    """:class:`SmallVGG` from a flat ``model`` config section (other keys are ignored).

    Fields (default): ``vgg_widths`` ((16, 32, 64, 128, 256)), ``vgg_convs`` (1, or one per stage),
    ``norm`` ("batch"), ``bn_momentum`` (0.9), ``gn_groups`` (32), ``input_norm`` ("imagenet"),
    ``dtype`` (None or e.g. "bfloat16").
    """
    get = model_config.get
    convs = get("vgg_convs", 1)
    return SmallVGG(
        stage_widths=tuple(int(w) for w in get("vgg_widths", (16, 32, 64, 128, 256))),
        convs_per_stage=int(convs) if isinstance(convs, int) else tuple(int(n) for n in convs),
        norm=get("norm", "batch"),
        bn_momentum=float(get("bn_momentum", 0.9)),
        gn_groups=int(get("gn_groups", 32)),
        input_norm=get("input_norm", "imagenet"),
        dtype=compute_dtype(get("dtype", None)),
        bn_axis_name=bn_axis_name,
    )
