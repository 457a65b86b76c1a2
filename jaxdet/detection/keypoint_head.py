"""Keypoint R-CNN keypoint branch, static shapes (torchvision's ``KeypointRCNNHeads`` /
``KeypointRCNNPredictor`` / ``keypointrcnn_loss`` / ``keypointrcnn_inference``).

* Head: RoIAlign ``P x P`` (COCO 14, sampling 2) -> ``num_convs`` x (3x3 conv ``width`` +
  ReLU) -> ``kps_score_lowres`` (4x4 stride-2 transpose conv to ``K``) -> 2x bilinear
  (``align_corners=False``): logits ``[R, S, S, K]`` NHWC, ``S = 4P`` (COCO 56).
* Training: a fixed budget of ``n`` positive RoIs of the keypoint class per image (stable sort
  to the front, rest zero-weight padding). Target = flat index of the heatmap cell holding the
  matched gt keypoint (:func:`jaxdet.ops.keypoints_to_heatmap`), valid when ``v > 0`` and
  inside the RoI; loss = softmax cross-entropy over ``S * S`` positions, a ``(sum, count)``
  pair over valid keypoints. Option (not torchvision's): ``"bilinear"`` targets over the 4
  surrounding cells, decoded by ``"local_mean"``.
* Inference: :func:`jaxdet.ops.heatmaps_to_keypoints` (arg-max + torchvision's bicubic
  refinement) -> ``(x, y, score)`` image pixels, score = interpolated logit.

Parameter names (torchvision's): ``keypoint_head/{0,2,...,14}`` <-
``roi_heads.keypoint_head.{0,2,...,14}`` (Sequential conv indices) and
``keypoint_predictor/kps_score_lowres`` <- ``roi_heads.keypoint_predictor.kps_score_lowres``
(``ConvTranspose2d(k=4, s=2, p=1)`` = Flax ``ConvTranspose`` with padding ``k - 1 - p = 2``
on the flipped kernel; ``jaxdet/convert.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdet.core import ConfigError, Detections
from jaxdet.detection.roi_heads import RoiPool, RoiSpec, RoiTargets
from jaxdet.models.conv import SameConv, SubPixelConvTranspose
from jaxdet.ops.keypoints import (
    heatmaps_to_keypoints,
    heatmaps_to_keypoints_local_mean,
    keypoints_to_bilinear_heatmap,
    keypoints_to_heatmap,
)

__all__ = [
    "COCO_FLIP_PAIRS",
    "KEYPOINT_DECODES",
    "KEYPOINT_TARGETS",
    "LOSS_TERMS",
    "KeypointBranch",
    "KeypointSpec",
    "KeypointRCNNHeads",
    "KeypointRCNNPredictor",
    "decode_keypoints",
    "keypoint_confidence",
    "keypoint_loss",
    "keypoint_targets",
    "select_person_rois",
    "unflip_heatmaps",
]

_KAIMING_FAN_OUT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
LOSS_TERMS = ("roi_keypoint",)


class KeypointRCNNHeads(nn.Module):
    """torchvision's ``KeypointRCNNHeads``: ``num_convs`` x (3x3 conv ``width`` + ReLU); submodules
    ``"0"``, ``"2"``, ... Call: ``[R, P, P, Ch]`` NHWC -> ``[R, P, P, width]`` in ``dtype``.
    """

    width: int = 512
    num_convs: int = 8
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i in range(self.num_convs):
            x = SameConv(self.width, (3, 3), dtype=self.dtype, kernel_init=_KAIMING_FAN_OUT,
                         name=str(2 * i))(x)
            x = nn.relu(x)
        return x


class KeypointRCNNPredictor(nn.Module):
    """torchvision's ``KeypointRCNNPredictor``: ``kps_score_lowres``
    (:class:`~jaxdet.models.conv.SubPixelConvTranspose` to ``num_keypoints``) then 2x bilinear.
    Call: ``[R, P, P, Ch]`` -> ``[R, 4P, 4P, K]`` float32.
    """

    num_keypoints: int = 17
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = SubPixelConvTranspose(self.num_keypoints, dtype=self.dtype,
                                  kernel_init=_KAIMING_FAN_OUT, name="kps_score_lowres")(x)
        x = x.astype(jnp.float32)
        r, h, w, k = x.shape
        # jax.image.resize "bilinear" upsampling = PyTorch's align_corners=False interpolate.
        return jax.image.resize(x, (r, 2 * h, 2 * w, k), method="bilinear")


def select_person_rois(
    rois: jax.Array, labels: jax.Array, matched_gt: jax.Array, valid: jax.Array,
    keypoint_class: int, num_rois: int,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The first ``num_rois`` (static ``n <= R``) positive RoIs of ``keypoint_class`` (0-based)
    of ONE image, from ``rois`` ``[R, 4]``, ``labels`` ``[R]`` (``c + 1`` / 0), ``matched_gt``
    ``[R]`` (``-1`` none), ``valid`` ``[R]``. Returns ``(rois [n, 4], matched_gt [n] (-1 unless
    positive), positive [n])``, positives in sampled order, then padding.
    """
    person = valid & (labels == keypoint_class + 1) & (matched_gt >= 0)
    order = jnp.argsort(~person, stable=True)[:num_rois]
    positive = person[order]
    return rois[order], jnp.where(positive, matched_gt[order], -1), positive


KEYPOINT_TARGETS = ("cell", "bilinear")
KEYPOINT_DECODES = ("bicubic", "local_mean")


def keypoint_targets(
    rois: jax.Array, matched_gt: jax.Array, gt_keypoints: jax.Array, heatmap_size: int,
    encoding: str = "cell",
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Heatmap targets of ONE image's RoIs ``[R, 4]`` (float32 pixels) from ``matched_gt`` ``[R]``
    (``-1``: all invalid) and ``gt_keypoints`` ``[G, K, 3]`` ``(x, y, v)`` pixels (``v > 0``
    labelled), heatmap side ``S``. ``encoding``: ``"cell"`` (torchvision: all mass on the
    keypoint's cell) or ``"bilinear"`` (4 cells); else ValueError.

    Returns ``(cells int32 [R, K, 4] flat cy * S + cx, weights float32 [R, K, 4], valid [R, K])``
    (``"cell"``: weight 1 in slot 0).
    """
    kp = gt_keypoints[jnp.maximum(matched_gt, 0)]  # [R, K, 3]
    if encoding == "cell":
        target, valid = keypoints_to_heatmap(kp, rois, heatmap_size)
        cells = jnp.repeat(target[..., None], 4, axis=-1)
        weights = jnp.where(valid[..., None], jnp.asarray([1.0, 0.0, 0.0, 0.0]), 0.0)
    elif encoding == "bilinear":
        cells, weights, valid = keypoints_to_bilinear_heatmap(kp, rois, heatmap_size)
    else:
        raise ValueError(f"keypoint target encoding {encoding!r}; expected one of "
                         f"{KEYPOINT_TARGETS}")
    valid = valid & (matched_gt >= 0)[:, None]
    weights = jnp.where(valid[..., None], weights, 0.0).astype(jnp.float32)
    return jax.lax.stop_gradient(cells), jax.lax.stop_gradient(weights), valid


def keypoint_loss(
    logits: jax.Array, cells: jax.Array, weights: jax.Array, valid: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Softmax cross-entropy over the ``S * S`` positions as float32 ``(sum, count)``: ``logits``
    ``[..., R, S, S, K]``, ``cells`` / ``weights`` ``[..., R, K, C]`` (:func:`keypoint_targets`),
    ``valid`` ``[..., R, K]``. ``sum / max(count, 1)`` with one-hot targets is torchvision's
    ``keypointrcnn_loss``; invalid keypoints add nothing, zero gradient.
    """
    *lead, s, s2, k = logits.shape
    x = jnp.moveaxis(logits.astype(jnp.float32).reshape(*lead, s * s2, k), -1, -2)  # [...,K,SS]
    x = jnp.where(valid[..., None], x, 0.0)
    logp = jax.nn.log_softmax(x, axis=-1)
    picked = jnp.take_along_axis(logp, cells.astype(jnp.int32), axis=-1)  # [..., R, K, C]
    nll = -jnp.sum(weights.astype(jnp.float32) * picked, axis=-1)
    return (jnp.sum(jnp.where(valid, nll, 0.0)), jnp.sum(valid, dtype=jnp.float32))


#: COCO's 17 person keypoints: (left, right) index pairs swapped by a horizontal flip
#: (eyes, ears, shoulders, elbows, wrists, hips, knees, ankles; the nose stays).
COCO_FLIP_PAIRS: tuple[tuple[int, int], ...] = (
    (1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))


def unflip_heatmaps(logits: jax.Array, flip_pairs: tuple[tuple[int, int], ...]) -> jax.Array:
    """Heatmaps read from the flipped image in mirrored RoIs ``(W - x2, y1, W - x1, y2)`` ->
    the original frame: ``[..., S, S, K]`` columns reversed, ``flip_pairs`` channels swapped.
    Its own inverse.
    """
    perm = list(range(logits.shape[-1]))
    for left, right in flip_pairs:
        perm[left], perm[right] = right, left
    return jnp.flip(logits, axis=-2)[..., jnp.asarray(perm)]


def keypoint_confidence(logits: jax.Array) -> jax.Array:
    """``[..., S, S, K]`` logits -> ``[...]`` float32 mean over ``K`` of each heatmap's peak softmax
    probability, in ``(0, 1]`` (``KeypointSpec.rescore`` multiplies it into the box score).
    """
    *lead, s, s2, k = logits.shape
    x = logits.astype(jnp.float32).reshape(*lead, s * s2, k)
    peak = jnp.exp(jnp.max(x, axis=-2) - jax.nn.logsumexp(x, axis=-2))  # [..., K]
    return jnp.mean(peak, axis=-1)


def decode_keypoints(logits: jax.Array, rois: jax.Array, window: int = 32,
                     method: str = "bicubic") -> jax.Array:
    """``[R, S, S, K]`` logits of ``[R, 4]`` RoIs -> ``[R, K, 3]`` float32 ``(x, y, score)`` pixels.

    ``method``: ``"bicubic"`` (:func:`jaxdet.ops.heatmaps_to_keypoints`, torchvision's; exact for
    RoIs up to ``window`` px a side) or ``"local_mean"``
    (:func:`jaxdet.ops.heatmaps_to_keypoints_local_mean`); else ValueError.
    """
    maps = jnp.moveaxis(logits, -1, 1)
    if method == "bicubic":
        return heatmaps_to_keypoints(maps, rois, window=window)
    if method == "local_mean":
        return heatmaps_to_keypoints_local_mean(maps, rois)
    raise ValueError(f"keypoint decode method {method!r}; expected one of {KEYPOINT_DECODES}")


@dataclasses.dataclass(frozen=True)
class KeypointSpec:
    """``config.model.keypoint`` (the section present: the keypoint branch is on).

    Head: ``num_convs`` 3x3 convs of ``width`` on RoIAlign ``roi_output_size`` bins ``P``
    (heatmaps ``4P``), ``num_keypoints`` channels. Training: up to ``rois_per_image``
    foreground RoIs of class ``class_index`` (0-based; 0: the sampler's foreground budget),
    ``target`` (:data:`KEYPOINT_TARGETS`). Inference: the first ``detections_per_img`` detections
    of that class (0: all), ``decode`` (:data:`KEYPOINT_DECODES`) exact within ``decode_window``
    px; ``roi_scale`` scales keypoint RoIs about their centres; ``rescore`` multiplies the mean
    keypoint confidence into the score; ``flip_test`` averages with the mirrored image's
    heatmaps, ``flip_pairs`` swapped. ConfigError on an unknown target or decode, or flip pairs
    outside ``[0, num_keypoints)``.
    """

    width: int = 512
    num_convs: int = 8
    roi_output_size: int = 14
    num_keypoints: int = 17
    class_index: int = 0
    rois_per_image: int = 0
    detections_per_img: int = 0
    decode_window: int = 32
    roi_scale: float = 1.0
    target: str = "cell"
    decode: str = "bicubic"
    rescore: bool = False
    flip_test: bool = False
    flip_pairs: tuple[tuple[int, int], ...] = COCO_FLIP_PAIRS

    def __post_init__(self) -> None:
        if self.target not in KEYPOINT_TARGETS:
            raise ConfigError(f"config.model.keypoint.target={self.target!r}; expected one of "
                              f"{KEYPOINT_TARGETS}")
        if self.decode not in KEYPOINT_DECODES:
            raise ConfigError(f"config.model.keypoint.decode={self.decode!r}; expected one of "
                              f"{KEYPOINT_DECODES}")
        if any(not 0 <= k < self.num_keypoints for pair in self.flip_pairs for k in pair):
            raise ConfigError(f"config.model.keypoint.flip_pairs={self.flip_pairs}; expected "
                              f"pairs of keypoint indices < {self.num_keypoints}")


def _scale_boxes(boxes: jax.Array, scale: float) -> jax.Array:
    """``[..., 4]`` ``(x1, y1, x2, y2)`` scaled about their centres by static ``scale``."""
    if scale == 1.0:
        return boxes
    centre = (boxes[..., :2] + boxes[..., 2:]) / 2
    half = (boxes[..., 2:] - boxes[..., :2]) * (scale / 2)
    return jnp.concatenate([centre - half, centre + half], axis=-1)


class KeypointBranch(nn.Module):
    """Keypoint R-CNN's branch of a two-stage detector. Its parameters sit at the detector's root
    (``keypoint_head``, ``keypoint_predictor``) when the detector shares its scope
    (:func:`flax.linen.share_scope`). ``roi``: the detector's RoI sampling;
    ``detections_per_img``: the detector's detection rows.
    """

    spec: KeypointSpec
    roi: RoiSpec
    detections_per_img: int
    dtype: Any = jnp.float32

    def setup(self) -> None:
        self.keypoint_head = KeypointRCNNHeads(self.spec.width, self.spec.num_convs,
                                               dtype=self.dtype)
        self.keypoint_predictor = KeypointRCNNPredictor(self.spec.num_keypoints, dtype=self.dtype)

    @property
    def num_rois(self) -> int:
        """Foreground RoI slots of the keypoint class per image sent to the head in training."""
        return min(self.spec.rois_per_image or self.roi.num_foreground_slots,
                   self.roi.batch_size_per_image)

    @property
    def num_detections(self) -> int:
        """Detections per image decoded at inference."""
        return min(self.spec.detections_per_img or self.detections_per_img,
                   self.detections_per_img)

    def logits(self, pool: RoiPool, rois: jax.Array) -> jax.Array:
        """``[B, R, 4]`` RoIs -> ``[B, R, 4P, 4P, num_keypoints]`` float32 heatmap logits."""
        b, r = rois.shape[:2]
        pooled = pool(rois, self.spec.roi_output_size)
        x = self.keypoint_predictor(
            self.keypoint_head(pooled.reshape((b * r,) + pooled.shape[2:])))
        return x.reshape((b, r) + x.shape[1:])

    def loss_terms(self, pool: RoiPool, roi_t: RoiTargets,
                   targets: Mapping[str, jax.Array]) -> dict[str, tuple[jax.Array, jax.Array]]:
        """``{"roi_keypoint": (sum, count)}`` over up to :attr:`num_rois` foreground RoIs of the
        keypoint class per image; ``targets`` needs ``gt_keypoints`` ``[B, G, K, 3]`` float32
        ``(x, y, v)`` (else ValueError).
        """
        if "gt_keypoints" not in targets:
            raise ValueError("the keypoint branch's training needs targets['gt_keypoints'] "
                             "[B, G, K, 3] float32 (x, y, v)")
        s = self.spec
        rois, matched, _ = jax.vmap(lambda r, lab, m, v: select_person_rois(
            r, lab, m, v, s.class_index, self.num_rois))(
            roi_t.rois, roi_t.labels, roi_t.matched_gt, roi_t.valid)
        rois = _scale_boxes(rois, s.roi_scale)
        size = 4 * s.roi_output_size
        cells, weights, kp_valid = jax.vmap(lambda r, m, g: keypoint_targets(
            r, m, g, size, s.target))(rois, matched, targets["gt_keypoints"])
        return {"roi_keypoint": keypoint_loss(self.logits(pool, rois), cells, weights, kp_valid)}

    def heatmaps(self, pool: RoiPool, mirror_pool: RoiPool | None, rois: jax.Array,
                 image_width: int) -> jax.Array:
        """``[B, R, 4P, 4P, K]`` heatmap logits of ``[B, R, 4]`` RoIs; given ``mirror_pool`` (the
        horizontally flipped images' features, padded width ``image_width``), averaged with the
        mirrored RoIs' heatmaps there mapped back (:func:`unflip_heatmaps`).
        """
        logits = self.logits(pool, rois)
        if mirror_pool is None:
            return logits
        w = jnp.float32(image_width)
        mirrored = jnp.stack([w - rois[..., 2], rois[..., 1], w - rois[..., 0], rois[..., 3]],
                             axis=-1)
        flipped = unflip_heatmaps(self.logits(mirror_pool, mirrored), self.spec.flip_pairs)
        return (logits + flipped) / 2

    def predict(self, pool: RoiPool, detections: Detections, mirror_pool: RoiPool | None = None,
                image_width: int = 0) -> dict[str, jax.Array]:
        """``keypoints`` ``[B, K, num_keypoints, 3]`` ``(x, y, score)`` of the first
        :attr:`num_detections` detections of the keypoint class (zeros elsewhere) and
        ``keypoint_scores`` ``[B, K]`` (box scores, times the mean keypoint confidence with
        ``rescore``; 0 off the class). ``mirror_pool``: see :meth:`heatmaps`.
        """
        s = self.spec
        dets = detections
        person = dets.valid & (dets.classes == s.class_index)
        order = jnp.argsort(~person, axis=1, stable=True)[:, :self.num_detections]  # [B, n]
        rois = _scale_boxes(jnp.take_along_axis(dets.boxes, order[..., None], axis=1),
                            s.roi_scale)
        logits = self.heatmaps(pool, mirror_pool, rois, image_width)
        decode = lambda lg, r: decode_keypoints(  # noqa: E731
            lg, r, window=s.decode_window, method=s.decode)
        kept = jnp.take_along_axis(person, order, axis=1)  # [B, n]
        kps = jnp.where(kept[..., None, None], jax.vmap(decode)(logits, rois), 0.0)
        scatter = jax.vmap(lambda o, i, v: o.at[i].set(v))
        out = scatter(jnp.zeros(dets.boxes.shape[:2] + kps.shape[2:], jnp.float32), order, kps)
        scores = dets.scores.astype(jnp.float32)
        if s.rescore:
            conf = jnp.where(kept, keypoint_confidence(logits), 0.0)  # [B, n]
            scores = scores * scatter(jnp.zeros_like(scores), order, conf)
        return {"keypoints": out, "keypoint_scores": jnp.where(person, scores, 0.0)}
