"""R-CNN box coding: boxes as deltas ``(dx, dy, dw, dh)`` from reference boxes, and back.

Boxes and references (anchors, proposals) are float32 ``[..., 4]`` ``(x1, y1, x2, y2)``,
absolute pixels, no "+1"; leading axes broadcast (per-class ``[R, K, 4]`` deltas against
``anchors[:, None, :]``)::

    dx = wx * (gcx - acx) / aw        dw = ww * log(gw / aw)
    dy = wy * (gcy - acy) / ah        dh = wh * log(gh / ah)

Usual weights ``(wx, wy, ww, wh)``: RPN ``(1, 1, 1, 1)``, R-CNN box head ``(10, 10, 5, 5)``.
"""

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from jaxdet.ops.boxes import as_float32

__all__ = ["DEFAULT_SCALE_CLIP", "encode_boxes", "decode_boxes"]

#: Upper bound on ``dw``/``dh`` before ``exp`` in :func:`decode_boxes`: a box may grow at most
#: 1000/16 times its reference box per side, which keeps ``exp`` finite.
DEFAULT_SCALE_CLIP = math.log(1000.0 / 16)


def _centres(boxes: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    return boxes[..., 0] + 0.5 * w, boxes[..., 1] + 0.5 * h, w, h


def encode_boxes(
    boxes: jax.typing.ArrayLike,
    anchors: jax.typing.ArrayLike,
    weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
) -> jax.Array:
    """Float32 deltas ``[..., 4]`` that turn ``anchors`` into ``boxes`` (``[..., 4]``, broadcast).

    Anchor widths and heights must be positive: a zero-size anchor gives inf/nan, as in the
    reference.
    """
    wx, wy, ww, wh = (float(w) for w in weights)
    gcx, gcy, gw, gh = _centres(as_float32(boxes))
    acx, acy, aw, ah = _centres(as_float32(anchors))
    return jnp.stack(
        [
            wx * (gcx - acx) / aw,
            wy * (gcy - acy) / ah,
            ww * jnp.log(gw / aw),
            wh * jnp.log(gh / ah),
        ],
        axis=-1,
    )


def decode_boxes(
    deltas: jax.typing.ArrayLike,
    anchors: jax.typing.ArrayLike,
    weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
    clip: float = DEFAULT_SCALE_CLIP,
) -> jax.Array:
    """Inverse of :func:`encode_boxes`: float32 boxes ``[..., 4]``, not clipped to the image.

    ``weights`` as used for encoding; ``dw / ww`` and ``dh / wh`` are clamped from above at
    ``clip`` before ``exp`` (no lower clamp, as in the reference).
    """
    wx, wy, ww, wh = (float(w) for w in weights)
    d = as_float32(deltas)
    acx, acy, aw, ah = _centres(as_float32(anchors))
    dx = d[..., 0] / wx
    dy = d[..., 1] / wy
    dw = jnp.minimum(d[..., 2] / ww, clip)
    dh = jnp.minimum(d[..., 3] / wh, clip)
    cx = dx * aw + acx
    cy = dy * ah + acy
    half_w = 0.5 * (jnp.exp(dw) * aw)
    half_h = 0.5 * (jnp.exp(dh) * ah)
    return jnp.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=-1)
