"""Instance masks: pasting predicted ``m x m`` masks into the image, and RoI mask targets.

Convention for pasting: torchvision's ``paste_masks_in_image`` (Mask R-CNN inference), with
static shapes. Per RoI:

1. the ``m x m`` mask is zero-padded by one pixel to ``(m + 2) x (m + 2)`` and the box is
   scaled about its centre by ``(m + 2) / m`` (float32), so the padding covers the box border;
2. the scaled box is truncated towards zero to integers ``(x0, y0, x1, y1)``; the pasted
   region has ``w = max(x1 - x0 + 1, 1)`` columns and ``h = max(y1 - y0 + 1, 1)`` rows
   (inclusive end pixel);
3. the padded mask is resized to ``h x w`` with bilinear interpolation, ``align_corners=False``
   (PyTorch's ``F.interpolate``: source ``max((d + 0.5) * in / out - 0.5, 0)``, upper tap
   clamped at the edge) and written at rows ``y0 .. y1`` and columns ``x0 .. x1``, clipped to
   the image; pixels outside are 0.

``paste_masks`` thresholds those probabilities with ``> threshold`` (torchvision's reference
evaluation uses ``mask > 0.5``; detectron2's own paste, a ``grid_sample`` of the unpadded mask
with half-pixel centres, differs slightly near the border and uses ``>=``). Instead of a
per-RoI resize of data-dependent size, every image pixel computes its source coordinate in the
padded mask directly (the same formula), which is what makes the shapes static.

Mask targets (``crop_and_resize_masks``): detectron2's ``BitMasks.crop_and_resize``: RoIAlign
with ``aligned=True`` of each RoI's full-resolution ground-truth mask at ``mask_size x
mask_size``, then ``>= 0.5``. detectron2 uses the adaptive sampling ratio (data-dependent); we
use a static ``sampling_ratio`` (default 2).
"""

import functools

import jax
import jax.numpy as jnp

from jaxdet.ops.roi_align import roi_align_from_rows

__all__ = ["paste_mask_probs", "paste_masks", "crop_and_resize_masks"]


def _int_boxes(boxes: jax.Array, mask_size: int) -> jax.Array:
    """``[R, 4]`` float boxes -> int32 ``[R, 4]`` boxes of the padded mask (steps 1 and 2)."""
    b = boxes.astype(jnp.float32)
    scale = jnp.float32((mask_size + 2) / mask_size)
    w_half = (b[:, 2] - b[:, 0]) * 0.5 * scale
    h_half = (b[:, 3] - b[:, 1]) * 0.5 * scale
    x_c = (b[:, 2] + b[:, 0]) * 0.5
    y_c = (b[:, 3] + b[:, 1]) * 0.5
    out = jnp.stack([x_c - w_half, y_c - h_half, x_c + w_half, y_c + h_half], axis=-1)
    # Truncation towards zero, like a float -> int64 cast; clipped so int32 cannot overflow.
    return jnp.trunc(jnp.clip(out, -(2.0**30), 2.0**30)).astype(jnp.int32)


def _axis_interp(start: jax.Array, end: jax.Array, in_size: int, out_size: int):
    """Bilinear taps, per RoI, for image positions ``0 .. out_size - 1`` along one axis.

    ``start`` / ``end`` ``[R]`` int32: the pasted region's first and last (inclusive) pixel.
    Returns ``lo, hi`` int32 and ``w_lo, w_hi`` float32 ``[R, out_size]`` taps into the padded
    mask, with both weights 0 outside the region (or outside the image).
    """
    d = jnp.arange(out_size, dtype=jnp.int32)[None, :] - start[:, None]  # position in region
    inside = (d >= 0) & (d <= (end - start)[:, None])  # nothing when end < start
    length = jnp.maximum(end - start + 1, 1)
    # F.interpolate's scale in float32: in / out (a true division by a per-RoI value).
    scale = jnp.float32(in_size) / length.astype(jnp.float32)
    src = (d.astype(jnp.float32) + 0.5) * scale[:, None] - 0.5
    src = jnp.maximum(src, 0.0)
    lo = jnp.minimum(jnp.floor(src).astype(jnp.int32), in_size - 1)
    frac = jnp.clip(src - lo.astype(jnp.float32), 0.0, 1.0)
    hi = jnp.minimum(lo + 1, in_size - 1)
    lo = jnp.where(inside, lo, 0)
    hi = jnp.where(inside, hi, 0)
    return lo, hi, jnp.where(inside, 1.0 - frac, 0.0), jnp.where(inside, frac, 0.0)


@functools.partial(jax.jit, static_argnames=("height", "width"))
def paste_mask_probs(masks: jax.Array, boxes: jax.Array, height: int, width: int) -> jax.Array:
    """Paste per-RoI mask probabilities into the image (torchvision convention, see module).

    Args:
      masks: ``[R, m, m]`` mask probabilities (e.g. sigmoid of the mask head's logits for
        each RoI's class).
      boxes: ``[R, 4]`` ``(x1, y1, x2, y2)``, absolute image pixels (float32).
      height, width: static image size.

    Returns:
      ``[R, height, width]`` float32 probabilities, 0 outside each RoI's pasted region.
      Memory is ``R * height * width`` floats: chunk the RoIs (or ``vmap`` per image) when
      that is large.
    """
    masks = jnp.asarray(masks)
    m = masks.shape[-1]
    if masks.shape[-2] != m:
        raise ValueError(f"masks must be square [R, m, m], got {masks.shape}")
    padded = jnp.pad(masks.astype(jnp.float32), ((0, 0), (1, 1), (1, 1)))  # [R, m+2, m+2]
    ib = _int_boxes(boxes, m)
    x0, y0, x1, y1 = ib[:, 0], ib[:, 1], ib[:, 2], ib[:, 3]
    ylo, yhi, wylo, wyhi = _axis_interp(y0, y1, m + 2, height)  # [R, height]
    xlo, xhi, wxlo, wxhi = _axis_interp(x0, x1, m + 2, width)  # [R, width]
    # Interpolate along x for every mask row, then along y: [R, m+2, width] -> [R, H, W].
    cols_lo = jnp.take_along_axis(padded, xlo[:, None, :], axis=2)
    cols_hi = jnp.take_along_axis(padded, xhi[:, None, :], axis=2)
    rows = wxlo[:, None, :] * cols_lo + wxhi[:, None, :] * cols_hi  # [R, m+2, width]
    top = jnp.take_along_axis(rows, ylo[:, :, None], axis=1)
    bottom = jnp.take_along_axis(rows, yhi[:, :, None], axis=1)
    return wylo[:, :, None] * top + wyhi[:, :, None] * bottom


@functools.partial(jax.jit, static_argnames=("height", "width", "threshold"))
def paste_masks(
    masks: jax.Array, boxes: jax.Array, height: int, width: int, threshold: float = 0.5
) -> jax.Array:
    """Binary masks in image space: ``paste_mask_probs(...) > threshold``.

    Args:
      masks: ``[R, m, m]`` mask probabilities.
      boxes: ``[R, 4]`` ``(x1, y1, x2, y2)``, absolute image pixels.
      height, width: static image size.
      threshold: probabilities strictly above it are foreground.

    Returns:
      ``[R, height, width]`` bool. ``jax.vmap`` adds a leading batch axis.
    """
    return paste_mask_probs(masks, boxes, height, width) > threshold


@functools.partial(jax.jit, static_argnames=("mask_size", "sampling_ratio", "threshold"))
def crop_and_resize_masks(
    masks: jax.Array,
    boxes: jax.Array,
    mask_index: jax.Array,
    mask_size: int = 28,
    sampling_ratio: int = 2,
    threshold: float | None = 0.5,
) -> jax.Array:
    """Mask-head targets: each RoI's ground-truth mask cropped to its box and resized.

    Args:
      masks: ``[N, H, W]`` full-resolution instance masks (bool or float), image pixels.
      boxes: ``[R, 4]`` ``(x1, y1, x2, y2)``, absolute image pixels (the RoIs).
      mask_index: int32 ``[R]``: which of the ``N`` masks belongs to each RoI (its matched
        ground truth); clipped to ``[0, N)`` (padded RoIs should be masked out by the caller).
      mask_size: output side ``S``.
      sampling_ratio: static RoIAlign samples per bin axis.
      threshold: ``None`` returns the soft RoIAlign values; otherwise values ``>= threshold``
        become 1.0 and the rest 0.0 (detectron2).

    Returns:
      ``[R, S, S]`` float32. Each RoI reads only its own mask (one gather per RoI from the
      ``[N * H * W, 1]`` flattened masks): RoIAlign with ``aligned=True``, scale 1.
    """
    masks = jnp.asarray(masks)
    n, h, w = masks.shape
    rows = masks.reshape(n * h * w, 1)
    idx = jnp.clip(mask_index.astype(jnp.int32), 0, n - 1)
    out = roi_align_from_rows(
        rows,
        boxes,
        idx * (h * w),
        h,
        w,
        1.0,
        (mask_size, mask_size),
        sampling_ratio,
        True,
        out_dtype=jnp.float32,
    )[..., 0]
    if threshold is None:
        return out
    return (out >= threshold).astype(jnp.float32)
