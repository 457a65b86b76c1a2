"""Fast R-CNN RoI box heads with static shapes: targets, the box head, losses, detections.

The semantics of torchvision's ``RoIHeads`` (box branch) and ``FastRCNNPredictor``, written
for ``jit`` / ``vmap``: every per-image function takes one image's padded tensors plus
validity masks and returns fixed-size outputs; ``jax.vmap`` adds the batch axis.

Conventions:

* Boxes are float32 ``[..., 4]`` ``(x1, y1, x2, y2)`` in absolute pixels of the network's
  input image (no "+1" in widths). Box coordinates, IoUs, deltas and scores are computed in
  float32 even when the features / head run in bfloat16.
* ``C`` is the number of object classes, *without* background. Ground-truth labels
  (``gt_labels``) and detected classes are 0-based object classes in ``[0, C)``; the RoI
  labels of :func:`roi_targets` and the logits' columns are ``C + 1`` wide with ``0`` the
  background and ``c + 1`` object class ``c`` (torchvision's layout).
* Box deltas ``(dx, dy, dw, dh)`` use the R-CNN coder of :mod:`jaxdet.ops.box_coder` with
  weights ``(10, 10, 5, 5)``; the per-class deltas are ``[R, 4 * (C + 1)]``, class ``k``'s
  four numbers at columns ``4k .. 4k + 3`` (torchvision's ``bbox_pred`` layout).

Pipeline (training)::

    t = jax.vmap(partial(roi_targets, batch_size_per_image=512))(
        proposals, proposal_valid, gt_boxes, gt_labels, gt_valid, rngs)  # [B, S, ...]
    feats = jax.vmap(multilevel_roi_align)(fpn_maps, t.rois)            # [B, S, 7, 7, Ch]
    logits, deltas = BoxHead(C)(feats.reshape(-1, 7, 7, Ch))             # [B*S, ...]
    terms = roi_losses(logits.reshape(B, S, -1), deltas.reshape(B, S, -1), t)

and at inference :func:`postprocess_detections` (vmapped) then :func:`rescale_boxes`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdet.core import Detections
from jaxdet.detection.select import select_detections
from jaxdet.losses.regression import smooth_l1
from jaxdet.ops.box_coder import decode_boxes, encode_boxes
from jaxdet.ops.boxes import box_iou, clip_boxes
from jaxdet.ops.matcher import match, matches_to_labels
from jaxdet.ops.sampler import sample_balanced

__all__ = [
    "BOX_CODER_WEIGHTS",
    "BoxHead",
    "FastRCNNPredictor",
    "RoiTargets",
    "TwoMLPHead",
    "postprocess_detections",
    "rescale_boxes",
    "roi_losses",
    "roi_targets",
]

#: torchvision's RoI-heads box-coder weights ``(wx, wy, ww, wh)``.
BOX_CODER_WEIGHTS = (10.0, 10.0, 5.0, 5.0)


def _f32(x: jax.typing.ArrayLike) -> jax.Array:
    x = jnp.asarray(x)
    return x if x.dtype == jnp.float32 else x.astype(jnp.float32)


# ---------------------------------------------------------------------------------------------
# Training targets
# ---------------------------------------------------------------------------------------------


class RoiTargets(NamedTuple):
    """Sampled RoIs of one image and their targets (a pytree: ``vmap`` adds ``[B, ...]``).

    ``S = batch_size_per_image`` slots: the sampled foreground RoIs first, then the sampled
    background RoIs, then padding (``valid`` False). All outputs are ``stop_gradient``-ed.

    Attributes:
      rois: ``[S, 4]`` float32 ``(x1, y1, x2, y2)`` absolute pixels, the sampled candidates
        (proposals or appended gt boxes); zeros on padding.
      labels: ``[S]`` int32: ``c + 1`` for a foreground RoI matched to a gt of object class
        ``c``, ``0`` for background and padding.
      regression_targets: ``[S, 4]`` float32 deltas ``(dx, dy, dw, dh)`` that turn the RoI into
        its matched gt box (weights as passed, default ``(10, 10, 5, 5)``); zeros for
        background and padding (never NaN, even for degenerate padded boxes).
      matched_gt: ``[S]`` int32 index of the matched gt row for foreground RoIs, ``-1`` for
        background and padding (e.g. to gather mask targets).
      valid: ``[S]`` bool, ``True`` on sampled RoIs (foreground or background), ``False`` on
        padding.
    """

    rois: jax.Array
    labels: jax.Array
    regression_targets: jax.Array
    matched_gt: jax.Array
    valid: jax.Array


@functools.partial(
    jax.jit,
    static_argnames=("fg_iou", "bg_iou", "batch_size_per_image", "positive_fraction", "weights"),
)
def roi_targets(
    proposals: jax.typing.ArrayLike,
    proposal_valid: jax.typing.ArrayLike,
    gt_boxes: jax.typing.ArrayLike,
    gt_labels: jax.typing.ArrayLike,
    gt_valid: jax.typing.ArrayLike,
    rng: jax.Array,
    *,
    fg_iou: float = 0.5,
    bg_iou: float = 0.5,
    batch_size_per_image: int = 512,
    positive_fraction: float = 0.25,
    weights: tuple[float, float, float, float] = BOX_CODER_WEIGHTS,
) -> RoiTargets:
    """Match, sample and encode the RoIs of ONE image (torchvision's
    ``RoIHeads.select_training_samples``).

    1. The gt boxes are appended to the proposals: ``P + G`` candidates, valid where
       ``concat(proposal_valid, gt_valid)``.
    2. Each candidate is matched to its highest-IoU valid gt (no low-quality matches):
       foreground if IoU ``>= fg_iou``, background if ``< bg_iou``, ignored in between (never
       with the default 0.5 / 0.5). Invalid candidates are ignored. With no valid gt every
       valid candidate is background.
    3. :func:`jaxdet.ops.sample_balanced` draws ``batch_size_per_image`` RoIs, at most
       ``int(batch_size_per_image * positive_fraction)`` foreground.
    4. Labels are ``gt_labels + 1`` (0 = background); regression targets encode the matched gt
       box against the RoI with ``weights``.

    Args:
      proposals: ``[P, 4]`` float ``(x1, y1, x2, y2)`` absolute pixels (e.g. RPN output).
      proposal_valid: ``[P]`` bool, ``False`` on padded proposals.
      gt_boxes: ``[G, 4]`` float ``(x1, y1, x2, y2)`` absolute pixels, padded to ``G``.
      gt_labels: ``[G]`` int, 0-based object class in ``[0, C)``.
      gt_valid: ``[G]`` bool, ``False`` on padded gt rows.
      rng: a ``jax.random`` key for the sampler.
      fg_iou: foreground IoU threshold (``>=``).
      bg_iou: background IoU threshold (``<``); ``bg_iou <= fg_iou``.
      batch_size_per_image: static number ``S`` of RoI slots.
      positive_fraction: at most this fraction of ``S`` is foreground.
      weights: box-coder ``(wx, wy, ww, wh)`` (a tuple: static).

    Returns:
      :class:`RoiTargets` with ``S = batch_size_per_image`` rows.
    """
    proposals = _f32(proposals)
    gt_boxes = _f32(gt_boxes)
    gt_valid = jnp.asarray(gt_valid, bool)
    candidates = jnp.concatenate([proposals, gt_boxes], axis=0)  # [P+G, 4]
    cand_valid = jnp.concatenate([jnp.asarray(proposal_valid, bool), gt_valid], axis=0)

    iou = box_iou(gt_boxes, candidates)  # [G, P+G]
    matches = match(iou, gt_valid, high=fg_iou, low=bg_iou, allow_low_quality_matches=False)
    sample_labels = jnp.where(cand_valid, matches_to_labels(matches), -1)
    idx, valid = sample_balanced(rng, sample_labels, batch_size_per_image, positive_fraction)

    safe_idx = jnp.maximum(idx, 0)
    rois = jnp.where(valid[:, None], candidates[safe_idx], 0.0)
    m = jnp.where(valid, matches[safe_idx], -1)
    fg = m >= 0
    safe_m = jnp.maximum(m, 0)
    labels = jnp.where(fg, jnp.asarray(gt_labels).astype(jnp.int32)[safe_m] + 1, 0)
    # Encode against a unit box where not foreground so that padding never yields inf/NaN.
    unit = jnp.asarray([0.0, 0.0, 1.0, 1.0], jnp.float32)
    targets = encode_boxes(
        jnp.where(fg[:, None], gt_boxes[safe_m], unit),
        jnp.where(fg[:, None], rois, unit),
        weights,
    )
    targets = jnp.where(fg[:, None], targets, 0.0)
    out = RoiTargets(
        rois=rois,
        labels=labels.astype(jnp.int32),
        regression_targets=targets,
        matched_gt=m.astype(jnp.int32),
        valid=valid,
    )
    return jax.tree.map(jax.lax.stop_gradient, out)


# ---------------------------------------------------------------------------------------------
# Box head
# ---------------------------------------------------------------------------------------------


class TwoMLPHead(nn.Module):
    """Flatten pooled RoI features, then ``fc6`` -> ReLU -> ``fc7`` -> ReLU.

    Input ``[R, h, w, Ch]`` (NHWC, e.g. 7 x 7 RoIAlign output) -> ``[R, representation_size]``
    in ``dtype``. Flattening is row-major over ``(h, w, Ch)``, i.e. channel fastest.

    Importing torchvision's ``box_head.fc6.weight`` ``W`` (``[out, Ch * h * w]``, flattened
    from NCHW so the channel is *slowest*) therefore needs a permutation, not only a
    transpose: ``kernel = W.reshape(out, Ch, h, w).transpose(2, 3, 1, 0).reshape(h * w * Ch,
    out)``. ``fc7`` (and every other ``Linear``) is just ``kernel = W.T``, ``bias = b``.

    Attributes:
      representation_size: width of ``fc6`` and ``fc7`` (torchvision: 1024).
      dtype: computation dtype (e.g. ``jnp.bfloat16``); parameters stay float32.
    """

    representation_size: int = 1024
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(self.representation_size, dtype=self.dtype, name="fc6")(x))
        return nn.relu(nn.Dense(self.representation_size, dtype=self.dtype, name="fc7")(x))


class FastRCNNPredictor(nn.Module):
    """Linear class scores ``cls_score`` (``C + 1``) and per-class deltas ``bbox_pred``
    (``4 * (C + 1)``) from ``[R, D]`` RoI representations.

    Initialised like detectron2's ``FastRCNNOutputLayers`` (normal std 0.01 for scores,
    0.001 for deltas, zero biases). Outputs are float32 whatever ``dtype`` is.

    Attributes:
      num_classes: ``C``, object classes without background.
      dtype: computation dtype; parameters stay float32.
    """

    num_classes: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        k = self.num_classes + 1
        scores = nn.Dense(
            k, dtype=self.dtype, kernel_init=nn.initializers.normal(0.01), name="cls_score"
        )(x)
        deltas = nn.Dense(
            4 * k, dtype=self.dtype, kernel_init=nn.initializers.normal(0.001), name="bbox_pred"
        )(x)
        return scores.astype(jnp.float32), deltas.astype(jnp.float32)


class BoxHead(nn.Module):
    """The Fast R-CNN box branch: :class:`TwoMLPHead` (``box_head``) then
    :class:`FastRCNNPredictor` (``box_predictor``).

    Parameter tree::

        {"box_head": {"fc6": {kernel, bias}, "fc7": {...}},
         "box_predictor": {"cls_score": {...}, "bbox_pred": {...}}}

    so that, with this module named ``roi_heads`` in the detector, torchvision's
    ``roi_heads.box_head.fc6/fc7`` and ``roi_heads.box_predictor.cls_score/bbox_pred`` map
    one-to-one (``kernel = weight.T``; ``fc6`` also needs the NCHW -> NHWC permutation
    described in :class:`TwoMLPHead`; no importer is provided here).

    Call: pooled features ``[R, h, w, Ch]`` NHWC (any float dtype) ->
    ``(class_logits [R, C + 1], box_deltas [R, 4 * (C + 1)])``, both float32.

    Attributes:
      num_classes: ``C``, object classes without background.
      representation_size: MLP width (1024).
      dtype: computation dtype of the MLP and predictor (e.g. ``jnp.bfloat16``).
    """

    num_classes: int
    representation_size: int = 1024
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = TwoMLPHead(self.representation_size, dtype=self.dtype, name="box_head")(features)
        return FastRCNNPredictor(self.num_classes, dtype=self.dtype, name="box_predictor")(x)


# ---------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("smooth_l1_beta",))
def roi_losses(
    class_logits: jax.typing.ArrayLike,
    box_deltas: jax.typing.ArrayLike,
    targets: RoiTargets,
    *,
    smooth_l1_beta: float = 1.0 / 9.0,
) -> dict[str, tuple[jax.Array, jax.Array]]:
    """Fast R-CNN losses (torchvision's ``fastrcnn_loss``) as ``(sum, count)`` pairs.

    torchvision's values are ``loss_classifier = mean_i CE(logits_i, label_i)`` and
    ``loss_box_reg = sum_{i fg} smoothL1_beta(deltas_i[label_i] - target_i) / N`` with ``N``
    the number of sampled RoIs of the whole batch. Here both are returned as
    ``(sum over the given RoIs, number of valid sampled RoIs)`` so that the caller (e.g.
    :mod:`jaxdet.train.step`, which ``psum``-s both across devices) recovers the exact global
    mean ``sum / max(count, 1)``. Only the deltas of each RoI's gt class enter the box loss;
    background and padding rows contribute nothing and get zero gradient, even with
    non-finite inputs there.

    Leading axes are summed over, so one image (``[S, ...]``) or a batch (``[B, S, ...]``,
    e.g. vmapped :func:`roi_targets`) both work.

    Args:
      class_logits: ``[..., S, C + 1]`` float logits (column 0 background).
      box_deltas: ``[..., S, 4 * (C + 1)]`` float per-class deltas.
      targets: :class:`RoiTargets` with ``[..., S]`` leading shape.
      smooth_l1_beta: smooth-L1 transition (torchvision 1/9; 0 gives L1).

    Returns:
      ``{"loss_classifier": (ce_sum, n), "loss_box_reg": (box_sum, n)}``, float32 scalars, with
      ``n`` the number of valid sampled RoIs (the same count for both, as in torchvision).
    """
    logits = _f32(class_logits)
    deltas = _f32(box_deltas)
    k = logits.shape[-1]
    if deltas.shape[-1] != 4 * k or deltas.shape[:-1] != logits.shape[:-1]:
        raise ValueError(
            f"box_deltas must be [..., 4 * (C + 1)] = [..., {4 * k}] with the logits' leading "
            f"shape {logits.shape[:-1]}; got {deltas.shape}"
        )
    valid = targets.valid
    labels = jnp.where(valid, targets.labels, 0)
    logits = jnp.where(valid[..., None], logits, 0.0)
    logp = jax.nn.log_softmax(logits, axis=-1)
    ce = -jnp.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]
    ce_sum = jnp.sum(jnp.where(valid, ce, 0.0))

    fg = valid & (labels > 0)
    per_class = deltas.reshape(*deltas.shape[:-1], k, 4)
    pred = jnp.take_along_axis(per_class, labels[..., None, None], axis=-2)[..., 0, :]
    pred = jnp.where(fg[..., None], pred, 0.0)
    tgt = jnp.where(fg[..., None], _f32(targets.regression_targets), 0.0)
    box = jnp.sum(smooth_l1(pred - tgt, smooth_l1_beta), axis=-1)
    box_sum = jnp.sum(jnp.where(fg, box, 0.0))

    n = jnp.sum(valid, dtype=jnp.float32)
    return {"loss_classifier": (ce_sum, n), "loss_box_reg": (box_sum, n)}


# ---------------------------------------------------------------------------------------------
# Inference
# ---------------------------------------------------------------------------------------------


@functools.partial(
    jax.jit,
    static_argnames=(
        "weights",
        "score_thresh",
        "nms_thresh",
        "detections_per_img",
        "min_size",
    ),
)
def postprocess_detections(
    class_logits: jax.typing.ArrayLike,
    box_deltas: jax.typing.ArrayLike,
    proposals: jax.typing.ArrayLike,
    proposal_valid: jax.typing.ArrayLike,
    image_size: Sequence[float] | jax.typing.ArrayLike,
    *,
    weights: tuple[float, float, float, float] = BOX_CODER_WEIGHTS,
    score_thresh: float = 0.05,
    nms_thresh: float = 0.5,
    detections_per_img: int = 100,
    min_size: float = 1e-2,
) -> Detections:
    """Turn box-head outputs into detections for ONE image (torchvision's
    ``RoIHeads.postprocess_detections``).

    Softmax over ``C + 1`` classes; decode each class's deltas against its proposal; clip to
    the image; drop the background column; flatten to ``R * C`` candidates; keep candidates
    with ``score > score_thresh`` (strict), width and height ``>= min_size`` and a valid
    proposal; class-aware greedy NMS (suppress IoU ``> nms_thresh`` within a class,
    :func:`jaxdet.ops.batched_nms`); keep the ``detections_per_img`` best by score.

    Args:
      class_logits: ``[R, C + 1]`` float logits (column 0 background).
      box_deltas: ``[R, 4 * (C + 1)]`` float per-class deltas.
      proposals: ``[R, 4]`` float ``(x1, y1, x2, y2)`` absolute pixels the deltas refer to.
      proposal_valid: ``[R]`` bool, ``False`` on padded proposals.
      image_size: ``(height, width)`` of the network input in pixels (Python numbers or a
        ``[2]`` array, may be traced / vmapped); boxes are clipped to ``[0, width]`` x
        ``[0, height]``.
      weights: box-coder ``(wx, wy, ww, wh)``.
      score_thresh: minimum class probability (exclusive).
      nms_thresh: per-class NMS IoU threshold.
      detections_per_img: static number ``K`` of output rows.
      min_size: minimum box width and height in pixels after clipping.

    Returns:
      :class:`Detections` with ``K = detections_per_img`` rows.
    """
    logits = _f32(class_logits)
    r, k = logits.shape
    c = k - 1
    deltas = _f32(box_deltas).reshape(r, k, 4)
    proposals = _f32(proposals)
    height, width = image_size[0], image_size[1]

    scores = jax.nn.softmax(logits, axis=-1)[:, 1:]  # [R, C]
    boxes = decode_boxes(deltas[:, 1:], proposals[:, None, :], weights)  # [R, C, 4]
    boxes = clip_boxes(boxes, height, width)

    return select_detections(
        boxes.reshape(r * c, 4), scores.reshape(r * c),
        jnp.tile(jnp.arange(c, dtype=jnp.int32), r),
        jnp.repeat(jnp.asarray(proposal_valid, bool), c), score_thresh=score_thresh,
        nms_thresh=nms_thresh, detections_per_img=detections_per_img, min_size=min_size)


def default_image_hw(images: jax.Array, image_hw: jax.Array | None) -> jax.Array:
    """``[B, 2]`` float32 ``(height, width)``, the padded size where ``image_hw`` is None."""
    if image_hw is None:
        return jnp.broadcast_to(jnp.asarray(images.shape[1:3], jnp.float32),
                                (images.shape[0], 2))
    return jnp.asarray(image_hw, jnp.float32)


def rescale_boxes(
    boxes: jax.typing.ArrayLike,
    from_size: Sequence[float] | jax.typing.ArrayLike,
    to_size: Sequence[float] | jax.typing.ArrayLike,
) -> jax.Array:
    """Map boxes from an image of ``from_size`` to one of ``to_size`` (torchvision's
    ``resize_boxes``, used to return detections in original-image pixels).

    ``x * to_w / from_w``, ``y * to_h / from_h``; zero (padding) boxes stay zero.

    Args:
      boxes: ``[..., 4]`` float ``(x1, y1, x2, y2)`` absolute pixels of the ``from_size``
        image.
      from_size: ``(height, width)`` the boxes refer to (e.g. the resized network input).
      to_size: ``(height, width)`` to map to (e.g. the original image).

    Returns:
      ``[..., 4]`` float32 ``(x1, y1, x2, y2)`` absolute pixels of the ``to_size`` image.
    """
    b = _f32(boxes)
    fh, fw = _f32(from_size[0]), _f32(from_size[1])
    th, tw = _f32(to_size[0]), _f32(to_size[1])
    rh = th / fh
    rw = tw / fw
    scale = jnp.stack([rw, rh, rw, rh], axis=-1)
    return b * scale
