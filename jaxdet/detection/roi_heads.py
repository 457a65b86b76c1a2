"""Fast R-CNN box branch, static shapes (torchvision's ``RoIHeads`` box part).

Per-image functions take one image's padded tensors plus validity masks (``jax.vmap`` for a
batch). Boxes are float32 ``(x1, y1, x2, y2)`` absolute pixels of the network input (no "+1");
box math stays float32 under bfloat16 heads. ``C`` object classes without background:
``gt_labels`` / detected classes are 0-based, RoI labels and logit columns ``C + 1`` wide with
0 background and ``c + 1`` class ``c``. Deltas ``(dx, dy, dw, dh)``, weights
``(10, 10, 5, 5)``; per-class deltas ``[R, 4 * (C + 1)]``, class ``k`` at ``4k .. 4k + 3``.

Training: vmapped :func:`roi_targets` -> RoIAlign of ``t.rois`` -> :class:`BoxHead` ->
:func:`roi_losses`. Inference: vmapped :func:`postprocess_detections`, :func:`rescale_boxes`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdet.core import Detections
from jaxdet.detection.select import PostprocessSpec, select_detections
from jaxdet.losses.regression import smooth_l1
from jaxdet.ops.box_coder import decode_boxes, encode_boxes
from jaxdet.ops.boxes import box_iou, clip_boxes
from jaxdet.ops.matcher import match, matches_to_labels
from jaxdet.ops.sampler import sample_balanced

__all__ = [
    "BOX_CODER_WEIGHTS",
    "BoxHead",
    "FastRCNNPredictor",
    "RoiPool",
    "RoiSpec",
    "RoiTargets",
    "detect",
    "sample_rois",
    "TwoMLPHead",
    "postprocess_detections",
    "rescale_boxes",
    "roi_losses",
    "roi_targets",
]

#: torchvision's RoI-heads box-coder weights ``(wx, wy, ww, wh)``.
BOX_CODER_WEIGHTS = (10.0, 10.0, 5.0, 5.0)

#: ``pool(rois [B, R, 4], bins, image_index=None) -> [B, R, bins, bins, C]``, or with
#: ``image_index [K]``: ``pool(rois [K, 4], bins, image_index) -> [K, bins, bins, C]``: RoIAlign
#: of a detector's features, what its RoI branches (mask, keypoint) are given.
RoiPool = Callable[..., jax.Array]


@dataclasses.dataclass(frozen=True)
class RoiSpec:
    """``config.model.roi``: RoI sampling, pooling and the box head (torchvision's COCO defaults).

    Sampling: a proposal is foreground at IoU ``>= fg_iou``, background below ``bg_iou``;
    ``batch_size_per_image`` RoIs per image, at most ``positive_fraction`` of them foreground.
    Pooling: RoIAlign ``output_size`` bins with ``sampling_ratio`` samples per bin and axis,
    ``aligned`` half-pixel offset (True: detectron2's ROIAlignV2; False: torchvision's
    ``MultiScaleRoIAlign``, for its weights); FPN level ``floor(canonical_level + log2(sqrt(wh) /
    canonical_size))``. Box head: ``representation_size`` wide MLP; losses with
    ``smooth_l1_beta``; deltas scaled by ``box_weights`` ``(wx, wy, ww, wh)``.
    """

    fg_iou: float = 0.5
    bg_iou: float = 0.5
    batch_size_per_image: int = 512
    positive_fraction: float = 0.25
    output_size: int = 7
    sampling_ratio: int = 2
    aligned: bool = True
    canonical_size: float = 224.0
    canonical_level: int = 4
    smooth_l1_beta: float = 1.0 / 9
    representation_size: int = 1024
    box_weights: tuple[float, float, float, float] = BOX_CODER_WEIGHTS

    @property
    def num_foreground_slots(self) -> int:
        """The sampler's foreground budget per image, ``int(batch_size * positive_fraction)``
        (at least 1)."""
        return max(int(self.batch_size_per_image * self.positive_fraction), 1)


def _f32(x: jax.typing.ArrayLike) -> jax.Array:
    x = jnp.asarray(x)
    return x if x.dtype == jnp.float32 else x.astype(jnp.float32)


# ---------------------------------------------------------------------------------------------
# Training targets
# ---------------------------------------------------------------------------------------------


class RoiTargets(NamedTuple):
    """Sampled RoIs of one image (a pytree; ``vmap`` adds ``[B, ...]``), ``stop_gradient``-ed.

    ``S`` slots: sampled foreground, background, then padding. ``rois`` ``[S, 4]`` float32 pixels
    (zeros on padding); ``labels`` ``[S]`` int32 (``c + 1`` / 0); ``regression_targets`` ``[S, 4]``
    RoI -> matched gt (zeros, never NaN, unless foreground); ``matched_gt`` ``[S]`` int32 gt row
    or ``-1``; ``valid`` ``[S]`` bool, False on padding.
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
    """torchvision's ``RoIHeads.select_training_samples`` for ONE image.

    Gt boxes are appended to the proposals; valid candidates match their best valid gt (no
    low-quality matches): foreground ``>= fg_iou``, background ``< bg_iou``, else ignored;
    :func:`jaxdet.ops.sample_balanced` draws ``S = batch_size_per_image`` slots, at most
    ``int(S * positive_fraction)`` foreground. Inputs: ``proposals`` ``[P, 4]`` + ``[P]`` valid,
    ``gt_boxes`` ``[G, 4]``, ``gt_labels`` ``[G]`` in ``[0, C)``, ``gt_valid`` ``[G]``, ``rng``.
    Keyword arguments are static. Returns :class:`RoiTargets`.
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
    """``[R, h, w, Ch]`` NHWC -> flatten (row-major ``(h, w, Ch)``) -> ``fc6`` -> ReLU -> ``fc7`` ->
    ReLU: ``[R, representation_size]`` in ``dtype`` (params float32).

    torchvision's ``fc6.weight`` ``W`` ``[out, Ch * h * w]`` (NCHW) imports as
    ``W.reshape(out, Ch, h, w).transpose(2, 3, 1, 0).reshape(h * w * Ch, out)``; other ``Linear``
    layers as ``kernel = W.T``.
    """

    representation_size: int = 1024
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(self.representation_size, dtype=self.dtype, name="fc6")(x))
        return nn.relu(nn.Dense(self.representation_size, dtype=self.dtype, name="fc7")(x))


class FastRCNNPredictor(nn.Module):
    """``[R, D]`` -> ``cls_score`` ``[R, C + 1]``, ``bbox_pred`` ``[R, 4 * (C + 1)]`` float32
    (``C = num_classes``); init as detectron2's (std 0.01 / 0.001, zero biases).
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
    """:class:`TwoMLPHead` (``box_head``) + :class:`FastRCNNPredictor` (``box_predictor``): maps
    one-to-one onto torchvision's ``roi_heads.box_head.fc6/fc7`` and
    ``roi_heads.box_predictor.cls_score/bbox_pred``.

    Call: ``[R, h, w, Ch]`` NHWC -> ``(class_logits [R, C + 1], box_deltas [R, 4 * (C + 1)])``
    float32.
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
    """torchvision's ``fastrcnn_loss`` as ``(sum, count)`` pairs.

    Cross-entropy over valid RoIs; smooth L1 (``smooth_l1_beta``) of foreground RoIs' gt-class
    deltas; ``count`` = valid RoIs for both (``sum / max(count, 1)`` after ``psum`` is
    torchvision's). Others add nothing, zero gradient. Leading axes are summed: ``class_logits``
    ``[..., S, C + 1]``, ``box_deltas`` ``[..., S, 4 * (C + 1)]`` (else ValueError), ``targets``
    ``[..., S]``. Returns ``{"loss_classifier": (ce_sum, n), "loss_box_reg": (box_sum, n)}``.
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
    """torchvision's ``RoIHeads.postprocess_detections`` for ONE image.

    Softmax, decode each class's deltas against its proposal, clip to ``image_size``
    ``(height, width)`` (numbers or traced ``[2]``), drop background, then
    :func:`~jaxdet.detection.select.select_detections` over the ``R * C`` candidates. Inputs
    ``class_logits`` ``[R, C + 1]``, ``box_deltas`` ``[R, 4 * (C + 1)]``, ``proposals`` ``[R, 4]``,
    ``proposal_valid`` ``[R]``. Returns :class:`Detections` with ``detections_per_img`` rows.
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


def sample_rois(spec: RoiSpec, proposals: jax.Array, proposal_valid: jax.Array,
                targets: Mapping[str, jax.Array], rng: jax.Array,
                real: jax.Array) -> RoiTargets:
    """Vmapped :func:`roi_targets` of ``[B, P, 4]`` proposals against ``targets`` (``gt_boxes``,
    ``gt_labels``, ``gt_valid``), one key per image in ``rng`` ``[B]``: ``[B, S, ...]`` RoIs
    (``S = spec.batch_size_per_image``); the RoIs of examples with ``real`` ``[B]`` False are
    invalid.
    """
    t = jax.vmap(lambda p, v, g, lab, gv, k: roi_targets(
        p, v, g, lab, gv, k, fg_iou=spec.fg_iou, bg_iou=spec.bg_iou,
        batch_size_per_image=spec.batch_size_per_image,
        positive_fraction=spec.positive_fraction, weights=spec.box_weights))(
        proposals, proposal_valid, targets["gt_boxes"], targets["gt_labels"],
        targets["gt_valid"], rng)
    return t._replace(valid=t.valid & real[:, None])


def detect(roi: RoiSpec, post: PostprocessSpec, class_logits: jax.Array,
           box_deltas: jax.Array, proposals: jax.Array, proposal_valid: jax.Array,
           image_hw: jax.Array) -> Detections:
    """Vmapped :func:`postprocess_detections` over ``[B, P, ...]`` box-head outputs and
    ``image_hw`` ``[B, 2]``: :class:`Detections` fields ``[B, post.detections_per_img]``.
    """
    one = lambda lg, dl, p, v, hw: postprocess_detections(  # noqa: E731
        lg, dl, p, v, hw, weights=roi.box_weights, score_thresh=post.score_thresh,
        nms_thresh=post.nms_thresh, detections_per_img=post.detections_per_img)
    return jax.vmap(one)(class_logits, box_deltas, proposals, proposal_valid, image_hw)


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
    """``[..., 4]`` pixel boxes of a ``from_size`` image -> a ``to_size`` one (``(height, width)``;
    torchvision's ``resize_boxes``): ``x * to_w / from_w``, ``y * to_h / from_h``, float32.
    """
    b = _f32(boxes)
    fh, fw = _f32(from_size[0]), _f32(from_size[1])
    th, tw = _f32(to_size[0]), _f32(to_size[1])
    rh = th / fh
    rw = tw / fw
    scale = jnp.stack([rw, rh, rw, rh], axis=-1)
    return b * scale
