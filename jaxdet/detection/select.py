"""The last step of every detector: candidate boxes -> the padded :class:`~jaxdet.core.Detections`.

:func:`select_detections` keeps the candidates above a score threshold with a minimum size,
runs class-aware NMS and pads to a static number of rows. Faster R-CNN's box head, SSD and
YOLO differ only in how they score and decode their candidates before this step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdet.core import Detections
from jaxdet.ops.boxes import as_float32
from jaxdet.ops.nms import batched_nms


def select_detections(
    boxes: jax.typing.ArrayLike,
    scores: jax.typing.ArrayLike,
    classes: jax.typing.ArrayLike,
    candidate_valid: jax.typing.ArrayLike,
    *,
    score_thresh: float,
    nms_thresh: float,
    detections_per_img: int,
    min_size: float = 1e-2,
) -> Detections:
    """The ``K = detections_per_img`` best candidates of ONE image.

    A candidate is kept when ``candidate_valid``, ``score > score_thresh`` (strict) and its
    width and height are ``>= min_size``; class-aware greedy NMS then suppresses IoU
    ``> nms_thresh`` within a class (:func:`jaxdet.ops.batched_nms`).

    Args:
      boxes: ``[N, 4]`` float ``(x1, y1, x2, y2)`` absolute pixels (already clipped).
      scores: ``[N]`` float.
      classes: ``[N]`` int 0-based class of each candidate.
      candidate_valid: ``[N]`` bool (``False`` on padding; may hold NaN boxes there).
      score_thresh, nms_thresh, detections_per_img, min_size: as above (static).

    Returns:
      :class:`~jaxdet.core.Detections` with ``K`` rows sorted by descending score, padding
      rows zero with ``valid`` False.
    """
    boxes, scores = as_float32(boxes), as_float32(scores)
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    keep = (jnp.asarray(candidate_valid, bool) & (scores > score_thresh)
            & (w >= min_size) & (h >= min_size))
    # Invalid rows may hold garbage (NaN from padded inputs): neutralise before NMS.
    boxes = jnp.where(keep[:, None], boxes, 0.0)
    scores = jnp.where(keep, scores, 0.0)
    idx = batched_nms(boxes, scores, classes, nms_thresh, detections_per_img, valid=keep)
    valid = idx >= 0
    safe = jnp.maximum(idx, 0)
    return Detections(
        boxes=jnp.where(valid[:, None], boxes[safe], 0.0),
        scores=jnp.where(valid, scores[safe], 0.0),
        classes=jnp.where(valid, jnp.asarray(classes)[safe], 0).astype(jnp.int32),
        valid=valid,
    )
