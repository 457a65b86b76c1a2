"""Single-person keypoint metrics: PCK and mean joint error, as additive float32 counts
(:func:`keypoint_stats`, summed over batches and devices) turned into rates on the host.

A joint is a PCK hit when its distance to the truth is ``<= pck_threshold * box_size``, the
longer side of the person's ground-truth box in pixels (:func:`person_box_size`).
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

    ``pred``, ``gt``: ``[B, K, 2]`` ``(x, y)`` absolute pixels; ``visible``: ``[B, K]``, > 0
    counted; ``box_size``: ``[B]`` pixels; ``mask``: ``[B]``, 0 for padding (values ignored, even
    NaN). Returns float32 scalars ``visible_count``, ``pck_hits`` and ``error_sum`` (Euclidean,
    pixels).
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
    """Rates from summed :func:`keypoint_stats` (``pck_threshold`` only names the key).

    ``pck@<threshold>`` (e.g. ``pck@0.2``, fraction of hits) and ``mean_joint_error_px``, both 0.0
    without counted joints, and ``num_visible_joints``.
    """
    n = float(np.asarray(stats["visible_count"], np.float64))

    def rate(key: str) -> float:
        return float(np.asarray(stats[key], np.float64)) / n if n else 0.0

    return {
        f"pck@{pck_threshold:g}": rate("pck_hits"),
        "mean_joint_error_px": rate("error_sum"),
        "num_visible_joints": n,
    }
