"""Confusion-matrix segmentation metrics: mean IoU, pixel accuracy, class-average accuracy.

The matrix is additive (summed over batches, ``psum``-ed over devices) and summarised once on
the host.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def confusion_matrix(
    predictions: jax.Array,
    labels: jax.Array,
    num_classes: int,
    example_mask: jax.Array | None = None,
    ignore_label: int = 255,
) -> jax.Array:
    """Float32 ``[C, C]`` counts of (true class row, predicted class column) over valid pixels.

    ``predictions``, ``labels``: ``[B, H, W]`` int; pixels labelled ``ignore_label`` and examples
    with ``example_mask`` (optional ``[B]``) 0 are not counted.
    """
    valid = labels != ignore_label
    if example_mask is not None:
        valid = valid & (example_mask[:, None, None] > 0)
    flat = jnp.where(valid, labels * num_classes + predictions, 0).reshape(-1)
    counts = jnp.zeros((num_classes * num_classes,), jnp.float32)
    counts = counts.at[flat].add(valid.reshape(-1).astype(jnp.float32))
    return counts.reshape(num_classes, num_classes)


def summarize(confusion: np.ndarray, class_names: list[str] | None = None) -> dict[str, float]:
    """Mean IoU, pixel accuracy, class-average accuracy and ``iou/<name>`` per class.

    Classes absent from both labels and predictions are left out of the means.
    """
    confusion = np.asarray(confusion, np.float64)
    true_positive = np.diag(confusion)
    per_true = confusion.sum(axis=1)
    per_pred = confusion.sum(axis=0)
    union = per_true + per_pred - true_positive
    present = union > 0
    iou = np.where(present, true_positive / np.maximum(union, 1), np.nan)
    recall = np.where(per_true > 0, true_positive / np.maximum(per_true, 1), np.nan)
    total = confusion.sum()
    out = {
        "mean_iou": float(np.nanmean(iou)) if present.any() else 0.0,
        "pixel_accuracy": float(true_positive.sum() / total) if total else 0.0,
        "class_accuracy": float(np.nanmean(recall)) if (per_true > 0).any() else 0.0,
        "num_pixels": float(total),
    }
    names = class_names or [str(i) for i in range(len(iou))]
    for name, value in zip(names, iou, strict=True):
        out[f"iou/{name}"] = float(value)
    return out
