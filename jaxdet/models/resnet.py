"""ResNet backbones (torchvision layout) returning the C2..C5 feature maps.

``backbone.apply(variables, images, train=train, mutable=...)``: images float ``[B, H, W, 3]``
in [0, 1] -> ``{"C2": [B, H/4, W/4, c2], ..., "C5": [B, H/32, W/32, c5]}`` in the compute
``dtype`` (float32 when None); ``"C{i+2}"`` is stage ``layer{i+1}``'s output, a side ``n``
becoming ``floor((n - 1) / s) + 1`` per stride-``s`` layer (symmetric ``k // 2`` padding). See
:meth:`ResNet.output_strides` and :meth:`ResNet.output_channels`.

Parameters mirror torchvision's ``resnet18/34/50`` 1:1: ``conv1``, ``bn1``, blocks
``layer{s}_{j}`` (``layer{s}.{j}``) with ``conv1``, ``bn1``, ``conv2``, ``bn2`` (+ ``conv3``,
``bn3``) and ``downsample_conv`` / ``downsample_bn`` (``downsample.0`` / ``.1``); no ``fc``.
Bottlenecks are "v1.5" (stride on the 3x3 ``conv2``). Conv ``weight [out, in, kh, kw]`` ->
``kernel [kh, kw, in, out]``; norm ``weight``, ``bias``, ``running_mean``, ``running_var`` ->
``scale``, ``bias``, ``mean``, ``var``; norm layers keep the ``bn*`` names for every ``norm``.

Norms (``eps`` 1e-5): ``"batch"``: ``scale``/``bias`` in ``params``, ``mean``/``var`` in
``batch_stats`` (``mutable=["batch_stats"]`` when training; ``bn_axis_name`` for cross-device
statistics; ``bn_momentum=0.9`` is torchvision's 0.1; Flax's running variance uses the biased
batch variance). ``"frozen"``: :class:`FrozenBatchNorm`. ``"group"``: GroupNorm,
``gcd(gn_groups, channels)`` groups. Init as torchvision: convs
``kaiming_normal_(mode="fan_out")``, norm scale 1, bias 0 (0 scale on each block's last norm
with ``zero_init_residual``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdet.core import ConfigError
from jaxdet.models.conv import SameConv
from jaxdet.ops.conv import WINOGRAD_MIN_CHANNELS

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
        raise ConfigError(f"backbone.{field}={value!r} is not one of {list(allowed)}")
    return value


def normalize_input(images: jax.Array, mode: str) -> jax.Array:
    """Float ``[B, H, W, 3]`` in [0, 1] -> float32 model input.

    ``"imagenet"``: ``(x - mean) / std``, torchvision's ImageNet statistics; ``"symmetric"``:
    ``2x - 1``; ``"none"``: unchanged.
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
    """torchvision's ``FrozenBatchNorm2d``, ``[..., C] -> [..., C]``.

    ``y = x * s + (bias - mean * s)``, ``s = scale / sqrt(var + eps)`` computed in float32, applied
    in ``dtype``. Float32 ``[C]`` ``scale``, ``bias``, ``mean``, ``var`` (init 1, 0, 0, 1; scale 0
    with ``zero_scale``) live in ``batch_stats`` and are never updated.
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
        """Bias-free conv with torchvision's symmetric ``k // 2`` padding and init (wide
        stride-1 3x3 convs through :class:`~jaxdet.models.conv.SameConv`: Winograd on CPU)."""
        if (kernel_size == 3 and strides == 1 and x.shape[-1] >= WINOGRAD_MIN_CHANNELS
                and features >= WINOGRAD_MIN_CHANNELS):
            return SameConv(features, (3, 3), use_bias=False, kernel_init=conv_init,
                            dtype=self.dtype, name=name)(x)
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
        """Identity, or ``downsample_conv`` (1x1, stride) + ``downsample_bn`` when
        ``strides != 1`` or the channels change (torchvision's rule).
        """
        if strides == 1 and x.shape[-1] == out:
            return x
        x = self.conv(x, out, 1, strides, "downsample_conv")
        return self.normalize(x, "downsample_bn", train=train)


class BasicBlock(NormSettings):
    """ResNet-18/34 block, ``[B, H, W, Cin] -> [B, H', W', features]``: 3x3 (stride) -> 3x3,
    plus :meth:`NormSettings.shortcut`, then ReLU; ``H' = floor((H - 1) / strides) + 1``.
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
    """ResNet-50 block (v1.5), ``-> [B, H', W', 4 * features]``: 1x1 -> 3x3 (stride) -> 1x1,
    shortcut and ``H'`` as :class:`BasicBlock`.
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
    """ResNet backbone, ``images [B, H, W, 3] -> {"C2": ..., "C5": ...}`` (see the module).

    ``depth``: 18, 34 or 50, unless ``stage_sizes`` (1 to 4 stages, e.g. ``(1, 1, 1, 1)``) and
    ``block`` ("basic" or "bottleneck"; empty: the preset's, which a given one must match) are
    given. ``width``: stem and first-stage channels (torchvision: 64). ``stem``: "imagenet" (7x7
    stride-2 conv, 3x3 stride-2 max-pool; strides 4..32) or "small" (3x3 stride-1 conv; strides
    1..8). ``frozen_stages``: 0, 1 (the stem) or 1 + k (and the first k stages; torchvision's
    ``trainable_layers=3`` is 2) get ``stop_gradient`` (use :func:`is_frozen` to exempt them from
    weight decay). ``dtype``: compute dtype (parameters stay float32); ``input_norm``:
    :func:`normalize_input`'s mode; norm fields: see the module.
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
                raise ConfigError("backbone.block must be given with backbone.stage_sizes")
            if not 1 <= len(sizes) <= 4 or min(sizes) < 1:
                raise ConfigError(
                    f"backbone.stage_sizes={sizes}: 1 to 4 stages of at least one block each"
                )
            return sizes, _choose("block", self.block, BLOCK_TYPES)
        if self.depth not in RESNET_PRESETS:
            raise ConfigError(
                f"backbone.depth={self.depth!r} is not one of {sorted(RESNET_PRESETS)}; "
                "give stage_sizes and block for other layouts"
            )
        sizes, block = RESNET_PRESETS[self.depth]
        if self.block and self.block != block:
            raise ConfigError(
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
            raise ConfigError(f"backbone.frozen_stages={self.frozen_stages}; expected 0 .. "
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

    Fields (default): ``depth`` (18; any value, e.g. 0, with ``stage_sizes``), ``stage_sizes``
    (()), ``block`` (""), ``width`` (64), ``stem`` ("imagenet"), ``norm`` ("batch"),
    ``bn_momentum`` (0.9), ``gn_groups`` (32), ``zero_init_residual`` (False), ``frozen_stages``
    (0), ``input_norm`` ("imagenet"; images in [0, 1]), ``dtype`` (None or e.g. "bfloat16").
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
