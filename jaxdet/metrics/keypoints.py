"""Single-person keypoint (joint) regression metrics: PCK and mean joint error.

:func:`keypoint_stats` returns additive float32 counts over the visible joints of the valid
examples (summed over batches, ``psum``-ed over devices); :func:`summarize` turns the totals
into rates once, on the host.

A joint is a hit (Percentage of Correct Keypoints) when its Euclidean distance to the truth is
at most ``pck_threshold * box_size``, where ``box_size`` is the longer side of the person's
ground-truth box, ``max(x2 - x1, y2 - y1)`` (:func:`person_box_size`), in pixels.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

STAT_KEYS = ("visible_count", "pck_hits", "error_sum")


def person_box_size(boxes: jax.Array) -> jax.Array:
    """``[..., 4]`` ``(x1, y1, x2, y2)`` absolute pixels -> float32 ``[...]`` longer side."""
    b = boxes.astype(jnp.float32)
    return jnp.maximum(b[..., 2] - b[..., 0], b[..., 3] - b[..., 1])


def keypoint_stats(
    pred: jax.Array,
    gt: jax.Array,
    visible: jax.Array,
    box_size: jax.Array,
    mask: jax.Array,
    pck_threshold: float | jax.Array = 0.2,
) -> dict[str, jax.Array]:
    """Additive joint counts for one batch.

    Args:
      pred: ``[B, K, 2]`` predicted ``(x, y)`` per joint, absolute pixels (float32 math).
      gt: ``[B, K, 2]`` true ``(x, y)``, absolute pixels.
      visible: ``[B, K]`` > 0 for joints that are labelled/visible; others are ignored.
      box_size: ``[B]`` longer side of each person's box in pixels (:func:`person_box_size`).
      mask: ``[B]`` 1 for real examples, 0 for padding (whose values are ignored, even NaN).
      pck_threshold: a hit is ``distance <= pck_threshold * box_size``.

    Returns:
      float32 scalars: ``visible_count`` (counted joints), ``pck_hits`` (hits among them),
      ``error_sum`` (sum of their Euclidean errors in pixels).
    """
    valid = (visible > 0) & (mask[:, None] > 0)
    diff = jnp.where(valid[..., None], pred.astype(jnp.float32) - gt.astype(jnp.float32), 0.0)
    dist = jnp.sqrt(jnp.sum(jnp.square(diff), axis=-1))  # [B, K], 0 where not valid
    radius = jnp.asarray(pck_threshold, jnp.float32) * box_size.astype(jnp.float32)
    hit = valid & (dist <= radius[:, None])
    return {
        "visible_count": jnp.sum(valid.astype(jnp.float32)),
        "pck_hits": jnp.sum(hit.astype(jnp.float32)),
        "error_sum": jnp.sum(dist),
    }


def summarize(
    stats: Mapping[str, jax.typing.ArrayLike], pck_threshold: float = 0.2
) -> dict[str, float]:
    """Rates from summed :func:`keypoint_stats`.

    Args:
      stats: the summed counts.
      pck_threshold: the threshold the counts were made with (only names the key).

    Returns:
      ``pck@<threshold>`` (e.g. ``pck@0.2``: fraction of counted joints that are hits),
      ``mean_joint_error_px`` (mean Euclidean error in pixels), both 0.0 without counted
      joints, and ``num_visible_joints``.
    """
    n = float(np.asarray(stats["visible_count"], np.float64))

    def rate(key: str) -> float:
        return float(np.asarray(stats[key], np.float64)) / n if n else 0.0

    return {
        f"pck@{pck_threshold:g}": rate("pck_hits"),
        "mean_joint_error_px": rate("error_sum"),
        "num_visible_joints": n,
    }
