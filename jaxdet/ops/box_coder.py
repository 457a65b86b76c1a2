"""The R-CNN box parameterisation: encode boxes as deltas from reference boxes and back.

Boxes and reference boxes (anchors or proposals) are float32 ``[..., 4]``
``(x1, y1, x2, y2)`` in absolute pixels, no "+1" in widths. Deltas are ``[..., 4]``
``(dx, dy, dw, dh)``::

    dx = wx * (gcx - acx) / aw        dw = ww * log(gw / aw)
    dy = wy * (gcy - acy) / ah        dh = wh * log(gh / ah)

with ``c`` centres, ``w``/``h`` widths/heights. Usual weights: RPN ``(1, 1, 1, 1)``, R-CNN box
head ``(10, 10, 5, 5)``. Leading axes broadcast, so per-class deltas ``[R, K, 4]`` decode
against ``anchors[:, None, :]``.
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
    """Regression targets that turn ``anchors`` into ``boxes``.

    Args:
      boxes: ``[..., 4]`` target boxes ``(x1, y1, x2, y2)``, absolute pixels.
      anchors: ``[..., 4]`` reference boxes ``(x1, y1, x2, y2)``, absolute pixels, broadcast
        against ``boxes``. Widths and heights must be positive (no guard: a zero-size anchor
        gives inf/nan like the reference).
      weights: ``(wx, wy, ww, wh)`` multipliers (Python floats).

    Returns:
      ``[..., 4]`` float32 deltas ``(dx, dy, dw, dh)``.
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
    """Apply deltas to reference boxes (the inverse of :func:`encode_boxes`).

    Args:
      deltas: ``[..., 4]`` ``(dx, dy, dw, dh)``.
      anchors: ``[..., 4]`` reference boxes ``(x1, y1, x2, y2)``, absolute pixels, broadcast
        against ``deltas``.
      weights: ``(wx, wy, ww, wh)``, the same as used for encoding.
      clip: ``dw / ww`` and ``dh / wh`` are clamped from above at this value before ``exp``
        (no lower clamp, as in the reference).

    Returns:
      ``[..., 4]`` float32 decoded boxes ``(x1, y1, x2, y2)``, absolute pixels, not clipped
      to the image (use :func:`jaxdet.ops.clip_boxes`).
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
