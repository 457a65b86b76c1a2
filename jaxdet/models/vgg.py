"""A small VGG-style backbone with the ResNet backbones' output contract.

``features = model.apply(variables, images, train=train, mutable=...)``: images float
``[B, H, W, 3]`` in [0, 1] -> ``{"C2": [B, H/4, W/4, w2], ..., "C5": [B, H/32, W/32, w5]}``.

Stage ``s`` (1-based) is ``convs_per_stage`` x (3x3 conv ``conv{s}_{j}`` -> norm ``bn{s}_{j}``
-> ReLU) followed by a 2x2 stride-2 max-pool, so its output has stride ``2**s`` (floor division
of odd sides) and is returned as ``"C{s}"`` for ``s >= 2`` (the stride-2 stage-1 map is not
returned). With the default five stages that gives exactly ResNet's C2..C5 at strides 4..32;
fewer stages give fewer keys (at least two stages). Norm, dtype and input normalisation
options are those of :class:`jaxdet.models.resnet.ResNet` (``norm`` "batch", "frozen" or
"group"; convs bias-free, He fan-out init).
"""

from __future__ import annotations

import flax.linen as nn
import jax

from jaxdet.models.resnet import NormSettings, normalize_input


class SmallVGG(NormSettings):
    """conv-norm-relu x ``convs_per_stage`` + 2x2 max-pool per stage, ``stage_widths`` channels.

    Fields:
      stage_widths: channels of each stage (2 to 5 stages).
      convs_per_stage: 3x3 conv-norm-relu layers per stage (>= 1).
      input_norm: "imagenet", "symmetric" or "none" (:func:`resnet.normalize_input`).
      norm, bn_momentum, gn_groups, bn_axis_name, dtype: as in :class:`resnet.ResNet`.
    """

    stage_widths: tuple[int, ...] = (16, 32, 64, 128, 256)
    convs_per_stage: int = 1
    input_norm: str = "imagenet"

    def _check(self) -> None:
        if not 2 <= len(self.stage_widths) <= 5:
            raise ValueError(
                f"backbone.stage_widths={tuple(self.stage_widths)}: 2 to 5 stages needed"
            )
        if self.convs_per_stage < 1:
            raise ValueError(f"backbone.convs_per_stage={self.convs_per_stage} must be >= 1")

    def output_strides(self) -> dict[str, int]:
        """``{"C2": 4, ..., "C{S}": 2**S}`` for ``S`` stages."""
        self._check()
        return {f"C{s}": 2**s for s in range(2, len(self.stage_widths) + 1)}

    def output_channels(self) -> dict[str, int]:
        """``{"C{s}": stage_widths[s - 1]}`` for ``s >= 2``."""
        self._check()
        widths = self.stage_widths
        return {f"C{s}": int(widths[s - 1]) for s in range(2, len(widths) + 1)}

    @nn.compact
    def __call__(self, images: jax.Array, *, train: bool) -> dict[str, jax.Array]:
        self._check()
        x = normalize_input(images, self.input_norm)
        features = {}
        for s, width in enumerate(self.stage_widths, start=1):
            for j in range(1, self.convs_per_stage + 1):
                x = self.conv_norm_relu(x, int(width), 3, 1, f"{s}_{j}", train=train)
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
            if s >= 2:
                features[f"C{s}"] = x
        return features
