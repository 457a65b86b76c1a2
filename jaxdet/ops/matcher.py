"""Matching predictions (anchors, proposals) to ground-truth boxes by IoU.

Semantics of torchvision's ``Matcher`` with static shapes: ground truth is padded to a fixed
``G`` rows and a validity mask says which rows are real.
"""

import jax
import jax.numpy as jnp

__all__ = ["BELOW_LOW_THRESHOLD", "BETWEEN_THRESHOLDS", "match", "matches_to_labels"]

#: Matcher output for a prediction whose best IoU is below ``low`` (background).
BELOW_LOW_THRESHOLD = -1
#: Matcher output for a prediction whose best IoU is in ``[low, high)`` (ignored).
BETWEEN_THRESHOLDS = -2


def match(
    iou: jax.typing.ArrayLike,
    gt_valid: jax.typing.ArrayLike,
    high: float,
    low: float,
    allow_low_quality_matches: bool,
) -> jax.Array:
    """Each prediction's best ground-truth index, or a negative code (torchvision's ``Matcher``).

    ``iou``: ``[G, N]`` (e.g. ``box_iou(gt_boxes, anchors)``); ``gt_valid``: ``[G]`` bool;
    ``low <= high`` (else ValueError). Returns int32 ``[N]``: with ``g* = argmax_g iou[g, n]``
    over valid rows (first on ties) and ``v = iou[g*, n]``, ``g*`` if ``v >= high``,
    :data:`BETWEEN_THRESHOLDS` (-2) if ``low <= v < high``, :data:`BELOW_LOW_THRESHOLD` (-1) if
    ``v < low`` or no gt is valid. ``allow_low_quality_matches`` (RPN: True at 0.7/0.3; RoI heads:
    False at 0.5/0.5) gives every prediction tied at a valid gt's best IoU ``q_g > 0`` its own
    ``g*`` even if ``v < high``.

    Unlike torchvision: padded rows never match nor create low-quality matches; a gt whose best
    IoU is 0 creates none (torchvision turns IoU-0 predictions into foreground); NaN IoUs
    (zero-area pairs) count as 0 (torchvision's ``max`` lets NaN win).
    """
    if low > high:
        raise ValueError(f"low ({low}) must be <= high ({high})")
    q = jnp.asarray(iou)
    q = q if q.dtype == jnp.float32 else q.astype(jnp.float32)
    q = jnp.where(jnp.isnan(q), 0.0, q)
    valid = jnp.asarray(gt_valid, bool)
    # Invalid rows get -inf so they never win the argmax; with no valid row v = -inf < low.
    masked = jnp.where(valid[:, None], q, -jnp.inf)  # [G, N]
    best = jnp.argmax(masked, axis=0).astype(jnp.int32)  # [N]
    value = jnp.max(masked, axis=0)  # [N]
    matches = jnp.where(value >= high, best, BETWEEN_THRESHOLDS)
    matches = jnp.where(value < low, BELOW_LOW_THRESHOLD, matches)
    if allow_low_quality_matches:
        best_per_gt = jnp.max(masked, axis=1, keepdims=True)  # [G, 1]
        is_best = (masked == best_per_gt) & (best_per_gt > 0)  # invalid rows: -inf > 0 false
        restore = jnp.any(is_best, axis=0)  # [N]
        matches = jnp.where(restore, best, matches)
    return matches.astype(jnp.int32)


def matches_to_labels(matches: jax.typing.ArrayLike) -> jax.Array:
    """:func:`match` output ``[...]`` -> int32 labels for :func:`jaxdet.ops.sample_balanced`:
    1 foreground (``>= 0``), 0 background (-1), -1 ignored (-2).
    """
    m = jnp.asarray(matches)
    labels = jnp.where(m >= 0, 1, jnp.where(m == BELOW_LOW_THRESHOLD, 0, -1))
    return labels.astype(jnp.int32)
