"""Sliding-window detector: a CNN window classifier with a background class, then NMS.

A static grid of windows is warped to ``window_crop_size`` crops and classified into
``C + 1`` classes; detections are windows (``window_box_regression=True`` adds Fast R-CNN
deltas). :class:`SlidingWindowDetector` has
:class:`~jaxdet.detection.faster_rcnn.FasterRCNN`'s call contract (inputs, ``targets``,
float32 boxes): terms ``window_classifier`` (+ ``window_box``, :func:`loss_terms`); at test
``proposals`` ``[B, W, 4]`` are the windows, ``proposal_valid`` inside the unpadded image.

Windows (:func:`window_grid`): per size ``s`` (outer) and ratio ``r = h / w``,
``w = round(s / sqrt(r))``, ``h = round(s * sqrt(r))`` px, stride
``max(1, round(window_stride_fraction * s))``, row-major, only windows inside the padded image.

Training: :func:`jaxdet.ops.match` (``window_fg_iou`` / ``window_bg_iou``, no low-quality
matches), :func:`jaxdet.ops.sample_balanced`, crop (:func:`jaxdet.ops.roi_align`,
``spatial_scale=1``) and softmax CE of the samples. Test: all windows in chunks of
``window_chunk_size`` (lifted ``scan``), then
:func:`~jaxdet.detection.roi_heads.postprocess_detections`.

Parameters: ``classifier`` with ``body``, ``cls_score``, (box head) ``bbox_pred``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxdet import config_files, core, ops
from jaxdet.core import ConfigError
from jaxdet.detection import roi_heads, rpn
from jaxdet.detection.select import PostprocessSpec, postprocess_from_config
from jaxdet.models import resnet

SumCount = tuple[jax.Array, jax.Array]
LOSS_TERMS = ("window_classifier",)
LOSS_TERMS_WITH_BOX = ("window_classifier", "window_box")


@dataclasses.dataclass(frozen=True)
class WindowSpec:
    """Every static number of the sliding-window detector, from ``config.model`` (same key names;
    unknown keys ignored). Raises ValueError on empty sizes/ratios, stride fraction ``<= 0`` or
    ``window_bg_iou > window_fg_iou``.
    """

    num_classes: int
    window_sizes: tuple[float, ...] = (16.0, 32.0, 64.0)  # sqrt of the window area, pixels
    window_aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)  # height / width
    window_stride_fraction: float = 0.5  # stride = round(fraction * size) pixels
    window_crop_size: int = 24  # each crop is warped to this many pixels squared
    window_sampling_ratio: int = 2  # RoIAlign samples per output pixel and axis
    window_fg_iou: float = 0.5
    window_bg_iou: float = 0.3
    window_batch_size_per_image: int = 64
    window_positive_fraction: float = 0.25
    window_chunk_size: int = 1024  # windows per image classified at once at test; 0: all
    window_box_regression: bool = False  # add a class-specific box-offset head
    window_smooth_l1_beta: float = 1.0 / 9
    box_weights: tuple[float, float, float, float] = roi_heads.BOX_CODER_WEIGHTS
    postprocess: PostprocessSpec = PostprocessSpec()

    def __post_init__(self) -> None:
        if not self.window_sizes or not self.window_aspect_ratios:
            raise ConfigError("model.window_sizes and model.window_aspect_ratios must be non-empty")
        if self.window_stride_fraction <= 0:
            raise ConfigError(f"model.window_stride_fraction={self.window_stride_fraction} <= 0")
        if self.window_bg_iou > self.window_fg_iou:
            raise ConfigError("model.window_bg_iou must be <= model.window_fg_iou")

    @classmethod
    def from_config(cls, model: Mapping[str, Any], num_classes: int) -> WindowSpec:
        """The spec from a flat ``config.model`` section (unknown keys are ignored)."""
        return config_files.dataclass_from_section(
            cls, model, num_classes=num_classes,
            postprocess=postprocess_from_config(model, PostprocessSpec()))


def loss_terms_for(model: Mapping[str, Any], num_classes: int) -> tuple[str, ...]:
    """The loss terms of the detector ``config.model`` builds (see :func:`loss_terms`)."""
    return loss_terms(WindowSpec.from_config(model, num_classes))


def loss_terms(spec: WindowSpec) -> tuple[str, ...]:
    """Names of the ``terms`` the train output holds for ``spec``."""
    return LOSS_TERMS_WITH_BOX if spec.window_box_regression else LOSS_TERMS


def window_shapes(
    sizes: tuple[float, ...], aspect_ratios: tuple[float, ...]
) -> list[tuple[int, int, int]]:
    """``(width, height, stride_size)`` per window shape, size-major then ratio (``stride_size``:
    the shape's ``s``).
    """
    out = []
    for s in sizes:
        for r in aspect_ratios:
            w = int(np.round(s / math.sqrt(r)))
            h = int(np.round(s * math.sqrt(r)))
            out.append((max(w, 1), max(h, 1), s))
    return out


def window_grid(
    image_size: tuple[int, int],
    sizes: tuple[float, ...],
    aspect_ratios: tuple[float, ...],
    stride_fraction: float,
) -> np.ndarray:
    """All windows of the padded ``image_size`` ``(H, W)`` (module docstring): float32 ``[W, 4]``
    ``(x1, y1, x2, y2)`` pixels ordered by size, ratio, row, column. ValueError if none fits.
    """
    height, width = int(image_size[0]), int(image_size[1])
    out = []
    for w, h, s in window_shapes(tuple(sizes), tuple(aspect_ratios)):
        if w > width or h > height:
            continue
        stride = max(1, int(np.round(stride_fraction * s)))
        xs = np.arange(0, width - w + 1, stride, dtype=np.float32)
        ys = np.arange(0, height - h + 1, stride, dtype=np.float32)
        y, x = np.meshgrid(ys, xs, indexing="ij")
        x, y = x.reshape(-1), y.reshape(-1)
        out.append(np.stack([x, y, x + w, y + h], axis=1))
    if not out:
        raise ValueError(f"no window of sizes {sizes} fits a {height}x{width} image")
    return np.concatenate(out).astype(np.float32)


class WindowClassifier(nn.Module):
    """Crops ``[N, s, s, 3]`` -> ``(logits [N, C + 1], deltas [N, 4 * (C + 1)] or None)`` float32:
    ResNet last map, global-average pooled, linear ``cls_score`` (+ ``bbox_pred``).
    """

    num_classes: int
    backbone: Mapping[str, Any]
    box_regression: bool = False
    bn_axis_name: str | None = None

    def setup(self) -> None:
        self.body = resnet.create_resnet(self.backbone, bn_axis_name=self.bn_axis_name)
        self.cls_score = nn.Dense(self.num_classes + 1, dtype=jnp.float32)
        if self.box_regression:
            self.bbox_pred = nn.Dense(
                4 * (self.num_classes + 1), dtype=jnp.float32,
                kernel_init=nn.initializers.normal(0.001))

    def __call__(self, crops: jax.Array, train: bool) -> tuple[jax.Array, jax.Array | None]:
        feats = self.body(crops, train=train)
        last = feats[max(feats, key=lambda k: int(k[1:]))]
        pooled = jnp.mean(last.astype(jnp.float32), axis=(1, 2))
        deltas = self.bbox_pred(pooled) if self.box_regression else None
        return self.cls_score(pooled), deltas


def _crops(images: jax.Array, boxes: jax.Array, size: int, sampling_ratio: int) -> jax.Array:
    """``images [B, H, W, 3]``, ``boxes [B, R, 4]`` -> ``[B, R, size, size, 3]`` warps."""
    one = lambda im, b: ops.roi_align(  # noqa: E731
        im, b, (size, size), spatial_scale=1.0, sampling_ratio=sampling_ratio, aligned=True)
    return jax.vmap(one)(images, boxes)


class SlidingWindowDetector(nn.Module):
    """See the module docstring. ``backbone``: config section for
    :func:`jaxdet.models.resnet.create_resnet` (the window classifier's CNN); ``bn_axis_name``:
    cross-device BatchNorm axis or None; ``dtype``: compute dtype of the crops (None: float32).
    """

    spec: WindowSpec
    backbone: Mapping[str, Any]
    bn_axis_name: str | None = None
    dtype: Any = None

    def setup(self) -> None:
        self.classifier = WindowClassifier(
            self.spec.num_classes, self.backbone, self.spec.window_box_regression,
            self.bn_axis_name)

    def windows(self, image_size: tuple[int, int]) -> np.ndarray:
        """The static window grid ``[W, 4]`` for a padded ``(H, W)`` input."""
        s = self.spec
        return window_grid(image_size, s.window_sizes, s.window_aspect_ratios,
                           s.window_stride_fraction)

    def _classify(self, crops: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
        """``[B, R, s, s, 3]`` -> logits ``[B, R, C + 1]``, deltas ``[B, R, 4 * (C + 1)]`` (zeros
        without the box head).
        """
        b, r = crops.shape[:2]
        logits, deltas = self.classifier(
            crops.reshape((b * r,) + crops.shape[2:]).astype(self.dtype or jnp.float32), train)
        logits = logits.reshape(b, r, -1)
        if deltas is None:
            deltas = jnp.zeros((b, r, 4 * logits.shape[-1]), jnp.float32)
        return logits, deltas.reshape(b, r, -1)

    def _classify_all(self, images: jax.Array, windows: np.ndarray) -> tuple[jax.Array,
                                                                             jax.Array]:
        """Every window of every image, ``chunk`` windows at a time (test only)."""
        s = self.spec
        num = windows.shape[0]
        chunk = s.window_chunk_size if 0 < s.window_chunk_size < num else num
        n_chunks = -(-num // chunk)
        padded = np.concatenate(
            [windows, np.repeat(windows[:1], n_chunks * chunk - num, axis=0)])
        chunks = jnp.asarray(padded.reshape(n_chunks, chunk, 4))

        def body(mdl: SlidingWindowDetector, carry, win, imgs):
            boxes = jnp.broadcast_to(win, (imgs.shape[0],) + win.shape)
            crops = _crops(imgs, boxes, s.window_crop_size, s.window_sampling_ratio)
            return carry, mdl._classify(crops, False)

        if n_chunks == 1:
            _, (logits, deltas) = body(self, None, chunks[0], images)
            return logits[:, :num], deltas[:, :num]
        scan = nn.scan(body, variable_broadcast=["params", "batch_stats"],
                       split_rngs={"params": False}, in_axes=(0, nn.broadcast),
                       length=n_chunks)
        _, (logits, deltas) = scan(self, None, chunks, images)  # [n, B, chunk, ...]
        merge = lambda x: jnp.moveaxis(x, 0, 1).reshape(  # noqa: E731
            x.shape[1], n_chunks * chunk, -1)[:, :num]
        return merge(logits), merge(deltas)

    def __call__(
        self,
        images: jax.Array,
        image_hw: jax.Array | None = None,
        *,
        train: bool,
        targets: Mapping[str, jax.Array] | None = None,
        rng: jax.Array | None = None,
    ) -> dict[str, Any]:
        s = self.spec
        batch = images.shape[0]
        image_size = images.shape[1:3]
        images = jnp.asarray(images, jnp.float32)
        windows_np = self.windows(image_size)
        windows = jnp.asarray(windows_np)
        image_hw = roi_heads.default_image_hw(images, image_hw)
        # A window counts only inside the unpadded image.
        window_valid = ((windows[None, :, 2] <= image_hw[:, 1:2] + 1e-3)
                        & (windows[None, :, 3] <= image_hw[:, 0:1] + 1e-3))  # [B, W]
        if not train:
            logits, deltas = self._classify_all(images, windows_np)
            post = lambda lg, dl, v, hw: roi_heads.postprocess_detections(  # noqa: E731
                lg, dl, windows, v, hw, weights=s.box_weights, **dataclasses.asdict(s.postprocess))
            dets = jax.vmap(post)(logits, deltas, window_valid, image_hw)
            out: dict[str, Any] = dets._asdict()
            out["proposals"] = jnp.broadcast_to(windows, (batch,) + windows.shape)
            out["proposal_valid"] = window_valid
            return out
        if targets is None or rng is None:
            raise ValueError("SlidingWindowDetector(train=True) needs targets and rng")
        if rng.shape != (batch,):
            raise ValueError(f"rng must hold one key per image, shape ({batch},), got {rng.shape}")
        real = core.example_mask(targets, batch)
        gt_boxes = jnp.asarray(targets["gt_boxes"], jnp.float32)
        gt_valid = jnp.asarray(targets["gt_valid"], bool) & real[:, None]
        t = jax.vmap(lambda v, g, lab, gv, k: _window_targets(windows, v, g, lab, gv, k, s))(
            window_valid, gt_boxes, targets["gt_labels"], gt_valid, rng)
        t = t._replace(valid=t.valid & real[:, None], labels=jnp.where(real[:, None],
                                                                       t.labels, 0))
        crops = _crops(images, t.rois, s.window_crop_size, s.window_sampling_ratio)
        logits, deltas = self._classify(crops, True)
        losses = roi_heads.roi_losses(logits, deltas, t, smooth_l1_beta=s.window_smooth_l1_beta)
        terms = {"window_classifier": losses["loss_classifier"]}
        if s.window_box_regression:
            terms["window_box"] = losses["loss_box_reg"]
        hit, total = jax.vmap(rpn.proposal_recall)(
            jnp.broadcast_to(windows, (batch,) + windows.shape), window_valid, gt_boxes,
            gt_valid)
        return {
            "terms": terms,
            "recall": (jnp.sum(hit).astype(jnp.float32), jnp.sum(total).astype(jnp.float32)),
            "num_foreground_rois": (jnp.sum((t.labels > 0) & t.valid, dtype=jnp.float32),
                                    jnp.sum(real, dtype=jnp.float32)),
        }


def _window_targets(
    windows: jax.Array,
    window_valid: jax.Array,
    gt_boxes: jax.Array,
    gt_labels: jax.Array,
    gt_valid: jax.Array,
    rng: jax.Array,
    spec: WindowSpec,
) -> roi_heads.RoiTargets:
    """Match and sample the windows ``[W, 4]`` (``window_valid`` ``[W]``) of ONE image against its
    gt: :class:`~jaxdet.detection.roi_heads.RoiTargets` with ``window_batch_size_per_image`` rows
    (``rois``: the sampled windows), ``stop_gradient``-ed.
    """
    iou = ops.box_iou(gt_boxes, windows)  # [G, W]
    matches = ops.match(iou, gt_valid, high=spec.window_fg_iou, low=spec.window_bg_iou,
                        allow_low_quality_matches=False)
    labels = jnp.where(window_valid, ops.matches_to_labels(matches), -1)
    idx, valid = ops.sample_balanced(rng, labels, spec.window_batch_size_per_image,
                                     spec.window_positive_fraction)
    safe = jnp.maximum(idx, 0)
    rois = jnp.where(valid[:, None], windows[safe], 0.0)
    m = jnp.where(valid, matches[safe], -1)
    fg = m >= 0
    safe_m = jnp.maximum(m, 0)
    cls = jnp.where(fg, jnp.asarray(gt_labels).astype(jnp.int32)[safe_m] + 1, 0)
    unit = jnp.asarray([0.0, 0.0, 1.0, 1.0], jnp.float32)
    reg = ops.encode_boxes(jnp.where(fg[:, None], gt_boxes[safe_m], unit),
                           jnp.where(fg[:, None], rois, unit), spec.box_weights)
    out = roi_heads.RoiTargets(
        rois=rois, labels=cls.astype(jnp.int32),
        regression_targets=jnp.where(fg[:, None], reg, 0.0),
        matched_gt=m.astype(jnp.int32), valid=valid)
    return jax.tree.map(jax.lax.stop_gradient, out)


def create_model(config: ml_collections.ConfigDict, num_classes: int,
                 bn_axis_name: str | None = None) -> SlidingWindowDetector:
    """:class:`SlidingWindowDetector` from ``config.model`` (backbone + :class:`WindowSpec`)."""
    model = config.model
    return SlidingWindowDetector(
        spec=WindowSpec.from_config(model, num_classes),
        **resnet.backbone_fields(model, bn_axis_name),
    )
