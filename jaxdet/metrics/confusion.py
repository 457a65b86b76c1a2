"""Confusion-matrix segmentation metrics: mean IoU, pixel accuracy, class-average accuracy.

The confusion matrix is accumulated on device over a whole split (additive, so it is
``psum``-ed across devices and summed across batches), then summarised once on the host.
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
    """Counts of (true class, predicted class) over valid pixels.

    Args:
      predictions: ``[B, H, W]`` int predicted class ids.
      labels: ``[B, H, W]`` int true class ids, or ``ignore_label``.
      num_classes: C.
      example_mask: optional ``[B]`` 1 for real examples, 0 for padding.
      ignore_label: label value that is not counted.

    Returns:
      ``[C, C]`` float32, rows = true class, columns = predicted class.
    """
    valid = labels != ignore_label
    if example_mask is not None:
        valid = valid & (example_mask[:, None, None] > 0)
    flat = jnp.where(valid, labels * num_classes + predictions, 0).reshape(-1)
    counts = jnp.zeros((num_classes * num_classes,), jnp.float32)
    counts = counts.at[flat].add(valid.reshape(-1).astype(jnp.float32))
    return counts.reshape(num_classes, num_classes)


def summarize(confusion: np.ndarray, class_names: list[str] | None = None) -> dict[str, float]:
    """Mean IoU, pixel accuracy and class-average accuracy from a ``[C, C]`` confusion matrix.

    Classes that never occur in the labels nor the predictions are left out of the means.
    Per-class IoU is reported as ``iou/<name>``.
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
