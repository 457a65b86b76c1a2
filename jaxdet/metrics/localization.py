"""Single-object classification + localisation metrics: additive float32 counts per batch
(summed, ``psum``-ed), turned into rates once on the host by :func:`summarize`.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxdet.ops import boxes as box_ops

IOU_THRESHOLD = 0.5
STAT_KEYS = ("count", "class_correct", "iou_sum", "iou50", "correct_and_iou50")


def paired_iou(boxes1: jax.Array, boxes2: jax.Array) -> jax.Array:
    """IoU of corresponding ``[B, 4]`` ``(x1, y1, x2, y2)`` boxes -> float32 ``[B]``.

    :func:`jaxdet.ops.boxes.box_iou` per pair, with its ``nan`` (two zero-area boxes) as 0; a
    degenerate box has no intersection: IoU 0 (or -0.0 with a negative union).
    """
    iou = jax.vmap(lambda a, b: box_ops.box_iou(a[None], b[None])[0, 0])(boxes1, boxes2)
    return jnp.where(jnp.isnan(iou), 0.0, iou)


def localization_stats(
    pred_labels: jax.Array,
    pred_boxes: jax.Array,
    gt_labels: jax.Array,
    gt_boxes: jax.Array,
    mask: jax.Array,
) -> dict[str, jax.Array]:
    """Additive counts for one batch of single-object images.

    ``pred_labels``, ``gt_labels``: ``[B]`` int; ``pred_boxes``, ``gt_boxes``: ``[B, 4]``
    ``(x1, y1, x2, y2)`` absolute pixels (IoU in float32); ``mask``: ``[B]``, 0 for padding
    (values ignored, even NaN). Returns float32 scalars ``count``, ``class_correct``, ``iou_sum``,
    ``iou50`` (IoU >= 0.5) and ``correct_and_iou50``.
    """
    valid = mask > 0
    iou = jnp.where(valid, paired_iou(pred_boxes, gt_boxes), 0.0)
    correct = valid & (pred_labels == gt_labels)
    hit = valid & (iou >= IOU_THRESHOLD)

    def count(x: jax.Array) -> jax.Array:
        return jnp.sum(x.astype(jnp.float32))

    return {
        "count": count(valid),
        "class_correct": count(correct),
        "iou_sum": jnp.sum(iou),
        "iou50": count(hit),
        "correct_and_iou50": count(correct & hit),
    }


def summarize(stats: Mapping[str, jax.typing.ArrayLike]) -> dict[str, float]:
    """Rates from summed :func:`localization_stats`, fractions of the valid examples (0.0 if none).

    ``accuracy``, ``mean_iou``, ``iou50_rate``, ``correct_and_iou50`` (right class and IoU >= 0.5,
    the classification + localisation success rate), and ``num_examples``.
    """
    n = float(np.asarray(stats["count"], np.float64))

    def rate(key: str) -> float:
        return float(np.asarray(stats[key], np.float64)) / n if n else 0.0

    return {
        "accuracy": rate("class_correct"),
        "mean_iou": rate("iou_sum"),
        "iou50_rate": rate("iou50"),
        "correct_and_iou50": rate("correct_and_iou50"),
        "num_examples": n,
    }
