"""Keypoint heatmap targets and decoding, with torchvision's Keypoint R-CNN rules.

Encode: for a RoI ``(x1, y1, x2, y2)`` and an ``S x S`` map, ``cx = floor((x - x1) * (S / (x2 -
x1)))`` (``cy`` alike, float32), ``S - 1`` for a keypoint on the right (bottom) edge; target
``cy * S + cx``, valid inside the map with visibility ``> 0``.

Decode: torchvision resizes each map bicubically (``align_corners=False``, ``A = -0.75``,
clamped taps) to ``ceil(max(w, 1)) x ceil(max(h, 1))`` and returns, at the arg-max ``(i, j)``,
``x = x1 + (j + 0.5) * w / ceil(w)`` (``y`` alike) and the interpolated logit. Here that map is
evaluated only on a static ``window x window`` block around the heatmap's arg-max cell: exact
for RoIs up to ``window`` pixels and for peaked maps; else the best point of the block, with a
score never above torchvision's.

Sub-cell variant (``keypoint_target="bilinear"``, ``keypoint_decode="local_mean"``; not
torchvision's): each keypoint's unit mass is split bilinearly over the 4 cells around
``u = (x - x1) * S / w - 0.5`` (clipped to ``[0, S - 1]``); the local-mean decode inverts it.
"""

import functools

import jax
import jax.numpy as jnp

__all__ = [
    "heatmaps_to_keypoints",
    "heatmaps_to_keypoints_local_mean",
    "keypoints_to_bilinear_heatmap",
    "keypoints_to_heatmap",
]


@functools.partial(jax.jit, static_argnames=("heatmap_size",))
def keypoints_to_heatmap(
    keypoints: jax.Array, rois: jax.Array, heatmap_size: int
) -> tuple[jax.Array, jax.Array]:
    """Cell targets of keypoints ``[R, K, 3]`` ``(x, y, visibility)`` in RoIs ``[R, 4]``.

    Both in absolute image pixels; ``heatmap_size`` is the static ``S``. Returns ``(targets,
    valid)``: int32 ``[R, K]`` flat indices ``cy * S + cx`` (0 where invalid) and bool ``[R, K]``.
    Keypoints of a zero-width RoI (the reference divides by zero) are invalid.
    """
    s = heatmap_size
    rois = rois.astype(jnp.float32)
    kp = keypoints.astype(jnp.float32)
    x1, y1, x2, y2 = (rois[:, i : i + 1] for i in range(4))
    scale_x = jnp.float32(s) / (x2 - x1)
    scale_y = jnp.float32(s) / (y2 - y1)
    x, y = kp[..., 0], kp[..., 1]
    cx = jnp.floor((x - x1) * scale_x)
    cy = jnp.floor((y - y1) * scale_y)
    cx = jnp.where(x == x2, s - 1.0, cx)
    cy = jnp.where(y == y2, s - 1.0, cy)
    # Validity in float (no int overflow for far-away points; NaN compares False).
    valid = (cx >= 0) & (cy >= 0) & (cx < s) & (cy < s) & (kp[..., 2] > 0)
    cx = jnp.where(valid, cx, 0.0).astype(jnp.int32)
    cy = jnp.where(valid, cy, 0.0).astype(jnp.int32)
    return cy * s + cx, valid


@functools.partial(jax.jit, static_argnames=("heatmap_size",))
def keypoints_to_bilinear_heatmap(
    keypoints: jax.Array, rois: jax.Array, heatmap_size: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Soft targets: each keypoint's mass split bilinearly over 4 cells (static ``S >= 2``).

    Inputs as :func:`keypoints_to_heatmap`. Returns ``(cells, weights, valid)``: int32 ``[R, K, 4]``
    flat indices of cells ``(v0, u0), (v0, u0 + 1), (v0 + 1, u0), (v0 + 1, u0 + 1)``, float32
    ``[R, K, 4]`` weights summing to 1 (0 where invalid), and the bool ``[R, K]`` validity of
    :func:`keypoints_to_heatmap`. ValueError for ``S < 2``.
    """
    s = heatmap_size
    if s < 2:
        raise ValueError(f"keypoints_to_bilinear_heatmap needs heatmap_size >= 2, got {s}")
    _, valid = keypoints_to_heatmap(keypoints, rois, s)
    rois = rois.astype(jnp.float32)
    kp = keypoints.astype(jnp.float32)
    lo, size = rois[:, None, :2], rois[:, None, 2:] - rois[:, None, :2]  # [R, 1, 2]
    uv = jnp.where(valid[..., None], (kp[..., :2] - lo) * (s / size) - 0.5, 0.0)  # [R, K, 2]
    uv = jnp.clip(uv, 0.0, s - 1.0)
    base = jnp.minimum(jnp.floor(uv), s - 2.0)
    frac = uv - base  # [R, K, 2] in [0, 1]
    bx, by = base[..., 0].astype(jnp.int32), base[..., 1].astype(jnp.int32)
    fx, fy = frac[..., 0], frac[..., 1]
    cells = jnp.stack([by * s + bx, by * s + bx + 1, (by + 1) * s + bx, (by + 1) * s + bx + 1],
                      axis=-1)
    weights = jnp.stack([(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx], axis=-1)
    return cells, jnp.where(valid[..., None], weights, 0.0), valid


@jax.jit
def heatmaps_to_keypoints_local_mean(heatmaps: jax.Array, rois: jax.Array) -> jax.Array:
    """Decode heatmaps trained on :func:`keypoints_to_bilinear_heatmap` targets.

    Inputs as :func:`heatmaps_to_keypoints`. Returns float32 ``[R, K, 3]`` ``(x, y, score)``:
    ``x = x1 + (u + 0.5) * w / S``, ``u`` the softmax-weighted mean column of the in-map 3x3
    cells around the arg-max (``y`` alike, ``w = max(x2 - x1, 1)``), score the arg-max logit.
    """
    heatmaps = jnp.asarray(heatmaps)
    r, k, s, s2 = heatmaps.shape
    if s != s2:
        raise ValueError(f"heatmaps must be square [R, K, S, S], got {heatmaps.shape}")
    maps = heatmaps.astype(jnp.float32).reshape(r, k, s * s)
    rois = rois.astype(jnp.float32)
    flat = jnp.argmax(maps, axis=-1)  # [R, K]
    score = jnp.take_along_axis(maps, flat[..., None], axis=-1)[..., 0]
    step = jnp.arange(-1, 2, dtype=jnp.int32)
    ys = (flat // s)[..., None, None] + step[:, None]  # [R, K, 3, 1]
    xs = (flat % s)[..., None, None] + step[None, :]  # [R, K, 1, 3]
    inside = (ys >= 0) & (ys < s) & (xs >= 0) & (xs < s)  # [R, K, 3, 3]
    idx = jnp.clip(ys, 0, s - 1) * s + jnp.clip(xs, 0, s - 1)
    vals = jnp.take_along_axis(maps, idx.reshape(r, k, 9), axis=-1).reshape(r, k, 3, 3)
    p = jax.nn.softmax(jnp.where(inside, vals, -jnp.inf).reshape(r, k, 9), axis=-1)
    p = p.reshape(r, k, 3, 3)
    u = jnp.sum(p * xs.astype(jnp.float32), axis=(-2, -1))
    v = jnp.sum(p * ys.astype(jnp.float32), axis=(-2, -1))
    widths = jnp.maximum(rois[:, 2] - rois[:, 0], 1.0)[:, None]
    heights = jnp.maximum(rois[:, 3] - rois[:, 1], 1.0)[:, None]
    x = rois[:, 0:1] + (u + 0.5) * widths / s
    y = rois[:, 1:2] + (v + 0.5) * heights / s
    return jnp.stack([x, y, score], axis=-1)


_A = -0.75  # PyTorch's bicubic convolution parameter


def _cubic_coeffs(t: jax.Array) -> jax.Array:
    """``[...]`` fractional offsets -> ``[..., 4]`` Keys cubic weights of taps -1, 0, 1, 2."""

    def near(x):  # |x| <= 1
        return ((_A + 2.0) * x - (_A + 3.0)) * x * x + 1.0

    def far(x):  # 1 < |x| < 2
        return ((_A * x - 5.0 * _A) * x + 8.0 * _A) * x - 4.0 * _A

    return jnp.stack([far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)], axis=-1)


def _bicubic_taps(pos: jax.Array, out_size: jax.Array, in_size: int):
    """Clamped source indices (int32) and weights (float32), ``[..., n, 4]``, of output
    pixels ``pos`` ``[..., n]`` of an ``in_size -> out_size`` (int32 ``[...]``) bicubic resize.
    """
    scale = jnp.float32(in_size) / out_size.astype(jnp.float32)
    src = (pos.astype(jnp.float32) + 0.5) * scale[..., None] - 0.5  # not clamped for cubic
    base = jnp.minimum(jnp.floor(src).astype(jnp.int32), in_size - 1)
    t = jnp.clip(src - base.astype(jnp.float32), 0.0, 1.0)
    idx = jnp.clip(base[..., None] + jnp.arange(-1, 3, dtype=jnp.int32), 0, in_size - 1)
    return idx, _cubic_coeffs(t)


@functools.partial(jax.jit, static_argnames=("window",))
def heatmaps_to_keypoints(heatmaps: jax.Array, rois: jax.Array, window: int = 32) -> jax.Array:
    """Decode ``[R, K, S, S]`` heatmap logits (any float dtype) in ``[R, 4]`` RoIs (image pixels).

    Torchvision's rule with a static search ``window`` (see the module). Returns float32
    ``[R, K, 3]`` ``(x, y, score)``, score the interpolated logit (torchvision returns it
    separately, with 1 in the third column). ValueError for non-square maps.
    """
    heatmaps = jnp.asarray(heatmaps)
    r, k, s, s2 = heatmaps.shape
    if s != s2:
        raise ValueError(f"heatmaps must be square [R, K, S, S], got {heatmaps.shape}")
    maps = heatmaps.astype(jnp.float32)
    rois = rois.astype(jnp.float32)
    widths = jnp.maximum(rois[:, 2] - rois[:, 0], 1.0)
    heights = jnp.maximum(rois[:, 3] - rois[:, 1], 1.0)
    out_w = jnp.ceil(widths)  # resized map size (float, exact integers)
    out_h = jnp.ceil(heights)
    out_w_i = jnp.clip(out_w, 1.0, 2.0**30).astype(jnp.int32)
    out_h_i = jnp.clip(out_h, 1.0, 2.0**30).astype(jnp.int32)

    # Coarse arg-max cell of each heatmap, then the resized-map pixel nearest to its centre.
    flat = jnp.argmax(maps.reshape(r, k, s * s), axis=-1)
    cell_y, cell_x = flat // s, flat % s

    def window_start(cell, out_size):
        # Output pixel whose source coordinate is the cell centre, minus half a window.
        centre = jnp.floor((cell.astype(jnp.float32) + 0.5) * out_size[:, None] / s)
        start = centre.astype(jnp.int32) - window // 2
        hi = jnp.maximum(out_size.astype(jnp.int32)[:, None] - window, 0)
        return jnp.clip(start, 0, hi)  # [R, K]

    n = window
    start_y = window_start(cell_y, out_h_i.astype(jnp.float32))
    start_x = window_start(cell_x, out_w_i.astype(jnp.float32))
    pos_y = start_y[..., None] + jnp.arange(n, dtype=jnp.int32)  # [R, K, n]
    pos_x = start_x[..., None] + jnp.arange(n, dtype=jnp.int32)
    in_y = pos_y < out_h_i[:, None, None]
    in_x = pos_x < out_w_i[:, None, None]
    iy, wy = _bicubic_taps(pos_y, jnp.broadcast_to(out_h_i[:, None], (r, k)), s)  # [R,K,n,4]
    ix, wx = _bicubic_taps(pos_x, jnp.broadcast_to(out_w_i[:, None], (r, k)), s)

    # Rows first (x taps), then columns (y taps), as PyTorch's separable bicubic kernel:
    # value = sum_a wy[a] * (sum_b wx[b] * map[iy[a], ix[b]]).
    rows = jnp.take_along_axis(maps, ix.reshape(r, k, 1, n * 4), axis=-1).reshape(r, k, s, n, 4)
    rows = jnp.sum(rows * wx[:, :, None, :, :], axis=-1)  # [R, K, S, n]
    cols = jnp.take_along_axis(rows, iy.reshape(r, k, n * 4)[..., None], axis=2)
    cols = cols.reshape(r, k, n, 4, n)
    vals = jnp.sum(cols * wy[..., None], axis=3)  # [R, K, n (y), n (x)]
    vals = jnp.where(in_y[..., :, None] & in_x[..., None, :], vals, -jnp.inf)

    best = jnp.argmax(vals.reshape(r, k, n * n), axis=-1)  # first in row-major order
    by, bx = best // n, best % n
    score = jnp.take_along_axis(vals.reshape(r, k, n * n), best[..., None], axis=-1)[..., 0]
    y_int = jnp.take_along_axis(pos_y, by[..., None], axis=-1)[..., 0]
    x_int = jnp.take_along_axis(pos_x, bx[..., None], axis=-1)[..., 0]
    width_corr = widths / out_w
    height_corr = heights / out_h
    x = (x_int.astype(jnp.float32) + 0.5) * width_corr[:, None] + rois[:, 0:1]
    y = (y_int.astype(jnp.float32) + 0.5) * height_corr[:, None] + rois[:, 1:2]
    return jnp.stack([x, y, score], axis=-1)
