"""The last step of every detector: candidate boxes -> padded :class:`~jaxdet.core.Detections`."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from jaxdet import config_files
from jaxdet.core import ConfigError, Detections
from jaxdet.ops.boxes import as_float32
from jaxdet.ops.nms import batched_nms


@dataclasses.dataclass(frozen=True)
class PostprocessSpec:
    """``config.model.postprocess`` of every detector: keep scores ``> score_thresh``, NMS per
    class at IoU ``> nms_thresh``, at most ``detections_per_img`` rows (torchvision's defaults).
    """

    score_thresh: float = 0.05
    nms_thresh: float = 0.5
    detections_per_img: int = 100


def postprocess_from_config(model: Mapping[str, Any],
                            defaults: PostprocessSpec = PostprocessSpec()) -> PostprocessSpec:
    """``defaults`` updated by the section ``config.model.postprocess`` (absent: ``defaults``).
    ConfigError on an unknown key there, or on one of its fields directly in ``config.model``.
    """
    for field in dataclasses.fields(PostprocessSpec):
        if field.name in model:
            raise ConfigError(f"config.model.{field.name}: set it as "
                              f"config.model.postprocess.{field.name}")
    given = config_files.spec_from_section(PostprocessSpec, model.get("postprocess"),
                                           "model.postprocess")
    explicit = {k: getattr(given, k) for k in (model.get("postprocess") or {})}
    return dataclasses.replace(defaults, **explicit)


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
    """The ``K = detections_per_img`` best candidates of ONE image: ``candidate_valid``, score
    ``> score_thresh``, sides ``>= min_size``, then class-aware NMS (IoU ``> nms_thresh``).

    ``boxes`` ``[N, 4]`` clipped ``(x1, y1, x2, y2)`` pixels, ``scores`` ``[N]``, ``classes``
    ``[N]`` 0-based, ``candidate_valid`` ``[N]`` (padding may hold NaN). Returns
    :class:`~jaxdet.core.Detections` by descending score, padding zero with ``valid`` False.
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
