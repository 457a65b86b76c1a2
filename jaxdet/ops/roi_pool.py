"""RoIPool (Fast R-CNN max pooling over quantised bins) with static shapes.

Semantics of the Caffe / torchvision CPU kernel, per RoI and output bin ``(i, j)``:

* ``x1 = round(box_x1 * s)``, ``x2 = round(box_x2 * s)`` with C's ``round`` (half away from
  zero), ``y`` alike; inclusive end: ``roi_w = max(x2 - x1 + 1, 1)``, ``bin_w = roi_w / w``
  (float32).
* bin columns ``[floor(j * bin_w), ceil((j + 1) * bin_w))`` shifted by ``x1`` and clipped to
  ``[0, W]`` (rows alike); an empty bin gives 0.
* the output is the bin's maximum; its gradient goes to the first arg-max in row-major order.

Exact for any box size: a 2-D sparse table of ``2**a x 2**b`` block maxima answers each bin
with four look-ups. The table (about 25 copies of the map) is built once per map, without
gradient, whatever the number of RoIs. Not reproduced: a bin of only ``-inf`` (or NaN) gives
``-FLT_MAX`` in the reference, that value here.
"""

import functools

import jax
import jax.numpy as jnp

from jaxdet.ops.fdiv import divide_by_int

__all__ = ["roi_pool"]


def _round_half_away(x: jax.Array) -> jax.Array:
    """C's ``round`` (halves away from zero), exact for every float32."""
    ax = jnp.abs(x)
    whole = jnp.floor(ax)
    return jnp.sign(x) * (whole + (ax - whole >= 0.5))


def _combine(a, b):
    """Best of two (value, flat index) candidates: larger value, then smaller index."""
    va, ia = a
    vb, ib = b
    take_b = (vb > va) | ((vb == va) & (ib < ia))
    return jnp.where(take_b, vb, va), jnp.where(take_b, ib, ia)


def _sparse_table(features: jax.Array):
    """Block maxima of ``[H, W, C]`` features for every ``2**a x 2**b`` block size.

    Returns ``(values, indices, offsets)``: ``[T, C]`` maxima and int32 flat indices ``y * W + x``
    of each block's first arg-max, level ``(a, b)`` after level, each level the row-major grid of
    block top-left corners ``[H - 2**a + 1, W - 2**b + 1]``; static ``offsets`` ``[LH * LW]`` is
    each level's first row (``LH = floor(log2 H) + 1``, ``LW`` alike).
    """
    h, w, c = features.shape
    lh, lw = h.bit_length(), w.bit_length()
    idx0 = jnp.broadcast_to(jnp.arange(h * w, dtype=jnp.int32).reshape(h, w, 1), (h, w, c))

    def halve(level, k, axis):
        v, i = level
        n = v.shape[axis]
        lo = (
            jax.lax.slice_in_dim(v, 0, n - k, axis=axis),
            jax.lax.slice_in_dim(i, 0, n - k, axis=axis),
        )
        hi = (jax.lax.slice_in_dim(v, k, n, axis=axis), jax.lax.slice_in_dim(i, k, n, axis=axis))
        # ``lo``'s indices all precede ``hi``'s in row-major order (x-halving only on
        # single-row blocks), so keeping ``lo`` on ties keeps the first arg-max.
        take_hi = hi[0] > lo[0]
        best = (jnp.where(take_hi, hi[0], lo[0]), jnp.where(take_hi, hi[1], lo[1]))
        # Materialise each level; fused, XLA would recompute earlier levels exponentially.
        return jax.lax.optimization_barrier(best)

    row = [(features, idx0)]
    for b in range(1, lw):
        row.append(halve(row[-1], 1 << (b - 1), 1))
    levels = list(row)
    for a in range(1, lh):
        row = [halve(level, 1 << (a - 1), 0) for level in row]
        levels.extend(row)
    offsets, start = [], 0
    for v, _ in levels:
        offsets.append(start)
        start += v.shape[0] * v.shape[1]
    values = jnp.concatenate([v.reshape(-1, c) for v, _ in levels])
    indices = jnp.concatenate([i.reshape(-1, c) for _, i in levels])
    return values, indices, offsets


def _floor_log2(n: jax.Array) -> jax.Array:
    """``floor(log2 n)`` for int32 ``n >= 1`` (exact, no float rounding)."""
    return 31 - jax.lax.clz(n.astype(jnp.int32))


@functools.partial(jax.jit, static_argnames=("output_size",))
def roi_pool(
    features: jax.Array,
    boxes: jax.Array,
    output_size: int | tuple[int, int] = (7, 7),
    spatial_scale: float = 1.0,
) -> jax.Array:
    """Fast R-CNN RoIPool from one ``[H, W, C]`` feature map (any float dtype; see module).

    ``boxes``: ``[R, 4]`` ``(x1, y1, x2, y2)``, absolute input-image pixels (float32, no gradient),
    scaled by ``spatial_scale`` (e.g. ``1/16``; may be traced); ``output_size``: ``(h, w)`` or one
    int. Returns ``[R, h, w, C]`` in the features' dtype, empty bins 0, differentiable w.r.t.
    ``features``.
    """
    ph, pw = (output_size, output_size) if isinstance(output_size, int) else output_size
    features = jnp.asarray(features)
    h, w, c = features.shape
    num_rois = boxes.shape[0]
    scale = jax.lax.stop_gradient(jnp.asarray(spatial_scale, jnp.float32))
    b = jax.lax.stop_gradient(boxes.astype(jnp.float32)) * scale
    q = _round_half_away(b)
    # Clip before the int cast so that x2 - x1 + 1 cannot overflow int32 (the reference's
    # float -> int cast is undefined out there anyway).
    q = jnp.clip(q, -float(1 << 29), float(1 << 29)).astype(jnp.int32)
    x1, y1, x2, y2 = q[:, 0], q[:, 1], q[:, 2], q[:, 3]
    roi_w = jnp.maximum(x2 - x1 + 1, 1)
    roi_h = jnp.maximum(y2 - y1 + 1, 1)

    def bin_edges(start, extent, pooled, size):
        bin_size = divide_by_int(extent.astype(jnp.float32), pooled)  # [R], IEEE quotient
        p = jnp.arange(pooled, dtype=jnp.float32)
        lo = jnp.floor(p[None, :] * bin_size[:, None]).astype(jnp.int32)
        hi = jnp.ceil((p[None, :] + 1.0) * bin_size[:, None]).astype(jnp.int32)
        lo = jnp.clip(lo + start[:, None], 0, size)
        hi = jnp.clip(hi + start[:, None], 0, size)
        return lo, hi  # [R, pooled]

    hs, he = bin_edges(y1, roi_h, ph, h)
    ws, we = bin_edges(x1, roi_w, pw, w)
    ext_h = jnp.maximum(he - hs, 1)
    ext_w = jnp.maximum(we - ws, 1)
    a = _floor_log2(ext_h)  # [R, ph]
    bb = _floor_log2(ext_w)  # [R, pw]
    y_a, y_b = hs, jnp.maximum(he - (1 << a), hs)  # two row blocks of 2**a covering the bin
    x_a, x_b = ws, jnp.maximum(we - (1 << bb), ws)
    y_a, y_b = jnp.minimum(y_a, h - 1), jnp.minimum(y_b, h - 1)  # empty bins stay in bounds
    x_a, x_b = jnp.minimum(x_a, w - 1), jnp.minimum(x_b, w - 1)

    values, indices, offsets = _sparse_table(jax.lax.stop_gradient(features))
    lw = w.bit_length()
    level = a[:, :, None] * lw + bb[:, None, :]  # [R, ph, pw]
    level_offset = jnp.asarray(offsets, jnp.int32)[level]
    level_w = w + 1 - (1 << bb[:, None, :])  # blocks per row of level (a, b)

    def lookup(ys, xs):
        # [R, ph] x [R, pw] -> table rows [R * ph * pw]
        r = (level_offset + ys[:, :, None] * level_w + xs[:, None, :]).reshape(-1)
        return (
            values.at[r].get(mode="promise_in_bounds"),
            indices.at[r].get(mode="promise_in_bounds"),
        )

    best = lookup(y_a, x_a)
    for cand in (lookup(y_a, x_b), lookup(y_b, x_a), lookup(y_b, x_b)):
        best = _combine(best, cand)
    argmax = best[1]  # [R * ph * pw, C] flat spatial index of the bin's first maximum
    empty = ((he <= hs)[:, :, None] | (we <= ws)[:, None, :]).reshape(-1, 1)
    flat = features.reshape(h * w, c)
    pooled = jnp.take_along_axis(flat, argmax, axis=0, mode="promise_in_bounds")
    pooled = jnp.where(empty, jnp.zeros((), features.dtype), pooled)
    return pooled.reshape(num_rois, ph, pw, c)
