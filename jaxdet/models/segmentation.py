"""Semantic-segmentation models, every variant selectable by config.

``logits = model.apply(variables, images, train=train, mutable=...)``: images float32
``[B, H, W, 3]`` in [0, 1] (rescaled to [-1, 1] inside) -> float32 ``[B, H, W, num_classes]``;
:class:`SlidingWindowClassifier` returns ``[B, H // s, W // s, C]`` at its stride ``s``.
Parameters live in ``params``. ``norm="batch"`` keeps running statistics in ``batch_stats``
(``mutable=["batch_stats"]`` when ``train=True``) averaged over the mapped axis
``bn_axis_name`` (None for single-device use, evaluation and prediction; ``train=False`` never
uses it); ``norm="group"`` has no ``batch_stats`` and does not depend on the batch.

Config fields (a FLAT ``model`` section; defaults in :data:`DEFAULT_MODEL_FIELDS`):

* Common: ``name`` ("sliding_window", "fcn_full_res", "encoder_decoder", "pixel_colour");
  ``norm`` ("batch" or "group"); ``bn_momentum``; ``gn_groups`` (``gcd`` with the channels).
* encoder_decoder (:class:`EncoderDecoder`): ``width`` (level ``l`` has ``width * 2**l``
  channels); ``num_levels`` (H, W multiples of ``2**(num_levels - 1)``); ``blocks_per_level``
  (3x3 blocks per level, encoder and decoder); ``downsample`` ("max_pool", switches kept, or
  "strided_conv"); ``upsample`` ("nearest", "bed_of_nails", "max_unpool" (needs "max_pool"),
  "transpose_conv", "bilinear"); ``skip`` ("concat" U-Net, "add" FCN, "none" SegNet);
  ``transpose_kernel_size`` (2: no overlap, 3: uneven, 4: even); ``level_widths`` (channels
  per level, replacing ``width``/``num_levels``); ``level_blocks`` (encoder blocks per level;
  empty: ``blocks_per_level``); ``decoder_blocks`` (per decoder level; 0: ``blocks_per_level``);
  ``upsample_input`` (what a parameter-free upsampling gets: "full", the deeper map itself
  (max-unpool sends channel ``c`` to encoder channel ``c mod C``'s maximum, ``C`` dividing the
  deeper width), or "reduce_1x1" / "reduce_3x3", a block mapping it to the shallower level's
  channels first); ``upsample_projection`` (that reducing conv, or the transpose conv, is a
  conv+norm+relu "block" or "linear", conv only).
* fcn_full_res (:class:`FullResolutionFCN`): ``fcn_width``, ``fcn_depth`` 3x3 layers.
* sliding_window (:class:`SlidingWindowClassifier`): ``patch_size`` (odd crop side),
  ``patch_width``, ``patch_stages`` (:class:`PatchCNN`), ``patch_padding`` ("reflect" or
  "zero"), ``train_stride`` / ``eval_stride`` (stride 1 costs ``H*W`` crops per image),
  ``crop_chunk`` (most crops per CNN call in evaluation).
* pixel_colour (:class:`PixelColourClassifier`): ``pixel_width``, ``pixel_depth`` 1x1 layers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdet.core import ConfigError
from jaxdet.models import upsampling
from jaxdet.models.conv_blocks import (
    NORM_MODES,
    ConvNormMixin,
    choose,
    pixel_classifier,
    scale_input,
)
from jaxdet.models.sliding_window_segmentation import (
    PATCH_PADDING_MODES,
    SlidingWindowClassifier,
)

MODEL_NAMES = ("sliding_window", "fcn_full_res", "encoder_decoder", "pixel_colour")
DOWNSAMPLE_MODES = ("max_pool", "strided_conv")
UPSAMPLE_MODES = ("nearest", "bed_of_nails", "max_unpool", "transpose_conv", "bilinear")
SKIP_MODES = ("concat", "add", "none")
UPSAMPLE_INPUT_MODES = ("reduce_1x1", "reduce_3x3", "full")
UPSAMPLE_PROJECTION_MODES = ("block", "linear")

DEFAULT_MODEL_FIELDS: dict[str, Any] = {
    "name": "encoder_decoder",
    "norm": "batch",
    "bn_momentum": 0.9,
    "gn_groups": 8,
    # encoder_decoder
    "width": 16,
    "num_levels": 5,
    "blocks_per_level": 1,
    "downsample": "max_pool",
    "upsample": "max_unpool",
    "skip": "concat",
    "transpose_kernel_size": 2,
    "level_widths": (),
    "level_blocks": (),
    "decoder_blocks": 0,
    "upsample_input": "full",
    "upsample_projection": "block",
    # fcn_full_res
    "fcn_width": 64,
    "fcn_depth": 8,
    # sliding_window
    "patch_size": 17,
    "patch_width": 16,
    "patch_stages": 2,
    "patch_padding": "reflect",
    "train_stride": 8,
    "eval_stride": 4,
    "crop_chunk": 16384,
    # pixel_colour
    "pixel_width": 32,
    "pixel_depth": 3,
}

class PixelColourClassifier(ConvNormMixin):
    """Per-pixel colour classifier (1x1 convs only): ``[B, H, W, 3] -> float32 [B, H, W, C]``."""

    num_classes: int = 5
    pixel_width: int = 32
    pixel_depth: int = 3

    @nn.compact
    def __call__(self, images: jax.Array, *, train: bool) -> jax.Array:
        x = scale_input(images)
        for _ in range(self.pixel_depth):
            x = self.block(self.pixel_width, 1)(x, train=train)
        return pixel_classifier(self.num_classes)(x).astype(jnp.float32)


class FullResolutionFCN(ConvNormMixin):
    """``fcn_depth`` full-resolution 3x3 conv+norm+relu layers, then 1x1 scores.

    ``[B, H, W, 3] -> float32 [B, H, W, C]``; receptive field ``2 * fcn_depth + 1`` pixels.
    """

    num_classes: int = 5
    fcn_width: int = 64
    fcn_depth: int = 8

    @nn.compact
    def __call__(self, images: jax.Array, *, train: bool) -> jax.Array:
        x = scale_input(images)
        for _ in range(self.fcn_depth):
            x = self.block(self.fcn_width)(x, train=train)
        return pixel_classifier(self.num_classes)(x).astype(jnp.float32)


def check_encoder_decoder_modes(
    downsample: str,
    upsample: str,
    skip: str,
    upsample_input: str = "full",
    upsample_projection: str = "block",
) -> None:
    """Raise ValueError for an unknown mode or for max_unpool without matching switches."""
    choose("downsample", downsample, DOWNSAMPLE_MODES)
    choose("upsample", upsample, UPSAMPLE_MODES)
    choose("skip", skip, SKIP_MODES)
    choose("upsample_input", upsample_input, UPSAMPLE_INPUT_MODES)
    choose("upsample_projection", upsample_projection, UPSAMPLE_PROJECTION_MODES)
    if skip == "add" and upsample_input == "full" and upsample != "transpose_conv":
        raise ConfigError(
            "model.skip='add' sums the upsampled map with the encoder map of the same level, "
            "so it needs them to have the same channels: set model.upsample_input to "
            "'reduce_1x1' or 'reduce_3x3' (got 'full')"
        )
    if upsample == "max_unpool" and downsample != "max_pool":
        raise ConfigError(
            "model.upsample='max_unpool' needs the switches of a max-pool: set "
            f"model.downsample='max_pool' (got {downsample!r})"
        )


class EncoderDecoder(ConvNormMixin):
    """Downsample-then-upsample network (SegNet / U-Net family; fields in the module).

    Encoder level ``l``: 3x3 blocks, then (except the deepest) a 2x downsampling. Decoder level
    ``l``: the level ``l + 1`` map upsampled 2x, merged with the encoder map of level ``l``
    (``skip``), then ``decoder_blocks`` 3x3 blocks; a 1x1 conv gives the scores.
    ``[B, H, W, 3] -> float32 [B, H, W, num_classes]``, H and W multiples of
    ``2**(num_levels - 1)`` (else ValueError).
    """

    num_classes: int = 5
    width: int = 16
    num_levels: int = 5
    blocks_per_level: int = 1
    downsample: str = "max_pool"
    upsample: str = "max_unpool"
    skip: str = "concat"
    transpose_kernel_size: int = 2
    level_widths: tuple[int, ...] = ()
    level_blocks: tuple[int, ...] = ()
    decoder_blocks: int = 0
    upsample_input: str = "full"
    upsample_projection: str = "block"

    def levels(self) -> tuple[list[int], list[int], int]:
        """(channels per level, encoder blocks per level, decoder blocks per level)."""
        widths = list(self.level_widths) or [
            self.width * 2**level for level in range(self.num_levels)
        ]
        blocks = list(self.level_blocks) or [self.blocks_per_level] * len(widths)
        if len(blocks) != len(widths):
            raise ConfigError(
                f"model.level_blocks has {len(blocks)} entries for {len(widths)} levels"
            )
        if min(blocks) < 1:
            # A level without blocks would hand its input (other channels) to the skip and to
            # the switches, which the decoder's width * channels cannot match.
            raise ConfigError(f"model.level_blocks must all be >= 1, got {tuple(blocks)}")
        return widths, blocks, self.decoder_blocks or self.blocks_per_level

    def size_multiple(self) -> int:
        """What the input's height and width must be a multiple of: ``2 ** (levels - 1)``."""
        return 2 ** (len(self.levels()[0]) - 1)

    @nn.compact
    def __call__(self, images: jax.Array, *, train: bool) -> jax.Array:
        check_encoder_decoder_modes(
            self.downsample, self.upsample, self.skip, self.upsample_input,
            self.upsample_projection,
        )
        widths, blocks, decoder_blocks = self.levels()
        num_levels = len(widths)
        factor = self.size_multiple()
        if images.shape[1] % factor or images.shape[2] % factor:
            raise ValueError(
                f"image size {images.shape[1:3]} must be a multiple of {factor} "
                f"for {num_levels} levels"
            )
        x = scale_input(images)
        skips, switches = [], []
        for level, w in enumerate(widths):
            for _ in range(blocks[level]):
                x = self.block(w)(x, train=train)
            if level == num_levels - 1:
                break
            skips.append(x)
            if self.downsample == "max_pool":
                x, sw = upsampling.max_pool_with_argmax(x, window=2, stride=2)
                switches.append(sw)
            else:
                x = self.block(w, strides=2)(x, train=train)
        for level in reversed(range(num_levels - 1)):
            w, enc = widths[level], skips[level]
            linear = self.upsample_projection == "linear"
            if self.upsample == "transpose_conv":
                k = self.transpose_kernel_size
                x = self.block(w, k, strides=2, transpose=True, linear=linear)(x, train=train)
            else:
                if self.upsample_input != "full":
                    k = 1 if self.upsample_input == "reduce_1x1" else 3
                    x = self.block(w, k, linear=linear)(x, train=train)
                x = self._fixed_upsample(x, switches[level] if switches else None, enc.shape)
            if self.skip == "concat":
                x = jnp.concatenate([x, enc], axis=-1)
            elif self.skip == "add":
                x = x + enc
            for _ in range(decoder_blocks):
                x = self.block(w)(x, train=train)
        return pixel_classifier(self.num_classes)(x).astype(jnp.float32)

    def _fixed_upsample(
        self, x: jax.Array, switches: jax.Array | None, shape: tuple[int, ...]
    ) -> jax.Array:
        if self.upsample == "nearest":
            return upsampling.nearest_upsample(x, 2)
        if self.upsample == "bed_of_nails":
            return upsampling.bed_of_nails_upsample(x, 2)
        if self.upsample == "bilinear":
            return upsampling.bilinear_upsample(x, 2)
        assert switches is not None  # guaranteed by check_encoder_decoder_modes
        reps, rest = divmod(x.shape[-1], switches.shape[-1])
        if rest:
            raise ConfigError(
                f"model.upsample='max_unpool' with upsample_input='full' sends channel c of the "
                f"deeper map to the maximum of encoder channel c mod {switches.shape[-1]}, so "
                f"its {x.shape[-1]} channels must be a multiple of {switches.shape[-1]}: choose "
                "model.level_widths accordingly or upsample_input='reduce_1x1'"
            )
        # upsample_input="full": channel c goes where encoder channel c % C had its maximum.
        return upsampling.max_unpool(x, jnp.tile(switches, (1, 1, 1, reps)), shape[1:3])


def create_model(
    model_config: Mapping[str, Any], num_classes: int, bn_axis_name: str | None = None
) -> nn.Module:
    """Build a segmentation model from a flat ``model`` config section.

    ``model_config``: a mapping (e.g. ``ml_collections.ConfigDict``) of the module's fields, the
    missing ones taken from :data:`DEFAULT_MODEL_FIELDS`; ``num_classes``: score maps, background
    included; ``bn_axis_name``: mapped axis of cross-device BatchNorm, or None. Raises ValueError
    for an unknown field or value, or ``upsample="max_unpool"`` without max-pooling.
    """
    unknown = sorted(set(model_config.keys()) - set(DEFAULT_MODEL_FIELDS))
    if unknown:
        raise ValueError(
            f"unknown model config field(s) {unknown}; allowed: {sorted(DEFAULT_MODEL_FIELDS)}"
        )
    cfg = {k: model_config.get(k, v) for k, v in DEFAULT_MODEL_FIELDS.items()}
    name = choose("name", cfg["name"], MODEL_NAMES)
    choose("norm", cfg["norm"], NORM_MODES)
    common = dict(
        num_classes=num_classes,
        norm=cfg["norm"],
        bn_momentum=cfg["bn_momentum"],
        gn_groups=cfg["gn_groups"],
        bn_axis_name=bn_axis_name,
    )
    if name == "encoder_decoder":
        check_encoder_decoder_modes(
            cfg["downsample"], cfg["upsample"], cfg["skip"], cfg["upsample_input"],
            cfg["upsample_projection"],
        )
        fields = ("width", "num_levels", "blocks_per_level", "downsample", "upsample", "skip",
                  "transpose_kernel_size", "decoder_blocks", "upsample_input",
                  "upsample_projection")
        return EncoderDecoder(
            **common, **{k: cfg[k] for k in fields},
            level_widths=tuple(int(w) for w in cfg["level_widths"]),
            level_blocks=tuple(int(b) for b in cfg["level_blocks"]),
        )
    if name == "fcn_full_res":
        return FullResolutionFCN(**common, fcn_width=cfg["fcn_width"], fcn_depth=cfg["fcn_depth"])
    if name == "pixel_colour":
        return PixelColourClassifier(
            **common, pixel_width=cfg["pixel_width"], pixel_depth=cfg["pixel_depth"]
        )
    choose("patch_padding", cfg["patch_padding"], PATCH_PADDING_MODES)
    if cfg["patch_size"] % 2 != 1:
        raise ConfigError(f"model.patch_size must be odd, got {cfg['patch_size']}")
    fields = ("patch_size", "patch_width", "patch_stages", "patch_padding", "train_stride",
              "eval_stride", "crop_chunk")
    return SlidingWindowClassifier(**common, **{k: cfg[k] for k in fields})


def size_multiple(model_config: Mapping[str, Any]) -> int:
    """What an input's height and width must be a multiple of for the model of
    ``model_config``: ``2 ** (levels - 1)`` for the encoder-decoder, the least common multiple of
    the train and eval strides for the sliding window, else 1."""
    model = create_model(model_config, num_classes=2)
    if isinstance(model, EncoderDecoder):
        return model.size_multiple()
    if isinstance(model, SlidingWindowClassifier):
        return math.lcm(int(model.train_stride), int(model.eval_stride))
    return 1
