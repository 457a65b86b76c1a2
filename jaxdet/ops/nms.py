"""Greedy non-maximum suppression with static shapes and O(N + tile * K) memory.

Exact greedy NMS. Boxes sorted by descending score (ties: lower index first; torchvision's sort
promises no tie order) are visited in tiles of ``tile_size``: each tile is suppressed by the
(at most ``K = max_output_size``) boxes kept so far (one ``[tile, K]`` IoU block; empty slots
are NaN boxes, which never suppress), resolved within itself to the greedy fixed point, and
its survivors appended; the loop stops at ``K`` kept boxes. Without score ties the result is
the classic greedy loop's (``torchvision.ops.nms`` truncated to ``K``). Where ``N > 32 K``
(e.g. 80 classes x 1,000 proposals, 100 kept), the best ``16 K`` boxes (``top_k``) are visited
first and all ``N`` sorted only where those yield fewer than ``K`` kept boxes: the same result.

IoU uses the reference arithmetic ``inter / (area_i + area_j - inter)`` with unclamped areas:
a zero-area pair gives NaN, which never suppresses; a zero-area box can still be kept.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxdet.ops.boxes import as_float32

__all__ = ["batched_nms", "nms"]

_DEFAULT_TILE = 32  # speed only (see experiments/benchmarks); results do not depend on it


def _overlaps(a: jax.Array, b: jax.Array, threshold: jax.Array) -> jax.Array:
    """Bool ``[P, Q]`` ``IoU > threshold`` (NaN: False) of ``[5, P]`` and ``[5, Q]``
    columns ``x1, y1, x2, y2, area``.
    """
    lt_x = jnp.maximum(a[0][:, None], b[0][None, :])
    lt_y = jnp.maximum(a[1][:, None], b[1][None, :])
    rb_x = jnp.minimum(a[2][:, None], b[2][None, :])
    rb_y = jnp.minimum(a[3][:, None], b[3][None, :])
    inter = jnp.maximum(rb_x - lt_x, 0.0) * jnp.maximum(rb_y - lt_y, 0.0)
    union = a[4][:, None] + b[4][None, :] - inter
    return inter / union > threshold


def _without_negative_zero(scores: jax.Array) -> jax.Array:
    """``scores`` with -0.0 as 0.0, so that the two tie in every order below. (Not
    ``scores + 0.0``: XLA simplifies that away.)"""
    return jnp.where(scores == 0, 0.0, scores)


def _descending_order(scores: jax.Array, alive: jax.Array) -> jax.Array:
    """Int32 ``[N]`` permutation: alive entries by descending score (ties: lower
    index first), then dead entries by index.

    For ``N^2 < 2^31`` a stable argsort from two single-int32 sorts, which XLA:CPU runs fast: the
    dense rank of an order-reversing int key, then ``rank * N + i``.
    """
    n = scores.shape[0]
    iota = jnp.arange(n, dtype=jnp.int32)
    if n * n >= 2**31:
        keys = jnp.where(alive, -scores, jnp.inf)
        return jax.lax.sort((keys, iota), num_keys=1, is_stable=True)[1]
    bits = jax.lax.bitcast_convert_type(_without_negative_zero(scores), jnp.int32)
    # Monotone in the float value for non-NaN floats; ~ reverses the order without overflow.
    keys = ~jnp.where(bits >= 0, bits, bits ^ 0x7FFFFFFF)
    keys = jnp.where(alive, keys, jnp.iinfo(jnp.int32).max)
    rank = jnp.searchsorted(jax.lax.sort(keys), keys, side="left").astype(jnp.int32)
    return jax.lax.sort(rank * n + iota) % n


# Above this many candidates per kept slot, NMS first visits only the best
# `_PREFILTER_PER_SLOT * K` candidates (a top-k instead of a sort of all N) and sorts all N only
# where those did not yield K kept boxes. Exact either way; speed only.
_PREFILTER_PER_SLOT = 16


def _nms_core(
    boxes: jax.Array,
    scores: jax.Array,
    classes: jax.Array | None,
    valid: jax.typing.ArrayLike | None,
    threshold: jax.Array,
    k: int,
    tile_size: int,
) -> jax.Array:
    n = boxes.shape[0]
    if k < 1:
        raise ValueError(f"max_output_size must be >= 1, got {k}")
    if n == 0:
        return jnp.full((k,), -1, jnp.int32)
    alive = jnp.ones((n,), bool) if valid is None else jnp.asarray(valid, bool)
    m = _PREFILTER_PER_SLOT * k
    if n <= 2 * m:
        return _greedy(boxes, scores, classes, alive, threshold, k, tile_size)[0]
    # Greedy NMS visits boxes by descending score, so over the best m candidates (top_k breaks
    # ties by lower index, as the full order does) it keeps what the full run keeps until
    # those run out; only then is the full run needed.
    top = jax.lax.top_k(jnp.where(alive, _without_negative_zero(scores), -jnp.inf), m)[1]
    sub = _greedy(boxes[top], scores[top], None if classes is None else classes[top],
                  alive[top], threshold, k, tile_size)
    kept = jnp.where(sub[0] >= 0, top[jnp.maximum(sub[0], 0)], -1)
    needs_all = sub[1] & (jnp.sum(alive, dtype=jnp.int32) > m)

    def full(state):
        # Ties the inputs to the loop state: XLA would hoist the loop-invariant sort of all
        # N candidates out of the loop, and run it always.
        inputs, _ = jax.lax.optimization_barrier(((boxes, scores, classes, alive), state))
        return _greedy(*inputs, threshold, k, tile_size)[0], jnp.bool_(False)

    # A while loop, not a cond: under vmap it runs only when some image needs it.
    return jax.lax.while_loop(lambda s: s[1], full, (kept, needs_all))[0]


def _greedy(
    boxes: jax.Array,
    scores: jax.Array,
    classes: jax.Array | None,
    alive0: jax.Array,
    threshold: jax.Array,
    k: int,
    tile_size: int,
) -> tuple[jax.Array, jax.Array]:
    """Kept indices ``[k]`` (then -1) and whether every candidate was visited with fewer than
    ``k`` kept."""
    n = boxes.shape[0]
    tile = max(1, min(tile_size, n))
    num_tiles = -(-n // tile)
    pad = num_tiles * tile - n

    order = _descending_order(scores, alive0)
    sorted_boxes = boxes[order]
    area = (sorted_boxes[:, 2] - sorted_boxes[:, 0]) * (sorted_boxes[:, 3] - sorted_boxes[:, 1])
    cols = jnp.concatenate([sorted_boxes.T, area[None]], axis=0)  # [5, N]
    cols = jnp.pad(cols, ((0, 0), (0, pad))).reshape(5, num_tiles, tile).transpose(1, 0, 2)
    tile_alive = jnp.pad(alive0[order], (0, pad)).reshape(num_tiles, tile)
    tile_class = None
    if classes is not None:
        tile_class = jnp.pad(classes[order], (0, pad)).reshape(num_tiles, tile)
    earlier = jnp.arange(tile)[:, None] < jnp.arange(tile)[None, :]  # [j, i]: j before i
    positions = jnp.arange(tile, dtype=jnp.int32)

    def body(state):
        t, count, kept, kept_class, kept_pos = state
        tb = cols[t]  # [5, tile]
        alive = tile_alive[t]
        # 1. Suppression by earlier kept boxes (NaN boxes in empty slots never suppress).
        over = _overlaps(tb, kept, threshold)  # [tile, K]
        if tile_class is not None:
            over = over & (tile_class[t][:, None] == kept_class[None, :])
        alive = alive & ~jnp.any(over, axis=1)
        # 2. Greedy resolution inside the tile, as a fixed point.
        inner = _overlaps(tb, tb, threshold) & earlier & alive[:, None]
        if tile_class is not None:
            inner = inner & (tile_class[t][:, None] == tile_class[t][None, :])

        def step(carry):
            keep, _ = carry
            new = alive & ~jnp.any(inner & keep[:, None], axis=0)
            return new, jnp.any(new != keep)

        keep, _ = jax.lax.while_loop(lambda c: c[1], step, (alive, jnp.any(inner)))
        # 3. Append the survivors; slots >= k are dropped. (Prefix count as a masked row sum.)
        before = jnp.sum(earlier & keep[:, None], axis=0, dtype=jnp.int32)
        slot = jnp.where(keep, count + before, k)
        kept = kept.at[:, slot].set(tb, mode="drop")
        if tile_class is not None:
            kept_class = kept_class.at[slot].set(tile_class[t], mode="drop")
        kept_pos = kept_pos.at[slot].set(t * tile + positions, mode="drop")
        count = jnp.minimum(count + jnp.sum(keep, dtype=jnp.int32), k)
        return t + 1, count, kept, kept_class, kept_pos

    state = (
        jnp.int32(0),
        jnp.int32(0),
        jnp.full((5, k), jnp.nan, jnp.float32),
        jnp.zeros((k,), jnp.int32),
        jnp.full((k,), -1, jnp.int32),
    )
    state = jax.lax.while_loop(lambda s: (s[0] < num_tiles) & (s[1] < k), body, state)
    kept_pos = state[-1]
    kept = jnp.where(kept_pos >= 0, order[jnp.maximum(kept_pos, 0)], -1).astype(jnp.int32)
    return kept, state[1] < k


def _threshold_below(iou_threshold: float | jax.typing.ArrayLike) -> jax.typing.ArrayLike:
    """The threshold as the program's float32 argument.

    A Python/NumPy scalar becomes the largest float32 ``<=`` it, so ``float32_iou > that`` is the
    reference's double-precision ``iou > iou_threshold``. Concrete arrays become NumPy float32 (one
    compiled program for every threshold); tracers are cast to float32.
    """
    if isinstance(iou_threshold, jax.core.Tracer):
        return jnp.asarray(iou_threshold, jnp.float32)
    if isinstance(iou_threshold, jax.Array | np.ndarray):
        return np.float32(np.asarray(iou_threshold))
    return _scalar_threshold_below(float(iou_threshold))


@functools.lru_cache(maxsize=256)
def _scalar_threshold_below(t: float) -> np.float32:
    t32 = np.float32(t)
    if float(t32) > t:
        t32 = np.nextafter(t32, np.float32(-np.inf))
    return t32


@functools.partial(jax.jit, static_argnames=("max_output_size", "tile_size"))
def _nms_jit(boxes, scores, class_ids, iou_threshold, valid, max_output_size, tile_size):
    thr = jnp.asarray(iou_threshold, jnp.float32)
    cls = None if class_ids is None else jnp.asarray(class_ids).astype(jnp.int32)
    return _nms_core(as_float32(boxes), as_float32(scores), cls, valid, thr, max_output_size,
                     tile_size)


def nms(
    boxes: jax.typing.ArrayLike,
    scores: jax.typing.ArrayLike,
    iou_threshold: float | jax.typing.ArrayLike,
    max_output_size: int,
    valid: jax.typing.ArrayLike | None = None,
    tile_size: int = _DEFAULT_TILE,
) -> jax.Array:
    """Greedy NMS (jit-compiled once per shape): int32 ``[K]`` kept indices, then ``-1``.

    ``boxes``: ``[N, 4]`` ``(x1, y1, x2, y2)`` absolute pixels; ``scores``: ``[N]`` finite (both
    cast to float32); kept indices come by descending score. A box is suppressed when its IoU with
    a kept higher-scoring box is ``> iou_threshold`` (strict; TF uses ``>=``): a Python float
    compares as in torchvision (as a double), a traced one in float32; changing it does not
    recompile. ``max_output_size``: static ``K >= 1``; ``valid``: optional ``[N]`` bool, ``False``
    entries are never kept and suppress nothing; ``tile_size``: static, speed only.
    """
    return _nms_jit(
        boxes,
        scores,
        None,
        _threshold_below(iou_threshold),
        valid,
        max_output_size=max_output_size,
        tile_size=tile_size,
    )


def batched_nms(
    boxes: jax.typing.ArrayLike,
    scores: jax.typing.ArrayLike,
    class_ids: jax.typing.ArrayLike,
    iou_threshold: float | jax.typing.ArrayLike,
    max_output_size: int,
    valid: jax.typing.ArrayLike | None = None,
    tile_size: int = _DEFAULT_TILE,
) -> jax.Array:
    """Class-aware greedy NMS: boxes of different classes never suppress each other.

    As :func:`nms`, plus ``class_ids`` (``[N]`` int); equals :func:`nms` per class merged by
    descending score (truncated to ``K``). A class-equality mask, not torchvision's coordinate
    offsets, so IoUs use the original coordinates (no float32 rounding, works in bfloat16).
    """
    return _nms_jit(
        boxes,
        scores,
        class_ids,
        _threshold_below(iou_threshold),
        valid,
        max_output_size=max_output_size,
        tile_size=tile_size,
    )
