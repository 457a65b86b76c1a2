"""RoIPool (Fast R-CNN max pooling over quantised bins) with static shapes.

Semantics (the classic Caffe / torchvision CPU kernel), per RoI and output bin ``(i, j)``:

* ``x1 = round(box_x1 * s)``, ``x2 = round(box_x2 * s)`` with C's ``round`` (half away from
  zero; ``jnp.round`` rounds half to even and would differ at .5), same for ``y``; the end
  pixel is inclusive: ``roi_w = max(x2 - x1 + 1, 1)``; ``bin_w = roi_w / w`` (float32).
* bin columns ``[floor(j * bin_w), ceil((j + 1) * bin_w))`` shifted by ``x1`` and clipped to
  ``[0, W]`` (rows alike); an empty bin gives 0.
* the output is the maximum over the bin; its gradient goes to the arg-max element, the first
  one in row-major order among equal maxima (the kernel keeps the first strictly greater
  value).

Implementation (exact for any box, whatever its size or position): a 2-D *sparse table* of the
feature map holds, for every ``2**a x 2**b`` block, the block's maximum and the flat index of
its first arg-max. Any bin is the union of four (overlapping) such blocks, so every output is
the best of four table look-ups: ``O(1)`` per bin and channel instead of the bin's area.

Why not a window gather or a mask: a bin of a box larger than the map can span the whole map,
so an exact static window is ``H x W`` per bin (``R * h * w * H * W * C`` work, ~1e10 at the
shapes below); a smaller window silently truncates large bins.

Cost: the table has ``(floor(log2 H) + 1) * (floor(log2 W) + 1)`` levels of ``(H - 2**a + 1)
x (W - 2**b + 1)`` blocks, about 25 copies of the map (values and int32 indices): 177 MB for a
``50 x 68 x 256`` float32 map. It is built under ``stop_gradient`` and not kept for the
backward pass. Building it dominates the run time and does not depend on the number or size
of the RoIs, whereas the reference's loop grows with ``R x`` RoI area: on the 2-core CPU of
``experiments/benchmarks`` (2 such maps) the reference is ~2x faster at 512 RoIs per image and
about even at 2000 (Fast R-CNN's test-time proposals). The pooled values are gathered from the
features at the arg-max indices, so the gradient is exactly the reference's: each output's
cotangent is added to its arg-max element.

Edge case not reproduced: a bin whose values are all ``-inf`` (or NaN) outputs ``-FLT_MAX``
in the reference and that value (or NaN) here.
"""

import functools

import jax
import jax.numpy as jnp

from jaxdet.ops.fdiv import divide_by_int

__all__ = ["roi_pool"]


def _round_half_away(x: jax.Array) -> jax.Array:
    """C's ``round``: halves go away from zero (``2.5 -> 3``, ``-2.5 -> -3``).

    Exact for every float32: ``floor(|x| + 0.5)`` would round 0.49999997 up (the addition
    rounds to 1.0).
    """
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

    Returns:
      ``(values, indices, offsets)``: ``values`` ``[T, C]`` and int32 ``indices`` ``[T, C]``
      hold, level after level, the row-major ``[H - 2**a + 1, W - 2**b + 1]`` grid of blocks
      of level ``(a, b)`` (block top-left corner ``(y, x)``): the block's maximum and the flat
      index ``y' * W + x'`` of its first arg-max. ``offsets`` (static, ``[LH * LW]``) is the
      first row of each level, ``LH = floor(log2 H) + 1`` (``LW`` alike).
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
        # Every index of ``lo`` precedes every index of ``hi`` in row-major order (x-halving
        # is only done on single-row blocks, and y-halving puts ``lo``'s rows first), so a
        # tie keeps ``lo``: the first arg-max wins without comparing indices.
        take_hi = hi[0] > lo[0]
        best = (jnp.where(take_hi, hi[0], lo[0]), jnp.where(take_hi, hi[1], lo[1]))
        # The barrier materialises each level: otherwise XLA fuses every level into the next
        # one's two reads, recomputing earlier levels exponentially (seconds of compile time).
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
    """Fast R-CNN RoIPool (semantics in the module docstring).

    Args:
      features: ``[H, W, C]`` feature map, any float dtype.
      boxes: ``[R, 4]`` ``(x1, y1, x2, y2)``, absolute (input-image) pixels, float32; scaled
        by ``spatial_scale`` into feature-map pixels. No gradient flows to them.
      output_size: ``(h, w)`` bins per RoI (or one int).
      spatial_scale: feature-map pixels per input pixel, e.g. ``1/16`` (a traced float32
        scalar is fine: one compilation serves every scale).

    Returns:
      ``[R, h, w, C]`` in the features' dtype; empty bins are 0. Differentiable w.r.t.
      ``features`` (each output's cotangent goes to its arg-max element). ``jax.vmap`` adds a
      leading batch axis (``features [B, H, W, C]``, ``boxes [B, R, 4]``).
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
