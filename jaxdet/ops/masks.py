"""Instance masks: pasting ``m x m`` mask predictions into the image, and RoI mask targets.

Pasting follows torchvision's ``paste_masks_in_image`` with static shapes. Per RoI, the mask is
zero-padded to ``(m + 2) x (m + 2)`` and the box scaled about its centre by ``(m + 2) / m``
(float32), then truncated towards zero to ``(x0, y0, x1, y1)``: ``max(x1 - x0 + 1, 1)`` columns
and ``max(y1 - y0 + 1, 1)`` rows (inclusive end). The padded mask is resized to that region
bilinearly, ``align_corners=False`` (source ``max((d + 0.5) * in / out - 0.5, 0)``, upper tap
clamped), and written there, clipped to the image; 0 elsewhere. :func:`paste_masks` keeps
``> threshold`` (torchvision's evaluation: ``> 0.5``; detectron2's ``grid_sample`` paste
differs slightly near the border and uses ``>=``).

Targets (:func:`crop_and_resize_masks`): detectron2's ``BitMasks.crop_and_resize`` (RoIAlign,
``aligned=True``, then ``>= 0.5``) with a static ``sampling_ratio`` instead of the adaptive one.
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
    """Per-RoI bilinear taps into the padded mask along one image axis.

    ``start``/``end``: int32 ``[R]`` first and last (inclusive) pixel of the region. Returns
    int32 ``lo, hi`` and float32 ``w_lo, w_hi``, ``[R, out_size]``, weights 0 outside the region.
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
    """Paste ``[R, m, m]`` mask probabilities at ``[R, 4]`` boxes (image pixels).

    Returns float32 ``[R, height, width]`` (static sizes), 0 outside each pasted region;
    ValueError for non-square masks. Memory is ``R * height * width`` floats: chunk the RoIs (or
    ``vmap`` per image) when that is large.
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
    """``paste_mask_probs(...) > threshold``: bool ``[R, height, width]``."""
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
    """Mask-head targets: float32 ``[R, S, S]``, each RoI's own gt mask cropped and resized.

    ``masks``: ``[N, H, W]`` (bool or float) image-pixel instance masks; ``boxes``: ``[R, 4]``
    RoIs, absolute image pixels; ``mask_index``: int32 ``[R]``, clipped to ``[0, N)`` (mask
    padded RoIs out); ``mask_size``: ``S``. RoIAlign (``aligned=True``, scale 1, static
    ``sampling_ratio``), then ``>= threshold`` -> 1.0 / 0.0, or the soft values with ``None``.
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
