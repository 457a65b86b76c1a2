"""Region proposal network (torchvision's ``RPNHead`` / ``RegionProposalNetwork``), static shapes.

Target/loss/proposal functions handle ONE image (``jax.vmap`` them; one ``rng`` per image).
Boxes and anchors are float32 ``(x1, y1, x2, y2)`` absolute pixels of the padded input (no
"+1"), even when the head runs in bfloat16. Per-level anchor order is
:func:`jaxdet.ops.generate_level_anchors`' (row ``(y * W + x) * A + a``). Objectness is a logit;
deltas ``(dx, dy, dw, dh)`` with weights 1. Losses are ``(sum, count)`` pairs so torchvision's
batch (and cross-device) mean is exact::

    l = jax.vmap(rpn_losses)(objectness, deltas, targets)
    s, n = jax.lax.psum((l["objectness_sum"].sum(), l["count"].sum()), "data")
    objectness_loss = s / jnp.maximum(n, 1)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdet import ops
from jaxdet.losses.regression import smooth_l1
from jaxdet.models.conv import SameConv

__all__ = [
    "RPNHead",
    "RPNSpec",
    "batch_losses",
    "batch_proposals",
    "rpn_targets",
    "rpn_losses",
    "generate_proposals",
    "proposal_recall",
    "batch_proposal_recall",
]

_init = nn.initializers.normal(stddev=0.01)


@dataclasses.dataclass(frozen=True)
class RPNSpec:
    """``config.model.rpn`` (torchvision's COCO defaults).

    Anchors: ``anchor_sizes`` one tuple of sides (pixels) per pyramid level, ``aspect_ratios``
    height / width. Targets: positive at IoU ``>= fg_iou`` (or a gt's best anchor), negative
    below ``bg_iou``; ``batch_size_per_image`` sampled anchors, at most ``positive_fraction``
    positive; box loss smooth-L1 with ``smooth_l1_beta``. Proposals: the best
    ``pre_nms_top_n_*`` per level, NMS at ``nms_thresh``, sides ``>= min_size`` pixels, the best
    ``post_nms_top_n_*`` per image (``_train`` / ``_test``).
    """

    anchor_sizes: tuple[tuple[float, ...], ...] = ((32,), (64,), (128,), (256,), (512,))
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    fg_iou: float = 0.7
    bg_iou: float = 0.3
    batch_size_per_image: int = 256
    positive_fraction: float = 0.5
    pre_nms_top_n_train: int = 2000
    post_nms_top_n_train: int = 2000
    pre_nms_top_n_test: int = 1000
    post_nms_top_n_test: int = 1000
    nms_thresh: float = 0.7
    min_size: float = 1e-3
    smooth_l1_beta: float = 1.0 / 9

    @property
    def num_anchors(self) -> int:
        """Anchors per feature-map location."""
        return len(self.anchor_sizes[0]) * len(self.aspect_ratios)


class RPNHead(nn.Module):
    """torchvision's ``RPNHead``, shared across levels.

    ``conv_depth`` x (3x3 conv, SAME, ReLU), then 1x1 ``cls_logits`` (``A = num_anchors``) and
    ``bbox_pred`` (``4 A``, channel ``4 a + k`` = delta ``k`` of anchor ``a``); init N(0, 0.01),
    zero bias; outputs float32. torchvision names: ``conv`` <- ``head.conv.0.0`` (``conv_i`` <-
    ``head.conv.i.0`` if ``conv_depth > 1``), ``cls_logits``, ``bbox_pred`` <- ``head.*``.
    """

    num_anchors: int
    conv_depth: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features: Sequence[jax.Array]) -> tuple[list[jax.Array], list[jax.Array]]:
        """Per level ``[B, H_l, W_l, C]`` (same ``C``, non-empty; else ValueError) -> per level
        float32 ``[B, H_l * W_l * A]`` logits and ``[B, H_l * W_l * A, 4]`` deltas, anchor order.
        """
        if not features:
            raise ValueError("RPNHead needs at least one feature level")
        channels = features[0].shape[-1]
        names = ["conv"] if self.conv_depth == 1 else [f"conv_{i}" for i in range(self.conv_depth)]
        convs = [
            SameConv(
                channels,
                (3, 3),
                dtype=self.dtype,
                kernel_init=_init,
                bias_init=nn.initializers.zeros,
                name=name,
            )
            for name in names
        ]
        a = self.num_anchors
        cls_logits = SameConv(a, (1, 1), dtype=self.dtype, kernel_init=_init, name="cls_logits")
        bbox_pred = SameConv(4 * a, (1, 1), dtype=self.dtype, kernel_init=_init,
                             name="bbox_pred")
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
    """Match anchors ``[N, 4]`` to gt ``[G, 4]`` (``gt_valid``; ``G = 0`` allowed), sample and build
    targets of ONE image: :func:`jaxdet.ops.match` with low-quality matches (positive
    ``>= fg_iou`` or a gt's best anchor; negative ``< bg_iou``), then
    :func:`jaxdet.ops.sample_balanced` into ``S = batch_size_per_image`` slots (positives,
    negatives, padding), at most ``int(S * positive_fraction)`` positive. ``anchor_valid``
    ``[N]``: False anchors are never sampled or matched (torchvision keeps all).

    Returns ``indices`` ``[S]`` int32 (-1 padding), ``valid``, ``labels`` float32 1/0,
    ``positive``, ``regression_targets`` ``[S, 4]`` (0 unless positive), ``anchor_labels`` ``[N]``
    int32 1/0/-1, ``matched_gt`` ``[N]`` int32 (gt index; -1 below ``bg_iou`` or invalid, -2
    between).
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
    """torchvision's ``RegionProposalNetwork.compute_loss`` for ONE image: BCE over sampled anchors
    and smooth L1 (``smooth_l1_beta``) over positives' 4 deltas, both over the sampled count.

    ``objectness`` ``[N]``, ``deltas`` ``[N, 4]``, ``targets`` from :func:`rpn_targets`. Returns
    float32 ``objectness_sum``, ``box_sum``, ``count`` and per-image ``objectness_loss`` /
    ``box_loss`` (``sum / max(count, 1)``), finite when nothing is sampled.
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
    """Proposals of ONE image (torchvision's ``RegionProposalNetwork.filter_proposals``).

    Per level the top ``pre_nms_top_n`` logits; decode (``dw``/``dh`` clamped at
    ``log(1000 / 16)``), clip to ``image_size`` ``(height, width)`` (numbers or traced ``[2]``);
    drop sides ``< min_size`` px or ``sigmoid < score_thresh``; NMS at ``nms_thresh`` per level;
    best ``P = post_nms_top_n`` overall by logit. Per-level inputs: ``objectness`` ``[N_l]``,
    ``deltas`` / ``anchors`` ``[N_l, 4]`` (ValueError unless one of each per level); no gradient.

    Returns ``(proposals [P, 4], scores [P] (probabilities), valid [P])`` float32 / bool, by score
    descending, padding last (zeros).
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
    """``(num_gt_recalled, num_gt)`` int32 of ONE image: valid gt ``[G, 4]`` whose best IoU with a
    valid proposal ``[P, 4]`` is ``>= iou_threshold`` (top 100 proposals: AR@100 at 0.5).
    """
    iou = ops.box_iou(gt_boxes, proposals)  # [G, P]
    ok = jnp.asarray(proposal_valid, bool)[None, :] & ~jnp.isnan(iou)
    best = jnp.max(jnp.where(ok, iou, 0.0), axis=1, initial=0.0)  # [G]
    gv = jnp.asarray(gt_valid, bool)
    recalled = gv & (best >= iou_threshold)
    return jnp.sum(recalled, dtype=jnp.int32), jnp.sum(gv, dtype=jnp.int32)


def batch_proposal_recall(
    proposals: jax.Array,
    proposal_valid: jax.Array,
    gt_boxes: jax.Array,
    gt_valid: jax.Array,
    top_n: int,
) -> tuple[jax.Array, jax.Array]:
    """Vmapped :func:`proposal_recall` of the first ``top_n`` proposals of each image:
    ``proposals [B, P, 4]``, ``proposal_valid [B, P]``, ``gt_boxes [B, G, 4]``, ``gt_valid
    [B, G]`` -> ``(num_gt_recalled [B], num_gt [B])`` int32."""
    return jax.vmap(proposal_recall)(proposals[:, :top_n], proposal_valid[:, :top_n], gt_boxes,
                                     gt_valid)


def batch_proposals(spec: RPNSpec, objectness: Sequence[jax.Array], deltas: Sequence[jax.Array],
                    anchors: Sequence[jax.Array], image_hw: jax.Array, train: bool
                    ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Vmapped :func:`generate_proposals` with ``spec``'s train or test counts: per level
    ``[B, N_l]`` logits and ``[B, N_l, 4]`` deltas, ``[N_l, 4]`` anchors, ``image_hw`` ``[B, 2]``
    -> ``(proposals [B, P, 4] (no gradient), scores [B, P], valid [B, P])``.
    """
    pre = spec.pre_nms_top_n_train if train else spec.pre_nms_top_n_test
    post = spec.post_nms_top_n_train if train else spec.post_nms_top_n_test

    def one(obj, dl, hw):
        return generate_proposals(obj, dl, anchors, hw, pre_nms_top_n=pre, post_nms_top_n=post,
                                  nms_thresh=spec.nms_thresh, min_size=spec.min_size)

    boxes, scores, valid = jax.vmap(one)(objectness, deltas, image_hw)
    return jax.lax.stop_gradient(boxes), scores, valid


def batch_losses(spec: RPNSpec, objectness: Sequence[jax.Array], deltas: Sequence[jax.Array],
                 anchors: jax.Array, targets: Mapping[str, jax.Array], rng: jax.Array,
                 real: jax.Array) -> tuple[dict[str, tuple[jax.Array, jax.Array]],
                                           dict[str, jax.Array]]:
    """The RPN's loss terms over a batch: per level ``[B, N_l]`` logits and ``[B, N_l, 4]``
    deltas, ``anchors`` ``[N, 4]`` (levels concatenated), ``targets`` ``gt_boxes`` / ``gt_valid``,
    one key per image in ``rng`` ``[B]``; examples with ``real`` ``[B]`` False add nothing.

    Returns ``({"rpn_objectness": (sum, count), "rpn_box": (sum, count)}, rpn_targets)``, the
    second the vmapped :func:`rpn_targets` (for inspection).
    """
    t = jax.vmap(lambda g, v, k: rpn_targets(
        anchors, g, v, k, fg_iou=spec.fg_iou, bg_iou=spec.bg_iou,
        batch_size_per_image=spec.batch_size_per_image,
        positive_fraction=spec.positive_fraction))(targets["gt_boxes"], targets["gt_valid"], rng)
    losses = jax.vmap(lambda o, d, tt: rpn_losses(o, d, tt, smooth_l1_beta=spec.smooth_l1_beta))(
        jnp.concatenate(objectness, axis=1), jnp.concatenate(deltas, axis=1), t)
    losses = {k: jnp.where(real, v, 0.0) for k, v in losses.items()}
    count = jnp.sum(losses["count"])
    return {"rpn_objectness": (jnp.sum(losses["objectness_sum"]), count),
            "rpn_box": (jnp.sum(losses["box_sum"]), count)}, t
