"""RoIAlign, single-level and over an FPN pyramid, with the reference C++ kernel's semantics.

Per RoI and output bin (torchvision / detectron2 ``ROIAlign`` CPU kernel):

* ``start = coord * spatial_scale - offset``, ``offset = 0.5`` if ``aligned`` else 0;
  ``roi = end - start``, forced ``>= 1`` when not ``aligned``.
* ``bin = roi / pooled``; a static ``sampling_ratio x sampling_ratio`` grid of samples per bin
  at ``start + p * bin + (i + 0.5) * bin / sampling_ratio``.
* A sample with ``y < -1`` or ``y > H`` (``x`` alike) contributes 0. Otherwise ``y`` is clamped
  at 0 and ``y_low = floor(y)``; if ``y_low >= H - 1`` then ``y_low = y_high = y = H - 1``, else
  ``y_high = y_low + 1``. The bin is the mean of its ``sampling_ratio**2`` bilinear samples
  (those that contributed 0 included).

Sample coordinates and weights are float32 whatever the feature dtype. The feature gradient is
the reference backward (a scatter-add of the bilinear weights); boxes get none. The adaptive
``sampling_ratio <= 0`` (data-dependent sample counts) is not supported.
"""

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxdet.ops.boxes import box_area
from jaxdet.ops.fdiv import divide_by_int

__all__ = ["roi_align", "multilevel_roi_align", "fpn_levels", "roi_align_from_rows"]


def _axis_taps(coord: jax.Array, size: jax.Array | int):
    """Bilinear taps along one axis with the kernel's clamping rules.

    ``coord``: float32 sample coordinates (map pixels); ``size``: ``H`` or ``W``, broadcastable.
    Returns int32 ``low, high`` in ``[0, size - 1]`` and float32 ``w_low, w_high``, both 0 where
    the sample lies outside ``[-1, size]``.
    """
    size_f = jnp.asarray(size).astype(jnp.float32)
    inside = (coord >= -1.0) & (coord <= size_f)
    c = jnp.maximum(coord, 0.0)
    # Clip before the int cast so that far-away (invalid) samples cannot overflow int32.
    # (NaN coordinates are invalid too; the clamps keep their indices in bounds.)
    low = jnp.floor(jnp.minimum(c, size_f)).astype(jnp.int32)
    at_edge = low >= size - 1
    low = jnp.where(at_edge, size - 1, jnp.maximum(low, 0))
    high = jnp.where(at_edge, size - 1, low + 1)
    c = jnp.where(at_edge, low.astype(jnp.float32), c)
    frac = c - low.astype(jnp.float32)
    w_high = jnp.where(inside, frac, 0.0)
    w_low = jnp.where(inside, 1.0 - frac, 0.0)
    return low, high, w_low, w_high


def _sample_coords(start: jax.Array, bin_size: jax.Array, pooled: int, grid: int) -> jax.Array:
    """``[R] x [R] -> [R, pooled, grid]`` sample coordinates, in the kernel's operation order."""
    p = jnp.arange(pooled, dtype=jnp.float32)[None, :, None]
    i = jnp.arange(grid, dtype=jnp.float32)[None, None, :]
    s = start[:, None, None]
    b = bin_size[:, None, None]
    return s + p * b + divide_by_int((i + 0.5) * b, grid)


def roi_align_from_rows(
    rows: jax.Array,
    boxes: jax.Array,
    row_offset: jax.Array | int,
    height: jax.Array | int,
    width: jax.Array | int,
    scale: jax.Array | float,
    output_size: tuple[int, int],
    sampling_ratio: int,
    aligned: bool,
    out_dtype: jnp.dtype | None = None,
) -> jax.Array:
    """RoIAlign of each RoI from its own map in row-flattened features ``rows`` ``[P, C]``.

    RoI ``r`` reads the row-major ``height[r] x width[r]`` map at ``rows[row_offset[r]:]``
    (``row_offset``, ``height``, ``width``: int32 ``[R]`` or one Python int for all) with boxes
    ``[R, 4]`` float32 ``(x1, y1, x2, y2)`` times ``scale`` (float32 ``[R]`` or a float) as map
    pixels. ``output_size``, ``sampling_ratio``, ``aligned``: as :func:`roi_align` (validated).
    Returns ``[R, h, w, C]`` in ``out_dtype`` (default ``rows.dtype``).
    """
    ph, pw = output_size
    g = sampling_ratio
    num_rois = boxes.shape[0]
    # No gradient flows to the boxes (the reference kernels have none either).
    boxes = jax.lax.stop_gradient(boxes.astype(jnp.float32))
    scale = jnp.asarray(scale, jnp.float32)
    offset = 0.5 if aligned else 0.0
    x1 = boxes[:, 0] * scale - offset
    y1 = boxes[:, 1] * scale - offset
    x2 = boxes[:, 2] * scale - offset
    y2 = boxes[:, 3] * scale - offset
    roi_w = x2 - x1
    roi_h = y2 - y1
    if not aligned:
        roi_w = jnp.maximum(roi_w, 1.0)
        roi_h = jnp.maximum(roi_h, 1.0)
    # divide_by_int: XLA:CPU's division by a constant is not correctly rounded.
    ys = _sample_coords(y1, divide_by_int(roi_h, ph), ph, g)  # [R, ph, g]
    xs = _sample_coords(x1, divide_by_int(roi_w, pw), pw, g)  # [R, pw, g]

    def per_roi(v):
        v = jnp.asarray(v)
        return v[:, None, None] if v.ndim == 1 else v

    y_lo, y_hi, wy_lo, wy_hi = _axis_taps(ys, per_roi(height))
    x_lo, x_hi, wx_lo, wx_hi = _axis_taps(xs, per_roi(width))
    y_lo, y_hi, wy_lo, wy_hi = _materialized(y_lo, y_hi, wy_lo, wy_hi)
    x_lo, x_hi, wx_lo, wx_hi = _materialized(x_lo, x_hi, wx_lo, wx_hi)
    base = per_roi(row_offset)
    row_lo = base + y_lo * per_roi(width)  # [R, ph, g]
    row_hi = base + y_hi * per_roi(width)

    # Tap order (iy, ix, corner), corners in the kernel's order
    # (y_low, x_low), (y_low, x_high), (y_high, x_low), (y_high, x_high).
    def tap(row, wy, col, wx):
        # [R, ph, g] x [R, pw, g] -> [R, ph, pw, g, g]
        idx = row[:, :, None, :, None] + col[:, None, :, None, :]
        wgt = wy[:, :, None, :, None] * wx[:, None, :, None, :]
        return idx, wgt

    taps = [
        tap(row_lo, wy_lo, x_lo, wx_lo),
        tap(row_lo, wy_lo, x_hi, wx_hi),
        tap(row_hi, wy_hi, x_lo, wx_lo),
        tap(row_hi, wy_hi, x_hi, wx_hi),
    ]
    n = num_rois * ph * pw
    idx = jnp.stack([t[0] for t in taps], axis=-1).reshape(n, g * g * 4)
    wgt = jnp.stack([t[1] for t in taps], axis=-1).reshape(n, g * g * 4)
    out = _weighted_row_sum(rows, idx, wgt) / float(g * g)
    out_dtype = rows.dtype if out_dtype is None else out_dtype
    return out.reshape(num_rois, ph, pw, rows.shape[-1]).astype(out_dtype)


def _materialized(*taps: jax.Array) -> list[jax.Array]:
    """The same arrays of one shape (map coordinates, int32 below ``2**24``, or float32 weights),
    computed once.

    Fused into the ``[R * ph * pw, 4 g^2]`` index and weight arrays, XLA recomputes the per-axis
    taps (correctly rounded divisions included) for every element: on CPU more than a third of
    the gather's own time. A product with an identity matrix (exact: ``x * 1 + 0 * y``, values
    finite) is a separate operation XLA does not fuse, so they are computed once; optimisation
    barriers do not survive to XLA:CPU's fusion pass.
    """
    stacked = jnp.stack([t.astype(jnp.float32) for t in taps], axis=-1)
    eye = jnp.eye(len(taps), dtype=jnp.float32)
    out = jnp.einsum("...i,ij->...j", stacked, eye, precision=jax.lax.Precision.HIGHEST)
    return [out[..., i].astype(t.dtype) for i, t in enumerate(taps)]


@jax.custom_vjp
def _weighted_row_sum(rows: jax.Array, idx: jax.Array, wgt: jax.Array) -> jax.Array:
    """Float32 ``[N, C]`` ``out[n] = sum_t wgt[n, t] * rows[idx[n, t]]``.

    ``rows``: ``[P, C]``; ``idx``: int32 ``[N, T]`` in ``[0, P)``, ``T % 4 == 0``; ``wgt``:
    float32 ``[N, T]``. Separate row gathers summed elementwise, so XLA fuses them and never
    builds ``[N, T, C]``. Gradients: a chunked scatter-add for ``rows``, zero for ``wgt``.

    Computed as two halves of ``N`` concatenated. XLA:CPU fuses a consumer's reshape (e.g. the
    box head's ``[R, h * w * C]``) into this loop, which then runs over the flattened shape with
    the row arithmetic per element, about 3x slower than over ``[N, C]``; a concatenate is
    emitted as one loop per operand over that operand's own ``[N / 2, C]`` shape.
    """
    n = idx.shape[0]
    if n < 2:
        return _gathered_sum(rows, idx, wgt)
    return jnp.concatenate([_gathered_sum(rows, idx[:n // 2], wgt[:n // 2]),
                            _gathered_sum(rows, idx[n // 2:], wgt[n // 2:])])


def _gathered_sum(rows: jax.Array, idx: jax.Array, wgt: jax.Array) -> jax.Array:
    acc = None
    for s in range(idx.shape[1] // 4):
        sample = None
        for t in range(4 * s, 4 * s + 4):
            v = rows.at[idx[:, t]].get(mode="promise_in_bounds").astype(jnp.float32)
            v = wgt[:, t, None] * v
            sample = v if sample is None else sample + v
        acc = sample if acc is None else acc + sample
    return acc


def _weighted_row_sum_fwd(rows, idx, wgt):
    # An empty [P, 0] array carries the rows' count and dtype (residuals must be arrays).
    return _weighted_row_sum(rows, idx, wgt), (jnp.zeros((rows.shape[0], 0), rows.dtype), idx, wgt)


# The backward scatter-adds in chunks of about this many updated float32 elements.
_SCATTER_CHUNK_ELEMENTS = 1 << 18


def _weighted_row_sum_bwd(res, g):
    like_rows, idx, wgt = res
    num_rows, dtype = like_rows.shape[0], like_rows.dtype
    n, t = idx.shape
    c = g.shape[-1]
    chunk = max(1, min(n, _SCATTER_CHUNK_ELEMENTS // (t * c)))
    num_chunks = -(-n // chunk)
    pad = num_chunks * chunk - n
    if pad:
        # Padded entries scatter weight 0 into row 0.
        idx = jnp.pad(idx, ((0, pad), (0, 0)))
        wgt = jnp.pad(wgt, ((0, pad), (0, 0)))
        g = jnp.pad(g, ((0, pad), (0, 0)))

    def body(acc, xs):
        i, w, gc = xs
        upd = (w[:, :, None] * gc[:, None, :]).reshape(chunk * t, c)
        return acc.at[i.reshape(-1)].add(upd, mode="promise_in_bounds"), None

    d_rows, _ = jax.lax.scan(
        body,
        jnp.zeros((num_rows, c), jnp.float32),
        (
            idx.reshape(num_chunks, chunk, t),
            wgt.reshape(num_chunks, chunk, t),
            g.astype(jnp.float32).reshape(num_chunks, chunk, c),
        ),
    )
    d_idx = np.zeros(idx[:n].shape, dtype=jax.dtypes.float0)
    return d_rows.astype(dtype), d_idx, jnp.zeros_like(wgt[:n])


_weighted_row_sum.defvjp(_weighted_row_sum_fwd, _weighted_row_sum_bwd)


def _multilevel_is_batched(shapes: Sequence[tuple[int, ...]], boxes_shape: tuple[int, ...],
                           index_shape: tuple[int, ...] | None) -> bool:
    """Whether the maps of :func:`multilevel_roi_align` carry a batch axis; ValueError unless one
    ``C`` and one of: maps ``[H_l, W_l, C]`` with boxes ``[R, 4]``; maps ``[B, H_l, W_l, C]``
    with boxes ``[B, R, 4]``; maps ``[B, H_l, W_l, C]`` with boxes ``[K, 4]`` and
    ``image_index`` ``[K]``."""
    if index_shape is not None:
        ok = (all(len(s) == 4 for s in shapes) and len(boxes_shape) == 2
              and tuple(index_shape) == boxes_shape[:1])
    elif len(boxes_shape) == 3:
        ok = all(len(s) == 4 and s[0] == boxes_shape[0] for s in shapes)
    else:
        ok = all(len(s) == 3 for s in shapes) and len(boxes_shape) == 2
    if not ok or len({s[-1] for s in shapes}) != 1:
        raise ValueError(
            f"feature maps must be [H_l, W_l, C] with one C (and boxes [R, 4]), or "
            f"[B, H_l, W_l, C] with boxes [B, R, 4] (or [K, 4] and image_index [K]); got "
            f"{list(shapes)} and boxes {boxes_shape}"
            + ("" if index_shape is None else f" and image_index {tuple(index_shape)}"))
    return index_shape is not None or len(boxes_shape) == 3


def _check_args(output_size: Sequence[int], sampling_ratio: int) -> tuple[int, int]:
    if sampling_ratio <= 0:
        raise ValueError(
            f"sampling_ratio must be a positive static int, got {sampling_ratio}; the "
            "reference's adaptive mode (<= 0) has data-dependent sample counts."
        )
    ph, pw = (output_size, output_size) if isinstance(output_size, int) else output_size
    return int(ph), int(pw)


@functools.partial(
    jax.jit, static_argnames=("output_size", "spatial_scale", "sampling_ratio", "aligned")
)
def roi_align(
    features: jax.Array,
    boxes: jax.Array,
    output_size: int | tuple[int, int] = (7, 7),
    spatial_scale: float = 1.0,
    sampling_ratio: int = 2,
    aligned: bool = True,
    image_index: jax.Array | None = None,
) -> jax.Array:
    """RoIAlign from one ``[H, W, C]`` feature map (any float dtype; see the module).

    ``boxes``: ``[R, 4]`` ``(x1, y1, x2, y2)``, absolute input-image pixels (kept float32), times
    ``spatial_scale`` (e.g. ``1/16``) as map pixels; ``output_size``: ``(h, w)`` or one int;
    ``sampling_ratio``: static samples per bin axis, > 0 (else ValueError); ``aligned``: shift by
    -0.5 map pixel (detectron2's ``ROIAlignV2``), ``False`` the legacy RoI sizes forced ``>= 1``.
    Returns ``[R, h, w, C]`` in the features' dtype. With ``image_index`` (int ``[R]``,
    torchvision's batch index) the features are a batch ``[B, H, W, C]`` and RoI ``r`` reads
    image ``image_index[r]``.
    """
    ph, pw = _check_args(output_size, sampling_ratio)
    features = jnp.asarray(features)
    expected = 3 if image_index is None else 4
    if features.ndim != expected or (
            image_index is not None and jnp.shape(image_index) != jnp.shape(boxes)[:1]):
        raise ValueError(
            f"features must be [H, W, C] (or [B, H, W, C] with image_index [R] for boxes "
            f"[R, 4]); got {features.shape} and boxes {jnp.shape(boxes)}")
    h, w, c = features.shape[-3:]
    row_offset = 0 if image_index is None else jnp.asarray(image_index, jnp.int32) * (h * w)
    return roi_align_from_rows(
        features.reshape(-1, c),
        boxes,
        row_offset,
        h,
        w,
        float(spatial_scale),
        (ph, pw),
        sampling_ratio,
        aligned,
    )


@functools.partial(
    jax.jit, static_argnames=("canonical_size", "canonical_level", "min_level", "max_level")
)
def fpn_levels(
    boxes: jax.Array,
    canonical_size: float = 224.0,
    canonical_level: int = 4,
    min_level: int = 2,
    max_level: int = 5,
) -> jax.Array:
    """FPN level of each RoI: ``floor(k0 + log2(sqrt(area) / canonical_size) + 1e-6)``, clamped.

    ``k0 = canonical_level``. ``[..., 4]`` boxes -> int32 ``[...]`` in ``[min_level, max_level]``;
    area <= 0 gives ``min_level`` (torchvision's LevelMapper agrees at 0 and takes the square root
    of a negative area below).
    """
    area = jnp.maximum(box_area(boxes), 0.0)
    lvl = jnp.floor(canonical_level + jnp.log2(jnp.sqrt(area) / canonical_size) + 1e-6)
    return jnp.clip(lvl, min_level, max_level).astype(jnp.int32)


@functools.partial(
    jax.jit,
    static_argnames=(
        "output_size",
        "sampling_ratio",
        "canonical_size",
        "canonical_level",
        "min_level",
        "max_level",
        "aligned",
    ),
)
def multilevel_roi_align(
    features: Sequence[jax.Array],
    boxes: jax.Array,
    output_size: int | tuple[int, int] = (7, 7),
    sampling_ratio: int = 2,
    canonical_size: float = 224.0,
    canonical_level: int = 4,
    min_level: int = 2,
    max_level: int = 5,
    aligned: bool = True,
    image_index: jax.Array | None = None,
) -> jax.Array:
    """RoIAlign of each RoI from its :func:`fpn_levels` level ``l``, at scale ``2**-l``.

    ``features``: ``max_level - min_level + 1`` maps ``[H_l, W_l, C]``, finest (``min_level``)
    first, one ``C`` and dtype (else ValueError); ``boxes``: ``[R, 4]`` absolute input-image
    pixels; other arguments as :func:`roi_align` and :func:`fpn_levels`. Returns ``[R, h, w, C]``
    in the features' dtype. A batch: maps ``[B, H_l, W_l, C]`` and boxes ``[B, R, 4]`` give
    ``[B, R, h, w, C]`` (the images' rows in one table, so the backward pass scatters without
    the copies ``vmap`` adds); with ``image_index`` (int ``[K]``, torchvision's batch index)
    boxes ``[K, 4]`` of those images give ``[K, h, w, C]``. Each RoI gathers from its own
    image and level only (cost independent of the level count). torchvision's
    ``MultiScaleRoIAlign`` uses ``aligned=False``, detectron2's ``ROIAlignV2``
    ``aligned=True`` (the default here).
    """
    ph, pw = _check_args(output_size, sampling_ratio)
    num_levels = max_level - min_level + 1
    if len(features) != num_levels:
        raise ValueError(
            f"expected {num_levels} feature maps for levels {min_level}..{max_level}, "
            f"got {len(features)}"
        )
    features = [jnp.asarray(f) for f in features]
    boxes = jnp.asarray(boxes)
    shapes = [f.shape for f in features]
    batched = _multilevel_is_batched(shapes, boxes.shape,
                                     None if image_index is None else jnp.shape(image_index))
    indexed = image_index is not None
    offsets, start = [], 0
    for s in shapes:
        offsets.append(start)
        start += int(np.prod(s[:-1]))
    rows = jnp.concatenate([f.reshape(-1, f.shape[-1]) for f in features], axis=0)
    lvl = fpn_levels(boxes, canonical_size, canonical_level, min_level, max_level) - min_level
    level_h = jnp.asarray([s[-3] for s in shapes], jnp.int32)[lvl]
    level_w = jnp.asarray([s[-2] for s in shapes], jnp.int32)[lvl]
    level_offset = jnp.asarray(offsets, jnp.int32)[lvl]
    if batched:  # image b's map of level l follows the b maps of that level before it
        image = (jnp.asarray(image_index, jnp.int32) if indexed
                 else jnp.arange(boxes.shape[0], dtype=jnp.int32)[:, None])
        level_offset = level_offset + image * (level_h * level_w)
    scales = jnp.asarray([2.0 ** -(min_level + i) for i in range(num_levels)], jnp.float32)
    out = roi_align_from_rows(
        rows,
        boxes.reshape(-1, 4),
        level_offset.reshape(-1),
        level_h.reshape(-1),
        level_w.reshape(-1),
        scales[lvl].reshape(-1),
        (ph, pw),
        sampling_ratio,
        aligned,
    )
    return out.reshape(*boxes.shape[:-1], *out.shape[1:])
