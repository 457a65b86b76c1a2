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
    """Assign each prediction the index of its best ground-truth box, or a negative code.

    For prediction ``n`` let ``g* = argmax_g iou[g, n]`` over valid rows (first index on ties)
    and ``v = iou[g*, n]``. The result is ``g*`` if ``v >= high``, ``-2``
    (:data:`BETWEEN_THRESHOLDS`) if ``low <= v < high`` and ``-1``
    (:data:`BELOW_LOW_THRESHOLD`) if ``v < low``.

    With ``allow_low_quality_matches``, for every valid gt ``g`` with best IoU ``q_g =
    max_n iou[g, n] > 0``, every prediction ``n`` with ``iou[g, n] == q_g`` (all ties) gets
    ``g*`` back (its own argmax, which may be a different gt than ``g``), even if ``v < high``.

    Differences from torchvision's ``Matcher``, both deliberate: padded rows
    (``gt_valid=False``) never match and never create low-quality matches; and a valid gt
    whose best IoU is 0 creates no low-quality matches (torchvision would match every
    prediction that has IoU 0 with it to its argmax gt, i.e. turn background into
    foreground). With no valid gt every prediction is ``-1``.

    Args:
      iou: ``[G, N]`` float IoU of each gt row with each prediction (e.g.
        ``box_iou(gt_boxes, anchors)``). NaN entries (``box_iou`` of two zero-area boxes)
        count as 0. (torchvision's ``max`` lets a NaN win, so such a prediction would be
        matched as foreground there and its gt would lose its low-quality matches.)
      gt_valid: ``[G]`` bool, ``True`` for real gt rows.
      high: foreground threshold (``v >= high``).
      low: background threshold (``v < low``); ``low <= high``.
      allow_low_quality_matches: see above (RPN: ``True`` at 0.7/0.3; RoI heads: ``False`` at
        0.5/0.5).

    Returns:
      ``[N]`` int32 matched gt index in ``[0, G)``, or ``-1`` / ``-2``.
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
    """Turn :func:`match` output into sampler labels.

    Args:
      matches: ``[...]`` int matcher output.

    Returns:
      ``[...]`` int32: ``1`` foreground (``matches >= 0``), ``0`` background (``-1``),
      ``-1`` ignored (``-2``, between the thresholds) - the labels
      :func:`jaxdet.ops.sample_balanced` takes.
    """
    m = jnp.asarray(matches)
    labels = jnp.where(m >= 0, 1, jnp.where(m == BELOW_LOW_THRESHOLD, 0, -1))
    return labels.astype(jnp.int32)
