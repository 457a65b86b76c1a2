"""ResNet backbones (torchvision layout) returning the C2..C5 feature maps.

Usage::

    features = backbone.apply(variables, images, train=train, mutable=...)
    # images: float [B, H, W, 3] in [0, 1]
    # features: {"C2": [B, H/4, W/4, c2], "C3": .../8, "C4": .../16, "C5": .../32}

Spatial sizes follow torchvision's explicit symmetric padding (``k // 2``), so a side ``n``
becomes ``floor((n - 1) / s) + 1`` at each stride-``s`` layer (exactly ``n / s`` for multiples
of 32). ``"C{i+2}"`` is the output of stage ``layer{i+1}``; a backbone with fewer than four
stages (explicit ``stage_sizes``) returns fewer keys. Strides with ``stem="imagenet"``: C2 4,
C3 8, C4 16, C5 32; with ``stem="small"`` (no stride-2 conv, no max-pool): C2 1, C3 2, C4 4,
C5 8 (see :meth:`ResNet.output_strides`). Channels: ``width * 2**i`` for basic blocks,
``4 * width * 2**i`` for bottlenecks (:meth:`ResNet.output_channels`; 64..512 and 256..2048 for
torchvision's ``width=64``). Features are in the compute ``dtype`` (float32 when None).

Parameter tree (mirrors torchvision's ``resnet18/34/50`` so a state_dict maps 1:1)
------------------------------------------------------------------------------------
``conv1``, ``bn1``, then blocks ``layer{s}_{j}`` (torchvision ``layer{s}.{j}``) with ``conv1``,
``bn1``, ``conv2``, ``bn2`` (+ ``conv3``, ``bn3`` in a bottleneck) and, where the block changes
shape, ``downsample_conv`` / ``downsample_bn`` (torchvision ``downsample.0`` / ``downsample.1``).
Bottlenecks are torchvision's "v1.5": the 3x3 ``conv2`` carries the stride, not the 1x1
``conv1``. No fully connected layer (torchvision's ``fc``). Mapping: conv ``weight``
``[out, in, kh, kw]`` -> ``kernel`` ``[kh, kw, in, out]``; norm ``weight`` -> ``scale``,
``bias`` -> ``bias``, ``running_mean`` -> ``mean``, ``running_var`` -> ``var``
(``num_batches_tracked`` has no counterpart). Norm layers keep the ``bn*`` names whatever
``norm`` is.

Where the norm variables live
  ``norm="batch"``: ``scale``/``bias`` in ``params``, ``mean``/``var`` in ``batch_stats``
  (pass ``mutable=["batch_stats"]`` when ``train=True``; ``bn_axis_name`` names the mapped
  axis for cross-device statistics, as in :mod:`jaxdet.models.segmentation`).
  ``norm="frozen"``: torchvision's ``FrozenBatchNorm2d``: ``y = (x - mean) * scale /
  sqrt(var + eps) + bias`` with all four in ``batch_stats`` (buffers, not parameters:
  never trained nor weight-decayed, never updated), identical for ``train`` True and False.
  ``norm="group"``: GroupNorm (``gcd(gn_groups, channels)`` groups), ``scale``/``bias`` in
  ``params``, no ``batch_stats``.
  ``eps`` is 1e-5 everywhere (torchvision's). ``bn_momentum=0.9`` is torchvision's
  ``momentum=0.1``. (Flax updates the running variance with the biased batch variance,
  PyTorch with the unbiased one: a factor ``n / (n - 1)`` per update, negligible for
  large batches.)

Initialisation follows torchvision: convs ``kaiming_normal_(mode="fan_out")`` (normal, std
``sqrt(2 / (k * k * out))``), norm scale 1 and bias 0; ``zero_init_residual`` sets the scale
of each block's last norm (``bn2`` basic, ``bn3`` bottleneck) to 0 so that blocks start as
identities.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

NORM_MODES = ("batch", "frozen", "group")
STEM_MODES = ("imagenet", "small")
BLOCK_TYPES = ("basic", "bottleneck")
INPUT_NORM_MODES = ("imagenet", "symmetric", "none")

# depth -> (blocks per stage, block type): torchvision's resnet18 / resnet34 / resnet50.
RESNET_PRESETS: dict[int, tuple[tuple[int, ...], str]] = {
    18: ((2, 2, 2, 2), "basic"),
    34: ((3, 4, 6, 3), "basic"),
    50: ((3, 4, 6, 3), "bottleneck"),
}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BN_EPSILON = 1e-5

# torchvision: nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu").
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _choose(field: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"backbone.{field}={value!r} is not one of {list(allowed)}")
    return value


def normalize_input(images: jax.Array, mode: str) -> jax.Array:
    """float ``[B, H, W, 3]`` in [0, 1] -> float32 model input.

    ``"imagenet"``: ``(x - mean) / std`` with torchvision's ImageNet statistics (what its
    pretrained weights expect); ``"symmetric"``: ``2x - 1`` (the segmentation models'
    convention); ``"none"``: unchanged (the caller normalised already).
    """
    x = images.astype(jnp.float32)
    mode = _choose("input_norm", mode, INPUT_NORM_MODES)
    if mode == "imagenet":
        mean = jnp.asarray(IMAGENET_MEAN, jnp.float32)
        std = jnp.asarray(IMAGENET_STD, jnp.float32)
        return (x - mean) / std
    if mode == "symmetric":
        return x * 2.0 - 1.0
    return x


class FrozenBatchNorm(nn.Module):
    """torchvision's ``FrozenBatchNorm2d``: BatchNorm with fixed statistics and affine.

    ``[..., C] -> [..., C]``: ``y = x * s + (bias - mean * s)``, ``s = scale / sqrt(var + eps)``
    (torchvision's arithmetic, in float32, then applied in ``dtype``). ``scale``, ``bias``,
    ``mean`` and ``var`` (float32 ``[C]``, initialised 1, 0, 0, 1, or scale 0 with
    ``zero_scale``) live in the ``batch_stats`` collection and are never updated.
    """

    epsilon: float = BN_EPSILON
    zero_scale: bool = False
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        scale_init = jnp.zeros if self.zero_scale else jnp.ones
        scale = self.variable("batch_stats", "scale", scale_init, (c,), jnp.float32).value
        bias = self.variable("batch_stats", "bias", jnp.zeros, (c,), jnp.float32).value
        mean = self.variable("batch_stats", "mean", jnp.zeros, (c,), jnp.float32).value
        var = self.variable("batch_stats", "var", jnp.ones, (c,), jnp.float32).value
        s = scale * jax.lax.rsqrt(var + self.epsilon)
        b = bias - mean * s
        dtype = self.dtype if self.dtype is not None else jnp.promote_types(x.dtype, jnp.float32)
        return x.astype(dtype) * s.astype(dtype) + b.astype(dtype)


class NormSettings(nn.Module):
    """Conv/norm settings shared by the backbones and their blocks (a mixin, no __call__)."""

    norm: str = "batch"
    bn_momentum: float = 0.9
    gn_groups: int = 32
    bn_axis_name: str | None = None
    dtype: Any = None

    def conv(
        self, x: jax.Array, features: int, kernel_size: int, strides: int, name: str
    ) -> jax.Array:
        """Bias-free conv with torchvision's symmetric ``k // 2`` padding and init."""
        pad = kernel_size // 2
        return nn.Conv(
            features,
            (kernel_size, kernel_size),
            strides=(strides, strides),
            padding=((pad, pad), (pad, pad)),
            use_bias=False,
            kernel_init=conv_init,
            dtype=self.dtype,
            name=name,
        )(x)

    def normalize(
        self, x: jax.Array, name: str, *, train: bool, zero_scale: bool = False
    ) -> jax.Array:
        """Norm layer ``name`` over the channel axis (see the module docstring)."""
        kind = _choose("norm", self.norm, NORM_MODES)
        scale_init = nn.initializers.zeros if zero_scale else nn.initializers.ones
        if kind == "batch":
            return nn.BatchNorm(
                use_running_average=not train,
                axis_name=self.bn_axis_name,
                momentum=self.bn_momentum,
                epsilon=BN_EPSILON,
                dtype=self.dtype,
                scale_init=scale_init,
                name=name,
            )(x)
        if kind == "frozen":
            return FrozenBatchNorm(zero_scale=zero_scale, dtype=self.dtype, name=name)(x)
        return nn.GroupNorm(
            num_groups=math.gcd(self.gn_groups, x.shape[-1]),
            epsilon=BN_EPSILON,
            dtype=self.dtype,
            scale_init=scale_init,
            name=name,
        )(x)

    def conv_norm_relu(
        self, x: jax.Array, features: int, kernel_size: int, strides: int, index: str, *,
        train: bool,
    ) -> jax.Array:
        """``conv{index}`` -> ``bn{index}`` -> ReLU."""
        x = self.conv(x, features, kernel_size, strides, f"conv{index}")
        return nn.relu(self.normalize(x, f"bn{index}", train=train))

    def shortcut(self, x: jax.Array, out: int, strides: int, *, train: bool) -> jax.Array:
        """Identity, or ``downsample_conv`` (1x1, stride) + ``downsample_bn`` (torchvision's
        rule: when ``strides != 1`` or the channels change)."""
        if strides == 1 and x.shape[-1] == out:
            return x
        x = self.conv(x, out, 1, strides, "downsample_conv")
        return self.normalize(x, "downsample_bn", train=train)


class BasicBlock(NormSettings):
    """ResNet-18/34 block: 3x3 (stride) -> 3x3, plus the (projected) input, then ReLU.

    ``[B, H, W, Cin] -> [B, H', W', features]`` with ``H' = floor((H - 1) / strides) + 1``.
    The shortcut is ``downsample_conv`` (1x1, stride) + ``downsample_bn`` when ``strides != 1``
    or ``Cin != features``, else the identity.
    """

    expansion = 1
    features: int = 64
    strides: int = 1
    zero_init_residual: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        y = self.conv_norm_relu(x, self.features, 3, self.strides, "1", train=train)
        y = self.conv(y, self.features, 3, 1, "conv2")
        y = self.normalize(y, "bn2", train=train, zero_scale=self.zero_init_residual)
        return nn.relu(y + self.shortcut(x, self.features, self.strides, train=train))


class Bottleneck(NormSettings):
    """ResNet-50 block (torchvision v1.5): 1x1 -> 3x3 (stride) -> 1x1 (x4 channels).

    ``[B, H, W, Cin] -> [B, H', W', 4 * features]`` with ``H' = floor((H - 1) / strides) + 1``;
    shortcut as in :class:`BasicBlock`.
    """

    expansion = 4
    features: int = 64
    strides: int = 1
    zero_init_residual: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        out = self.features * self.expansion
        y = self.conv_norm_relu(x, self.features, 1, 1, "1", train=train)
        y = self.conv_norm_relu(y, self.features, 3, self.strides, "2", train=train)
        y = self.conv(y, out, 1, 1, "conv3")
        y = self.normalize(y, "bn3", train=train, zero_scale=self.zero_init_residual)
        return nn.relu(y + self.shortcut(x, out, self.strides, train=train))


_BLOCKS: dict[str, type[BasicBlock] | type[Bottleneck]] = {
    "basic": BasicBlock,
    "bottleneck": Bottleneck,
}


class ResNet(NormSettings):
    """ResNet backbone: ``images [B, H, W, 3] -> {"C2": ..., "C5": ...}`` (module docstring).

    Fields:
      depth: 18, 34 or 50 (torchvision's presets); ignored when ``stage_sizes`` is given.
      stage_sizes: blocks per stage (1 to 4 stages), e.g. ``(1, 1, 1, 1)``; needs ``block``.
      block: "basic" or "bottleneck"; empty means the preset's (must match it if given).
      width: channels of the stem and of the first stage (torchvision: 64; CPU demos: 8-16).
      stem: "imagenet" (7x7 stride-2 conv, 3x3 stride-2 max-pool) or "small" (3x3 stride-1
        conv, no pool: for tiny images).
      norm: "batch", "frozen" or "group"; bn_momentum, gn_groups, bn_axis_name as described.
      zero_init_residual: initialise each block's last norm scale to 0.
      frozen_stages: 0 (all trained), 1 (the stem frozen) or 1 + k (the stem and the first
        k stages frozen; torchvision's ``trainable_layers=3`` is 2): their outputs pass through
        ``stop_gradient``, so they get zero gradients and no backward pass; pair it with
        :func:`is_frozen` in the optimizer so that weight decay leaves them alone too.
      dtype: compute dtype (e.g. ``jnp.bfloat16``); parameters stay float32.
      input_norm: "imagenet", "symmetric" or "none" (:func:`normalize_input`).
    """

    depth: int = 18
    stage_sizes: tuple[int, ...] = ()
    block: str = ""
    width: int = 64
    stem: str = "imagenet"
    zero_init_residual: bool = False
    input_norm: str = "imagenet"
    frozen_stages: int = 0

    def stages(self) -> tuple[tuple[int, ...], str]:
        """(blocks per stage, block type) after resolving ``depth``/``stage_sizes``/``block``."""
        if self.stage_sizes:
            sizes = tuple(int(n) for n in self.stage_sizes)
            if not self.block:
                raise ValueError("backbone.block must be given with backbone.stage_sizes")
            if not 1 <= len(sizes) <= 4 or min(sizes) < 1:
                raise ValueError(
                    f"backbone.stage_sizes={sizes}: 1 to 4 stages of at least one block each"
                )
            return sizes, _choose("block", self.block, BLOCK_TYPES)
        if self.depth not in RESNET_PRESETS:
            raise ValueError(
                f"backbone.depth={self.depth!r} is not one of {sorted(RESNET_PRESETS)}; "
                "give stage_sizes and block for other layouts"
            )
        sizes, block = RESNET_PRESETS[self.depth]
        if self.block and self.block != block:
            raise ValueError(
                f"backbone.block={self.block!r} contradicts depth {self.depth} ({block!r}); "
                "use stage_sizes for a custom layout"
            )
        return sizes, block

    def output_strides(self) -> dict[str, int]:
        """``{"C2": 4, "C3": 8, ...}`` (imagenet stem) or ``{"C2": 1, "C3": 2, ...}`` (small)."""
        sizes, _ = self.stages()
        first = 4 if _choose("stem", self.stem, STEM_MODES) == "imagenet" else 1
        return {f"C{i + 2}": first * 2**i for i in range(len(sizes))}

    def output_channels(self) -> dict[str, int]:
        """``{"C2": width * e, "C3": 2 * width * e, ...}``, ``e`` = 1 (basic) or 4."""
        sizes, block = self.stages()
        e = _BLOCKS[block].expansion
        return {f"C{i + 2}": self.width * 2**i * e for i in range(len(sizes))}

    @nn.compact
    def __call__(self, images: jax.Array, *, train: bool) -> dict[str, jax.Array]:
        sizes, block = self.stages()
        stem = _choose("stem", self.stem, STEM_MODES)
        x = normalize_input(images, self.input_norm)
        if stem == "imagenet":
            x = self.conv_norm_relu(x, self.width, 7, 2, "1", train=train)
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        else:
            x = self.conv_norm_relu(x, self.width, 3, 1, "1", train=train)
        if not 0 <= self.frozen_stages <= len(sizes) + 1:
            raise ValueError(f"backbone.frozen_stages={self.frozen_stages}; expected 0 .. "
                             f"{len(sizes) + 1} (the stem, then one per stage)")
        if self.frozen_stages >= 1:
            x = jax.lax.stop_gradient(x)
        block_cls = _BLOCKS[block]
        features = {}
        for i, num_blocks in enumerate(sizes):
            for j in range(num_blocks):
                x = block_cls(
                    features=self.width * 2**i,
                    strides=2 if (i > 0 and j == 0) else 1,
                    zero_init_residual=self.zero_init_residual,
                    norm=self.norm,
                    bn_momentum=self.bn_momentum,
                    gn_groups=self.gn_groups,
                    bn_axis_name=self.bn_axis_name,
                    dtype=self.dtype,
                    name=f"layer{i + 1}_{j}",
                )(x, train=train)
            if i + 2 <= self.frozen_stages:
                x = jax.lax.stop_gradient(x)
            features[f"C{i + 2}"] = x
        return features


_STAGE_NAME = re.compile(r"layer(\d+)_\d+")
_PARAM_LEAVES = ("kernel", "bias", "scale", "mean", "var")


def is_frozen(path: tuple[str, ...], frozen_stages: int) -> bool:
    """Whether the parameter at ``path`` (names from the root of a variables tree, e.g.
    ``("body", "layer1_0", "conv1", "kernel")``) lies in a ResNet part that ``frozen_stages``
    freezes: the stem (``conv1`` / ``bn1`` directly under the ResNet) when ``>= 1``, stage
    ``layer{k}_*`` when ``k + 1 <= frozen_stages``."""
    for i, name in enumerate(path):
        stage = _STAGE_NAME.fullmatch(name)
        if stage:
            return int(stage.group(1)) + 1 <= frozen_stages
        if (name in ("conv1", "bn1") and frozen_stages >= 1 and i + 2 == len(path)
                and path[-1] in _PARAM_LEAVES):
            return True
    return False


def compute_dtype(value: Any) -> Any:
    """A config's ``dtype`` (None, "" or a name such as "bfloat16") -> a dtype or None."""
    return jnp.dtype(value) if value else None


def truncated_config(model_config: Mapping[str, Any], num_stages: int) -> dict[str, Any]:
    """``model_config`` with only its first ``num_stages`` stages (outputs C2..C{num_stages+1}),
    the stage sizes and block taken from :data:`RESNET_PRESETS` when not given."""
    config = dict(model_config)
    if not config.get("stage_sizes"):
        config["stage_sizes"], config["block"] = RESNET_PRESETS[int(config.get("depth", 18))]
    config["stage_sizes"] = tuple(config["stage_sizes"])[:num_stages]
    return config


def create_resnet(model_config: Mapping[str, Any], bn_axis_name: str | None = None) -> ResNet:
    """:class:`ResNet` from a flat ``model`` config section (other keys are ignored).

    Fields (default): ``depth`` (18; any value, e.g. 0, when ``stage_sizes`` is given),
    ``stage_sizes`` (()), ``block`` (""), ``width`` (64), ``stem`` ("imagenet"), ``norm``
    ("batch"), ``bn_momentum`` (0.9), ``gn_groups`` (32), ``zero_init_residual`` (False),
    ``frozen_stages`` (0),
    ``input_norm`` ("imagenet": the model expects images in [0, 1]), ``dtype`` (None or a
    name such as "bfloat16").
    """
    get = model_config.get
    return ResNet(
        depth=int(get("depth", 18)),
        stage_sizes=tuple(int(n) for n in get("stage_sizes", ())),
        block=get("block", ""),
        width=int(get("width", 64)),
        stem=get("stem", "imagenet"),
        norm=get("norm", "batch"),
        bn_momentum=float(get("bn_momentum", 0.9)),
        gn_groups=int(get("gn_groups", 32)),
        zero_init_residual=bool(get("zero_init_residual", False)),
        input_norm=get("input_norm", "imagenet"),
        frozen_stages=int(get("frozen_stages", 0)),
        dtype=compute_dtype(get("dtype", None)),
        bn_axis_name=bn_axis_name,
    )


def backbone_fields(model: Any, bn_axis_name: str | None = None) -> dict[str, Any]:
    """The constructor fields every detector module takes from ``config.model``: ``backbone``
    (the whole section as a dict: the ResNet fields and anything else the module reads),
    ``bn_axis_name`` and the compute ``dtype`` (``model.dtype``; ``""`` or absent: float32)."""
    return {"backbone": model.to_dict() if hasattr(model, "to_dict") else dict(model),
            "bn_axis_name": bn_axis_name,
            "dtype": compute_dtype(model.get("dtype", None))}
