"""Keypoint R-CNN keypoint branch with static shapes: head, person-RoI selection, targets, loss.

The semantics of torchvision's ``KeypointRCNNHeads`` / ``KeypointRCNNPredictor`` /
``keypointrcnn_loss`` / ``keypointrcnn_inference``, written for ``jit`` / ``vmap``:

* Head: RoIAlign ``P x P`` (14 in COCO, sampling 2) from the FPN levels -> ``num_convs`` conv
  3x3 (``width``, 512 in COCO) + ReLU -> ``kps_score_lowres``, a 4x4 stride-2 transpose conv
  to ``K`` channels (``2P``) -> 2x bilinear upsampling (``align_corners=False``) -> ``K``
  heatmaps of ``S = 4P`` (56 in COCO). Layout NHWC: logits ``[R, S, S, K]``.
* Training (:func:`select_person_rois`, :func:`keypoint_targets`, :func:`keypoint_loss`): only
  positive RoIs of the keypoint class (person) are used, a fixed budget of ``n`` per image
  (the person positives are moved to the front of the sampled RoIs with a stable sort; the
  rest of the budget is padding with zero weight). Target of keypoint ``k`` of a RoI = the flat
  index of the heatmap cell holding its matched gt keypoint
  (:func:`jaxdet.ops.keypoints_to_heatmap`, torchvision's rule), valid when the keypoint is
  labelled (``v > 0``) and falls inside the RoI; loss = softmax cross-entropy over the
  ``S * S`` positions, averaged over the valid keypoints of all selected RoIs (returned as a
  ``(sum, count)`` pair for the train step's global mean).
* Inference (:func:`decode_keypoints`): :func:`jaxdet.ops.heatmaps_to_keypoints` (arg-max with
  torchvision's bicubic sub-pixel refinement) maps each heatmap to ``(x, y, score)`` in image
  pixels; the score is the interpolated logit at that position.

Parameter names (torchvision in brackets, so the weight converter maps them one-to-one):
``keypoint_head/0``, ``keypoint_head/2``, ..., ``keypoint_head/14`` (``roi_heads.keypoint_head.
{0,2,...,14}``: the Sequential's conv indices, ReLUs in between), and
``keypoint_predictor/kps_score_lowres`` (``roi_heads.keypoint_predictor.kps_score_lowres``, a
``ConvTranspose2d(k=4, s=2, p=1)``; Flax ``ConvTranspose`` with padding ``k - 1 - p = 2`` per
side on the spatially flipped kernel, see ``jaxdet/convert.py``).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdet.ops.keypoints import heatmaps_to_keypoints, keypoints_to_heatmap

__all__ = [
    "KeypointRCNNHeads",
    "KeypointRCNNPredictor",
    "decode_keypoints",
    "keypoint_loss",
    "keypoint_targets",
    "select_person_rois",
]

_KAIMING_FAN_OUT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class KeypointRCNNHeads(nn.Module):
    """``num_convs`` conv 3x3 (``width``) + ReLU on pooled RoI features (torchvision's
    ``KeypointRCNNHeads``; submodules ``"0"``, ``"2"``, ..., its Sequential indices).

    Call: ``[R, P, P, Ch]`` NHWC -> ``[R, P, P, width]`` in ``dtype``.
    """

    width: int = 512
    num_convs: int = 8
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i in range(self.num_convs):
            x = nn.Conv(self.width, (3, 3), padding="SAME", dtype=self.dtype,
                        kernel_init=_KAIMING_FAN_OUT, name=str(2 * i))(x)
            x = nn.relu(x)
        return x


class KeypointRCNNPredictor(nn.Module):
    """``kps_score_lowres`` (4x4 stride-2 transpose conv to ``num_keypoints`` channels), then
    2x bilinear upsampling (torchvision's ``KeypointRCNNPredictor``).

    Call: ``[R, P, P, Ch]`` -> ``[R, 4P, 4P, num_keypoints]`` float32 logits.
    """

    num_keypoints: int = 17
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.ConvTranspose(self.num_keypoints, (4, 4), strides=(2, 2),
                             padding=((2, 2), (2, 2)), dtype=self.dtype,
                             kernel_init=_KAIMING_FAN_OUT, name="kps_score_lowres")(x)
        x = x.astype(jnp.float32)
        r, h, w, k = x.shape
        # jax.image.resize "bilinear" upsampling = PyTorch's align_corners=False interpolate.
        return jax.image.resize(x, (r, 2 * h, 2 * w, k), method="bilinear")


def select_person_rois(
    rois: jax.Array, labels: jax.Array, matched_gt: jax.Array, valid: jax.Array,
    keypoint_class: int, num_rois: int,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The first ``num_rois`` positive RoIs of the keypoint class of ONE image (static shape).

    Args:
      rois: ``[R, 4]`` sampled RoIs ``(x1, y1, x2, y2)`` absolute pixels.
      labels: ``[R]`` int RoI labels, ``c + 1`` for class ``c``, 0 background.
      matched_gt: ``[R]`` int gt row of each RoI (``-1`` none).
      valid: ``[R]`` bool sampled slots.
      keypoint_class: 0-based class with keypoints (person).
      num_rois: static budget ``n`` (``<= R``).

    Returns:
      ``(rois [n, 4], matched_gt [n] (-1 where not positive), positive [n] bool)``: the person
      positives in their sampled order, then padding slots.
    """
    person = valid & (labels == keypoint_class + 1) & (matched_gt >= 0)
    order = jnp.argsort(~person, stable=True)[:num_rois]
    positive = person[order]
    return rois[order], jnp.where(positive, matched_gt[order], -1), positive


def keypoint_targets(
    rois: jax.Array, matched_gt: jax.Array, gt_keypoints: jax.Array, heatmap_size: int
) -> tuple[jax.Array, jax.Array]:
    """Heatmap targets of ONE image's RoIs (torchvision's ``keypoints_to_heatmap`` rule).

    Args:
      rois: ``[R, 4]`` float32 ``(x1, y1, x2, y2)`` absolute pixels.
      matched_gt: ``[R]`` int gt row of each RoI; ``-1``: no target (all keypoints invalid).
      gt_keypoints: ``[G, K, 3]`` ``(x, y, v)`` absolute pixels, ``v > 0`` labelled.
      heatmap_size: static ``S``.

    Returns:
      ``(targets int32 [R, K] flat cell index cy * S + cx, valid bool [R, K])``.
    """
    kp = gt_keypoints[jnp.maximum(matched_gt, 0)]  # [R, K, 3]
    targets, valid = keypoints_to_heatmap(kp, rois, heatmap_size)
    valid = valid & (matched_gt >= 0)[:, None]
    return jax.lax.stop_gradient(targets), valid


def keypoint_loss(
    logits: jax.Array, targets: jax.Array, valid: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Softmax cross-entropy over the ``S * S`` heatmap positions as a ``(sum, count)`` pair.

    Args:
      logits: ``[..., R, S, S, K]`` float heatmap logits (NHWC).
      targets: ``[..., R, K]`` int flat cell index ``cy * S + cx``.
      valid: ``[..., R, K]`` bool, the keypoints that count.

    Returns:
      float32 ``(sum of -log p(target) over valid keypoints, number of valid keypoints)``;
      ``sum / max(count, 1)`` is torchvision's ``keypointrcnn_loss``. Invalid keypoints add
      nothing and get zero gradient (even with non-finite logits there).
    """
    *lead, s, s2, k = logits.shape
    x = jnp.moveaxis(logits.astype(jnp.float32).reshape(*lead, s * s2, k), -1, -2)  # [...,K,SS]
    x = jnp.where(valid[..., None], x, 0.0)
    logp = jax.nn.log_softmax(x, axis=-1)
    picked = jnp.take_along_axis(logp, targets.astype(jnp.int32)[..., None], axis=-1)[..., 0]
    return (jnp.sum(jnp.where(valid, -picked, 0.0)), jnp.sum(valid, dtype=jnp.float32))


def decode_keypoints(logits: jax.Array, rois: jax.Array, window: int = 32) -> jax.Array:
    """``[R, S, S, K]`` heatmap logits of ``[R, 4]`` RoIs -> ``[R, K, 3]`` float32
    ``(x, y, score)`` in image pixels (:func:`jaxdet.ops.heatmaps_to_keypoints`; ``window``:
    its static search block, exact for RoIs up to ``window`` px a side)."""
    return heatmaps_to_keypoints(jnp.moveaxis(logits, -1, 1), rois, window=window)
