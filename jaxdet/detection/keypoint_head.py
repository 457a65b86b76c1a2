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
  ``(sum, count)`` pair for the train step's global mean). Option (not torchvision's):
  ``"bilinear"`` targets, the mass split over the 4 cells around the keypoint, decoded by
  ``"local_mean"`` (sub-cell precision; :mod:`jaxdet.ops.keypoints`).
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
    "KeypointRCNNHeads",
    "KeypointRCNNPredictor",
    "SubPixelConvTranspose",
    "decode_keypoints",
    "keypoint_confidence",
    "keypoint_loss",
    "keypoint_targets",
    "select_person_rois",
    "unflip_heatmaps",
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


class SubPixelConvTranspose(nn.Module):
    """Flax ``ConvTranspose(features, (4, 4), strides=(2, 2), padding=((2, 2), (2, 2)))`` (the
    same ``kernel [4, 4, Cin, features]`` and ``bias`` parameters, same output) computed as
    one stride-1 3x3 convolution to ``4 * features`` channels followed by a depth-to-space
    interleave: output row ``2m + a`` only reads input rows ``m - 1, m`` (``a = 0``, kernel
    rows 0, 2) or ``m, m + 1`` (``a = 1``, kernel rows 1, 3), columns alike. XLA:CPU runs
    the input-dilated convolution of ``ConvTranspose`` about 4x slower (fwd + bwd, 32 RoIs of
    14x14x48 -> 17: 87 vs 22 ms on 2 cores).

    Call: ``[N, H, W, Cin]`` -> ``[N, 2H, 2W, features]`` in ``dtype``.
    """

    features: int
    dtype: Any = jnp.float32
    kernel_init: Any = _KAIMING_FAN_OUT

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cin = x.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (4, 4, cin, self.features))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        # taps[a][d]: kernel row read by output phase a at input offset d - 1 (4 = a zero row).
        taps = jnp.asarray([[0, 2, 4], [4, 1, 3]])
        padded = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))  # [5, 5, Cin, F]
        # [3 (dy), 3 (dx), Cin, 2 (a), 2 (b), F] -> [3, 3, Cin, 4F] with channel (a, b, f).
        sub = padded[taps.T[:, None, :, None], taps.T[None, :, None, :]]  # [3, 3, 2, 2, Cin, F]
        sub = jnp.moveaxis(sub, 4, 2).reshape(3, 3, cin, 4 * self.features)
        y = jax.lax.conv_general_dilated(
            x.astype(self.dtype), sub.astype(self.dtype), (1, 1), "SAME",
            dimension_numbers=("NHWC", "HWIO", "NHWC"))
        n, h, w, _ = y.shape
        y = y.reshape(n, h, w, 2, 2, self.features).transpose(0, 1, 3, 2, 4, 5)
        return y.reshape(n, 2 * h, 2 * w, self.features) + bias.astype(self.dtype)


class KeypointRCNNPredictor(nn.Module):
    """``kps_score_lowres`` (4x4 stride-2 transpose conv to ``num_keypoints`` channels, as
    :class:`SubPixelConvTranspose`), then 2x bilinear upsampling (torchvision's
    ``KeypointRCNNPredictor``).

    Call: ``[R, P, P, Ch]`` -> ``[R, 4P, 4P, num_keypoints]`` float32 logits.
    """

    num_keypoints: int = 17
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = SubPixelConvTranspose(self.num_keypoints, dtype=self.dtype,
                                  name="kps_score_lowres")(x)
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


KEYPOINT_TARGETS = ("cell", "bilinear")
KEYPOINT_DECODES = ("bicubic", "local_mean")


def keypoint_targets(
    rois: jax.Array, matched_gt: jax.Array, gt_keypoints: jax.Array, heatmap_size: int,
    encoding: str = "cell",
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Heatmap targets of ONE image's RoIs.

    Args:
      rois: ``[R, 4]`` float32 ``(x1, y1, x2, y2)`` absolute pixels.
      matched_gt: ``[R]`` int gt row of each RoI; ``-1``: no target (all keypoints invalid).
      gt_keypoints: ``[G, K, 3]`` ``(x, y, v)`` absolute pixels, ``v > 0`` labelled.
      heatmap_size: static ``S``.
      encoding: ``"cell"`` (torchvision's ``keypoints_to_heatmap`` rule: all the mass on the
        cell holding the keypoint) or ``"bilinear"`` (:func:`jaxdet.ops.
        keypoints_to_bilinear_heatmap`: split over the 4 cells around it, sub-cell precise).

    Returns:
      ``(cells int32 [R, K, 4] flat indices cy * S + cx, weights float32 [R, K, 4],
      valid bool [R, K])``: target distribution of keypoint ``k`` of RoI ``r`` = ``weights``
      on ``cells`` (``"cell"``: the cell with weight 1 in slot 0, zeros after it).
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
    """Softmax cross-entropy over the ``S * S`` heatmap positions as a ``(sum, count)`` pair.

    Args:
      logits: ``[..., R, S, S, K]`` float heatmap logits (NHWC).
      cells: ``[..., R, K, C]`` int flat cell indices ``cy * S + cx`` (:func:`keypoint_targets`).
      weights: ``[..., R, K, C]`` float target probability of each of those cells.
      valid: ``[..., R, K]`` bool, the keypoints that count.

    Returns:
      float32 ``(sum of -sum_c weights_c log p(cells_c) over valid keypoints, number of valid
      keypoints)``; with one-hot targets ``sum / max(count, 1)`` is torchvision's
      ``keypointrcnn_loss`` (bilinear targets: its minimum is their entropy, not 0). Invalid
      keypoints add nothing and get zero gradient (even with non-finite logits there).
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
    """Heatmaps of mirrored RoIs of a mirrored image -> the original image's frame.

    Args:
      logits: ``[..., S, S, K]`` heatmaps (NHWC) read from the horizontally flipped image in
        the mirrored RoIs ``(W - x2, y1, W - x1, y2)``.
      flip_pairs: static ``(left, right)`` keypoint index pairs.

    Returns:
      ``[..., S, S, K]``: columns reversed (cell ``j`` of a mirrored RoI covers what cell
      ``S - 1 - j`` of the RoI covers) and each pair's channels swapped. Its own inverse.
    """
    perm = list(range(logits.shape[-1]))
    for left, right in flip_pairs:
        perm[left], perm[right] = right, left
    return jnp.flip(logits, axis=-2)[..., jnp.asarray(perm)]


def keypoint_confidence(logits: jax.Array) -> jax.Array:
    """``[..., S, S, K]`` heatmap logits -> ``[...]`` float32 mean over the ``K`` keypoints of
    each heatmap's peak softmax probability (in ``(0, 1]``; shift-invariant, unlike the peak
    logit). Top-down pose estimators rescore person detections by such a mean keypoint
    confidence times the box score (``DetectorSpec.keypoint_rescore``)."""
    *lead, s, s2, k = logits.shape
    x = logits.astype(jnp.float32).reshape(*lead, s * s2, k)
    peak = jnp.exp(jnp.max(x, axis=-2) - jax.nn.logsumexp(x, axis=-2))  # [..., K]
    return jnp.mean(peak, axis=-1)


def decode_keypoints(logits: jax.Array, rois: jax.Array, window: int = 32,
                     method: str = "bicubic") -> jax.Array:
    """``[R, S, S, K]`` heatmap logits of ``[R, 4]`` RoIs -> ``[R, K, 3]`` float32
    ``(x, y, score)`` in image pixels.

    ``method``: ``"bicubic"`` (:func:`jaxdet.ops.heatmaps_to_keypoints`, torchvision's; ``window``:
    its static search block, exact for RoIs up to ``window`` px a side) or ``"local_mean"``
    (:func:`jaxdet.ops.heatmaps_to_keypoints_local_mean`, the inverse of bilinear targets)."""
    maps = jnp.moveaxis(logits, -1, 1)
    if method == "bicubic":
        return heatmaps_to_keypoints(maps, rois, window=window)
    if method == "local_mean":
        return heatmaps_to_keypoints_local_mean(maps, rois)
    raise ValueError(f"keypoint decode method {method!r}; expected one of {KEYPOINT_DECODES}")
