"""Box geometry: areas, pairwise IoU, clipping and format conversions.

Boxes are ``[..., 4]`` ``(x1, y1, x2, y2)`` in absolute pixels, width ``x2 - x1`` (no "+1").
Other float dtypes (e.g. bfloat16) are cast to float32 so that IoU thresholds stay exact.
"""

import jax
import jax.numpy as jnp

__all__ = [
    "box_area",
    "box_iou",
    "clip_boxes",
    "xyxy_to_cxcywh",
    "cxcywh_to_xyxy",
    "xyxy_to_yxyx",
    "yxyx_to_xyxy",
]


def as_float32(x: jax.typing.ArrayLike) -> jax.Array:
    """``x`` as a float32 array (boxes, anchors and IoU stay float32 under bfloat16)."""
    x = jnp.asarray(x)
    return x if x.dtype == jnp.float32 else x.astype(jnp.float32)


def box_area(boxes: jax.typing.ArrayLike) -> jax.Array:
    """``[..., 4]`` boxes -> ``[...]`` float32 ``(x2 - x1) * (y2 - y1)``.

    Not clamped (as torchvision): ``x2 < x1`` gives a negative width and a signed area.
    """
    b = as_float32(boxes)
    return (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])


def box_iou(boxes1: jax.typing.ArrayLike, boxes2: jax.typing.ArrayLike) -> jax.Array:
    """Pairwise IoU, ``[N, 4]`` x ``[M, 4]`` -> ``[N, M]`` float32 (torchvision's ``box_iou``).

    ``inter / (area1 + area2 - inter)``, intersection clamped at 0; two zero-area boxes give
    ``0 / 0 = nan`` (mask such pairs). Use ``jax.vmap`` for batch axes.
    """
    b1 = as_float32(boxes1)
    b2 = as_float32(boxes2)
    area1 = box_area(b1)
    area2 = box_area(b2)
    lt = jnp.maximum(b1[:, None, :2], b2[None, :, :2])  # [N, M, 2]
    rb = jnp.minimum(b1[:, None, 2:], b2[None, :, 2:])  # [N, M, 2]
    wh = jnp.maximum(rb - lt, 0.0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[:, None] + area2[None, :] - inter
    return inter / union


def clip_boxes(boxes: jax.typing.ArrayLike, height: float, width: float) -> jax.Array:
    """Clip ``[..., 4]`` boxes to x in ``[0, width]``, y in ``[0, height]`` (float32).

    torchvision's ``clip_boxes_to_image`` convention (far edge ``width``, not ``width - 1``);
    ``height`` and ``width`` may be Python numbers or traced scalars.
    """
    b = as_float32(boxes)
    h = jnp.asarray(height, jnp.float32)
    w = jnp.asarray(width, jnp.float32)
    x = jnp.clip(b[..., 0::2], 0.0, w)
    y = jnp.clip(b[..., 1::2], 0.0, h)
    return jnp.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], axis=-1)


def xyxy_to_cxcywh(boxes: jax.typing.ArrayLike) -> jax.Array:
    """``[..., 4]`` ``(x1, y1, x2, y2)`` -> ``[..., 4]`` ``(cx, cy, w, h)``, float32."""
    b = as_float32(boxes)
    x1, y1, x2, y2 = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    return jnp.stack([(x1 + x2) * 0.5, (y1 + y2) * 0.5, x2 - x1, y2 - y1], axis=-1)


def cxcywh_to_xyxy(boxes: jax.typing.ArrayLike) -> jax.Array:
    """``[..., 4]`` ``(cx, cy, w, h)`` -> ``[..., 4]`` ``(x1, y1, x2, y2)``, float32."""
    b = as_float32(boxes)
    cx, cy, w, h = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    return jnp.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=-1)


def xyxy_to_yxyx(boxes: jax.typing.ArrayLike) -> jax.Array:
    """``[..., 4]`` ``(x1, y1, x2, y2)`` -> ``[..., 4]`` ``(y1, x1, y2, x2)``, float32."""
    b = as_float32(boxes)
    return b[..., jnp.array([1, 0, 3, 2])]


def yxyx_to_xyxy(boxes: jax.typing.ArrayLike) -> jax.Array:
    """``[..., 4]`` ``(y1, x1, y2, x2)`` -> ``[..., 4]`` ``(x1, y1, x2, y2)``, float32."""
    return xyxy_to_yxyx(boxes)  # the swap is its own inverse
