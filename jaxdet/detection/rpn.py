"""Region proposal network (Faster R-CNN's RPN) with static shapes.

Semantics of torchvision's ``torchvision.models.detection.rpn`` (``RPNHead`` and
``RegionProposalNetwork``), rewritten for ``jit``/``vmap``: every per-image quantity is a
padded array with a validity mask, never a Python list of per-image arrays. The only Python
lists are over FPN *levels*, which are static.

Conventions:

* Boxes and anchors are float32 ``[..., 4]`` ``(x1, y1, x2, y2)`` in absolute pixels of the
  (padded) network input, no "+1" in widths (see :mod:`jaxdet.ops`). Box geometry stays in
  float32 even when the head computes in bfloat16.
* Per-level anchor order is that of :func:`jaxdet.ops.generate_level_anchors`: row
  ``(y * W + x) * A + a`` is cell anchor ``a`` at feature location ``(y, x)``.
  :class:`RPNHead` flattens its outputs in exactly that order.
* Objectness is a logit (``> 0`` means object). Deltas are ``(dx, dy, dw, dh)`` with the RPN
  weights ``(1, 1, 1, 1)`` (:func:`jaxdet.ops.encode_boxes`).
* The target/loss/proposal functions handle ONE image; ``jax.vmap`` them over the batch (split
  the ``rng`` per image for :func:`rpn_targets`).

Losses are returned as ``(sum, count)`` pairs so a caller can take torchvision's mean over
all sampled anchors of the whole batch (and of all devices) exactly::

    l = jax.vmap(rpn_losses)(objectness, deltas, targets)        # per image
    s, n = jax.lax.psum((l["objectness_sum"].sum(), l["count"].sum()), "data")
    objectness_loss = s / jnp.maximum(n, 1)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdet import ops
from jaxdet.losses.regression import smooth_l1

__all__ = [
    "RPNHead",
    "rpn_targets",
    "rpn_losses",
    "generate_proposals",
    "proposal_recall",
]

_init = nn.initializers.normal(stddev=0.01)


class RPNHead(nn.Module):
    """The RPN head, shared across feature levels (torchvision's ``RPNHead``).

    Per level: ``conv_depth`` 3x3 convolutions (as many channels as the input, SAME padding)
    each followed by ReLU, then two 1x1 convolutions: ``cls_logits`` (``A`` outputs, one
    objectness logit per anchor) and ``bbox_pred`` (``4 A`` outputs, channel ``4 a + k`` is
    delta ``k`` of anchor ``a``, as in torchvision). All weights ~ N(0, 0.01), biases 0.

    Parameter names map onto torchvision's state dict (kernels ``[kh, kw, in, out]`` here,
    ``[out, in, kh, kw]`` there): ``conv`` <- ``head.conv.0.0`` (with ``conv_depth > 1``:
    ``conv_0``, ``conv_1``, ... <- ``head.conv.0.0``, ``head.conv.1.0``, ...),
    ``cls_logits`` <- ``head.cls_logits``, ``bbox_pred`` <- ``head.bbox_pred``.

    Attributes:
      num_anchors: ``A``, anchors per feature location (e.g. 3 aspect ratios).
      conv_depth: number of 3x3 conv + ReLU layers before the two predictors.
      dtype: computation dtype (e.g. ``jnp.bfloat16``); parameters stay float32 and the
        outputs are cast to float32.
    """

    num_anchors: int
    conv_depth: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features: Sequence[jax.Array]) -> tuple[list[jax.Array], list[jax.Array]]:
        """Apply the head to every level.

        Args:
          features: one ``[B, H_l, W_l, C]`` array per level (NHWC, the same ``C`` on every
            level).

        Returns:
          ``(objectness, deltas)``: per level, float32 ``[B, H_l * W_l * A]`` logits and
          float32 ``[B, H_l * W_l * A, 4]`` ``(dx, dy, dw, dh)``, rows in
          :func:`jaxdet.ops.generate_level_anchors` order (``(y * W_l + x) * A + a``).
        """
        if not features:
            raise ValueError("RPNHead needs at least one feature level")
        channels = features[0].shape[-1]
        names = ["conv"] if self.conv_depth == 1 else [f"conv_{i}" for i in range(self.conv_depth)]
        convs = [
            nn.Conv(
                channels,
                (3, 3),
                padding="SAME",
                dtype=self.dtype,
                kernel_init=_init,
                bias_init=nn.initializers.zeros,
                name=name,
            )
            for name in names
        ]
        a = self.num_anchors
        cls_logits = nn.Conv(a, (1, 1), dtype=self.dtype, kernel_init=_init, name="cls_logits")
        bbox_pred = nn.Conv(4 * a, (1, 1), dtype=self.dtype, kernel_init=_init, name="bbox_pred")
        objectness, deltas = [], []
        for x in features:
            if x.shape[-1] != channels:
                raise ValueError(f"every level needs {channels} channels, got {x.shape}")
            b, h, w, _ = x.shape
            for conv in convs:
                x = nn.relu(conv(x))
            objectness.append(cls_logits(x).astype(jnp.float32).reshape(b, h * w * a))
            deltas.append(bbox_pred(x).astype(jnp.float32).reshape(b, h * w * a, 4))
        return objectness, deltas


def rpn_targets(
    anchors: jax.typing.ArrayLike,
    gt_boxes: jax.typing.ArrayLike,
    gt_valid: jax.typing.ArrayLike,
    rng: jax.Array,
    *,
    anchor_valid: jax.typing.ArrayLike | None = None,
    fg_iou: float = 0.7,
    bg_iou: float = 0.3,
    batch_size_per_image: int = 256,
    positive_fraction: float = 0.5,
    weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
) -> dict[str, jax.Array]:
    """Match anchors to ground truth, sample a balanced subset and build their targets.

    One image (``jax.vmap`` for a batch, with one ``rng`` per image). Matching is
    :func:`jaxdet.ops.match` at ``(fg_iou, bg_iou)`` with low-quality matches allowed: an anchor
    is positive if its best IoU is ``>= fg_iou`` or it is (one of) the best anchor(s) of some
    gt, negative if its best IoU is ``< bg_iou``, ignored otherwise. Then
    :func:`jaxdet.ops.sample_balanced` draws up to ``S = batch_size_per_image`` anchors, at
    most ``int(S * positive_fraction)`` of them positive.

    Args:
      anchors: ``[N, 4]`` float32 ``(x1, y1, x2, y2)`` absolute pixels, all levels
        concatenated (``jnp.concatenate(generate_anchors(...))``).
      gt_boxes: ``[G, 4]`` ``(x1, y1, x2, y2)`` absolute pixels, padded to a static ``G``
        (``G = 0`` allowed).
      gt_valid: ``[G]`` bool, ``True`` for real gt rows (padding never matches).
      rng: ``jax.random`` key for the sampler.
      anchor_valid: optional ``[N]`` bool; ``False`` anchors are never sampled and never take a
        low-quality match (e.g. anchors outside the unpadded image, if wanted; torchvision
        keeps every anchor).
      fg_iou: foreground IoU threshold (a Python float: static under ``jit``, as are the
        other keyword arguments).
      bg_iou: background IoU threshold (``<= fg_iou``).
      batch_size_per_image: ``S``, the number of output slots.
      positive_fraction: maximum fraction of positives among the ``S`` samples.
      weights: box-coder weights ``(wx, wy, ww, wh)`` (Python floats).

    Returns:
      A dict of arrays (``S = batch_size_per_image``; sampled positives first, then sampled
      negatives, then padding):

      * ``"indices"``: ``[S]`` int32 sampled anchor indices into ``anchors``, ``-1`` padding.
      * ``"valid"``: ``[S]`` bool, ``False`` exactly on the padding.
      * ``"labels"``: ``[S]`` float32 objectness targets, 1 positive / 0 negative (0 on
        padding).
      * ``"positive"``: ``[S]`` bool, ``valid & labels == 1``.
      * ``"regression_targets"``: ``[S, 4]`` float32 ``(dx, dy, dw, dh)`` =
        ``encode_boxes(matched gt, anchor, weights)``; zeros where not ``positive``.
      * ``"anchor_labels"``: ``[N]`` int32 label of every anchor before sampling: 1 positive,
        0 negative, -1 ignored (between thresholds or ``anchor_valid=False``).
      * ``"matched_gt"``: ``[N]`` int32 matched gt index per anchor, or the matcher's
        negative codes (-1 below ``bg_iou``, -2 between); -1 for invalid anchors.
    """
    anchors = jnp.asarray(anchors, jnp.float32)
    gt = jnp.asarray(gt_boxes, jnp.float32)
    gt_valid = jnp.asarray(gt_valid, bool)
    if gt.shape[0] == 0:  # a static empty gt table: one padded row keeps the argmax defined
        gt, gt_valid = jnp.zeros((1, 4), jnp.float32), jnp.zeros((1,), bool)
    iou = ops.box_iou(gt, anchors)  # [G, N]
    if anchor_valid is not None:
        a_valid = jnp.asarray(anchor_valid, bool)
        # IoU 0 can neither reach a threshold nor tie with a positive best-of-gt IoU.
        iou = jnp.where(a_valid[None, :], iou, 0.0)
    matches = ops.match(iou, gt_valid, fg_iou, bg_iou, allow_low_quality_matches=True)
    labels = ops.matches_to_labels(matches)  # [N] 1 / 0 / -1
    if anchor_valid is not None:
        labels = jnp.where(a_valid, labels, -1)
        matches = jnp.where(a_valid, matches, ops.BELOW_LOW_THRESHOLD)
    idx, valid = ops.sample_balanced(rng, labels, batch_size_per_image, positive_fraction)
    safe = jnp.maximum(idx, 0)
    sampled_labels = jnp.where(valid, labels[safe], 0)
    positive = valid & (sampled_labels == 1)
    sampled_anchors = anchors[safe]  # [S, 4]
    matched = gt[jnp.maximum(matches[safe], 0)]  # [S, 4]
    # Non-positives encode the anchor against itself (0), so no log(0) is ever taken.
    target_boxes = jnp.where(positive[:, None], matched, sampled_anchors)
    reg = ops.encode_boxes(target_boxes, sampled_anchors, weights)
    reg = jnp.where(positive[:, None], reg, 0.0)
    return {
        "indices": idx,
        "valid": valid,
        "labels": sampled_labels.astype(jnp.float32),
        "positive": positive,
        "regression_targets": reg,
        "anchor_labels": labels,
        "matched_gt": matches,
    }


def rpn_losses(
    objectness: jax.typing.ArrayLike,
    deltas: jax.typing.ArrayLike,
    targets: dict[str, jax.Array],
    *,
    smooth_l1_beta: float = 1.0 / 9,
) -> dict[str, jax.Array]:
    """The RPN losses of one image (torchvision's ``RegionProposalNetwork.compute_loss``).

    * objectness: binary cross-entropy with logits, averaged over the sampled anchors;
    * box: smooth L1 (``beta = smooth_l1_beta``) summed over the 4 deltas of every sampled
      positive anchor, divided by the number of sampled anchors (positives AND negatives).

    torchvision averages both over all sampled anchors of the whole batch. To reproduce that
    across images and devices, sum ``*_sum`` and ``count`` over the batch (and ``psum`` over
    devices) and divide: ``sum / max(count, 1)``. The per-image ``*_loss`` values are
    ``sum / max(count, 1)`` of this image alone (equal to the batch mean only when every image
    samples the same number of anchors, e.g. all have >= ``S`` eligible anchors).

    Args:
      objectness: ``[N]`` logits over all anchors of the image (levels concatenated, any float
        dtype; computed in float32).
      deltas: ``[N, 4]`` predicted ``(dx, dy, dw, dh)``.
      targets: the output of :func:`rpn_targets` for this image.
      smooth_l1_beta: the smooth-L1 transition point (torchvision: 1/9; 0 gives L1).

    Returns:
      A dict of float32 scalars: ``"objectness_sum"`` (BCE summed over sampled anchors),
      ``"box_sum"`` (smooth L1 summed over sampled positives and the 4 coordinates),
      ``"count"`` (number of sampled anchors, the divisor of both losses), and
      ``"objectness_loss"`` / ``"box_loss"`` (the sums over ``max(count, 1)``). All are 0 and
      finite when nothing is sampled, and with no positive the box terms are 0.
    """
    logits = jnp.asarray(objectness).astype(jnp.float32)
    pred = jnp.asarray(deltas).astype(jnp.float32)
    idx = jnp.maximum(targets["indices"], 0)
    valid = targets["valid"]
    z = targets["labels"].astype(jnp.float32)
    x = logits[idx]  # [S]
    bce = jnp.maximum(x, 0.0) - x * z + jnp.log1p(jnp.exp(-jnp.abs(x)))
    obj_sum = jnp.sum(jnp.where(valid, bce, 0.0))
    diff = pred[idx] - targets["regression_targets"]  # [S, 4]
    box = jnp.sum(smooth_l1(diff, smooth_l1_beta), axis=-1)
    box_sum = jnp.sum(jnp.where(targets["positive"], box, 0.0))
    count = jnp.sum(valid).astype(jnp.float32)
    denom = jnp.maximum(count, 1.0)
    return {
        "objectness_sum": obj_sum,
        "box_sum": box_sum,
        "count": count,
        "objectness_loss": obj_sum / denom,
        "box_loss": box_sum / denom,
    }


def generate_proposals(
    objectness: Sequence[jax.typing.ArrayLike],
    deltas: Sequence[jax.typing.ArrayLike],
    anchors: Sequence[jax.typing.ArrayLike],
    image_size: Sequence[float] | jax.typing.ArrayLike,
    *,
    pre_nms_top_n: int,
    post_nms_top_n: int,
    nms_thresh: float = 0.7,
    min_size: float = 1e-3,
    score_thresh: float = 0.0,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Proposals of one image (torchvision's ``RegionProposalNetwork.filter_proposals``).

    1. per level, the ``min(pre_nms_top_n, N_l)`` anchors with the highest objectness;
    2. decode their deltas (:func:`jaxdet.ops.decode_boxes`, RPN weights ``(1, 1, 1, 1)``,
       ``dw``/``dh`` clamped at ``log(1000 / 16)``) and clip to the image;
    3. drop boxes with width or height ``< min_size`` and those with
       ``sigmoid(objectness) < score_thresh``;
    4. NMS at ``nms_thresh`` within each level (levels never suppress each other:
       :func:`jaxdet.ops.batched_nms` with the level as class), keeping the best
       ``post_nms_top_n`` over all levels by objectness.

    Inputs get ``stop_gradient`` (torchvision detaches them too). Scores are ordered by the
    logits (sigmoid saturates at 1.0 in float32 for logits above ~17, which would create ties
    that the logits do not have); the returned scores are the probabilities.

    Args:
      objectness: per level ``[N_l]`` logits (one image; rows in anchor order).
      deltas: per level ``[N_l, 4]`` ``(dx, dy, dw, dh)``.
      anchors: per level ``[N_l, 4]`` float32 ``(x1, y1, x2, y2)`` absolute pixels.
      image_size: ``(height, width)`` of the image to clip to, in pixels: Python numbers or a
        (traced) ``[2]`` array, e.g. the unpadded size of each image under ``vmap``.
      pre_nms_top_n: static per-level candidate count (torchvision: 2000 train / 1000 test).
      post_nms_top_n: static output size ``P`` (torchvision: 2000 train / 1000 test).
      nms_thresh: suppress a box whose IoU with a kept, higher-scoring box of the same level
        is ``> nms_thresh``.
      min_size: minimum width and height in pixels after clipping.
      score_thresh: minimum objectness probability.

    Returns:
      ``(proposals, scores, valid)``: ``[P, 4]`` float32 ``(x1, y1, x2, y2)`` absolute pixels,
      clipped to the image; ``[P]`` float32 objectness probabilities (sigmoid of the logits);
      ``[P]`` bool validity. Sorted by score, descending; padding rows (fewer than ``P``
      survivors) come last with box 0, score 0 and ``valid=False``.
    """
    if not (len(objectness) == len(deltas) == len(anchors)) or not objectness:
        raise ValueError("objectness, deltas and anchors need one entry per level")
    cand_logits, cand_boxes, cand_level = [], [], []
    for level, (obj, dl, anc) in enumerate(zip(objectness, deltas, anchors, strict=True)):
        obj = jax.lax.stop_gradient(jnp.asarray(obj).astype(jnp.float32))
        dl = jax.lax.stop_gradient(jnp.asarray(dl).astype(jnp.float32))
        anc = jnp.asarray(anc, jnp.float32)
        k = min(int(pre_nms_top_n), obj.shape[0])
        top, idx = jax.lax.top_k(obj, k)
        cand_logits.append(top)
        cand_boxes.append(ops.decode_boxes(dl[idx], anc[idx]))
        cand_level.append(jnp.full((k,), level, jnp.int32))
    logits = jnp.concatenate(cand_logits)
    boxes = jnp.concatenate(cand_boxes)
    levels = jnp.concatenate(cand_level)

    size = jnp.asarray(image_size, jnp.float32)
    boxes = ops.clip_boxes(boxes, size[0], size[1])
    probs = jax.nn.sigmoid(logits)
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    alive = (w >= min_size) & (h >= min_size) & (probs >= score_thresh)
    keep = ops.batched_nms(boxes, logits, levels, nms_thresh, post_nms_top_n, valid=alive)
    valid = keep >= 0
    safe = jnp.maximum(keep, 0)
    proposals = jnp.where(valid[:, None], boxes[safe], 0.0)
    scores = jnp.where(valid, probs[safe], 0.0)
    return proposals, scores, valid


def proposal_recall(
    proposals: jax.typing.ArrayLike,
    proposal_valid: jax.typing.ArrayLike,
    gt_boxes: jax.typing.ArrayLike,
    gt_valid: jax.typing.ArrayLike,
    iou_threshold: float = 0.5,
) -> tuple[jax.Array, jax.Array]:
    """How many ground-truth boxes some proposal covers at ``IoU >= iou_threshold``.

    One image; the counts add over images (recall = total recalled / total gt). With the top
    100 proposals this is AR@100 at a single IoU of 0.5.

    Args:
      proposals: ``[P, 4]`` ``(x1, y1, x2, y2)`` absolute pixels.
      proposal_valid: ``[P]`` bool, ``False`` for padding.
      gt_boxes: ``[G, 4]`` ``(x1, y1, x2, y2)`` absolute pixels.
      gt_valid: ``[G]`` bool, ``False`` for padding.
      iou_threshold: a gt counts as recalled when its best IoU with a valid proposal is
        ``>=`` this.

    Returns:
      ``(num_gt_recalled, num_gt)``: int32 scalars.
    """
    iou = ops.box_iou(gt_boxes, proposals)  # [G, P]
    ok = jnp.asarray(proposal_valid, bool)[None, :] & ~jnp.isnan(iou)
    best = jnp.max(jnp.where(ok, iou, 0.0), axis=1, initial=0.0)  # [G]
    gv = jnp.asarray(gt_valid, bool)
    recalled = gv & (best >= iou_threshold)
    return jnp.sum(recalled, dtype=jnp.int32), jnp.sum(gv, dtype=jnp.int32)
