"""Single-object classification + localisation metrics.

:func:`localization_stats` returns additive float32 counts over the valid examples of a batch
(summed over batches and ``psum``-ed over devices like the confusion matrix); :func:`summarize`
turns the totals into rates once, on the host.
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
    """IoU of corresponding boxes: ``[B, 4]``, ``[B, 4]`` ``(x1, y1, x2, y2)`` -> float32 ``[B]``.

    :func:`jaxdet.ops.boxes.box_iou` of each pair. Its ``0 / 0 = nan`` (two zero-area boxes) is
    returned as 0 here; a degenerate box (``x2 < x1`` or ``y2 < y1``) has no intersection and
    gets IoU 0 (or -0.0 with a negative union).
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

    Args:
      pred_labels: ``[B]`` int predicted class.
      pred_boxes: ``[B, 4]`` predicted ``(x1, y1, x2, y2)``, absolute pixels (any float dtype;
        IoU computed in float32).
      gt_labels: ``[B]`` int true class.
      gt_boxes: ``[B, 4]`` true ``(x1, y1, x2, y2)``, absolute pixels.
      mask: ``[B]`` 1 for real examples, 0 for padding (whose values are ignored, even NaN).

    Returns:
      float32 scalars: ``count`` (valid examples), ``class_correct`` (right class),
      ``iou_sum`` (sum of IoUs), ``iou50`` (IoU >= 0.5), ``correct_and_iou50`` (both).
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
    """Rates from summed :func:`localization_stats`.

    Returns:
      ``accuracy`` (right class), ``mean_iou``, ``iou50_rate`` (IoU >= 0.5),
      ``correct_and_iou50`` (right class AND IoU >= 0.5: the classification-plus-localisation
      success rate), each a fraction of the valid examples (0.0 when there are none), and
      ``num_examples``.
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
