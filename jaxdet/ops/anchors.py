"""Anchor grids for dense heads (RPN, RetinaNet), in torchvision's ``AnchorGenerator`` order.

Anchors are float32 ``(x1, y1, x2, y2)`` in absolute pixels of the (padded) input image,
computed in NumPy from static configuration (constants under ``jit``). Order (the one heads
flatten ``[H, W, A * k]`` outputs in): locations row-major (``y`` outer, ``x`` inner), then
cell anchors aspect-ratio-major (ratio outer, size inner). Cell anchor of size ``s`` and ratio
``r = h / w``: ``w = s / sqrt(r)``, ``h = s * sqrt(r)``, ``(-w/2, -h/2, w/2, h/2)``, rounded
half to even with ``round_cells`` (torchvision's default: size 32, ratio 0.5 gives
``(-23, -11, 23, 11)``). Cell ``(i, j)`` adds ``(j * stride_w, i * stride_h)``: anchors are
centred on the cell's top-left corner.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["cell_anchors", "generate_anchors", "generate_level_anchors"]

_Pair = int | tuple[int, int]


def _pair(x: _Pair) -> tuple[int, int]:
    return (int(x), int(x)) if isinstance(x, int | np.integer) else (int(x[0]), int(x[1]))


def cell_anchors(
    sizes: Sequence[float], aspect_ratios: Sequence[float], round_cells: bool = True
) -> np.ndarray:
    """Zero-centred anchors of one location.

    ``sizes``: pixels (``sqrt`` of the area), e.g. ``(32,)``; ``aspect_ratios``: height / width,
    e.g. ``(0.5, 1.0, 2.0)``; ``round_cells``: round half to even like torchvision.
    Returns NumPy float32 ``[len(aspect_ratios) * len(sizes), 4]`` ``(x1, y1, x2, y2)``, row
    ``r * len(sizes) + s``.
    """
    scales = np.asarray(sizes, np.float32)
    ratios = np.asarray(aspect_ratios, np.float32)
    h_ratios = np.sqrt(ratios)
    w_ratios = np.float32(1.0) / h_ratios
    ws = (w_ratios[:, None] * scales[None, :]).reshape(-1)
    hs = (h_ratios[:, None] * scales[None, :]).reshape(-1)
    cells = np.stack([-ws, -hs, ws, hs], axis=1) / np.float32(2.0)
    if round_cells:
        cells = np.round(cells)
    return cells.astype(np.float32)


def generate_level_anchors(
    feature_size: tuple[int, int],
    stride: _Pair,
    sizes: Sequence[float],
    aspect_ratios: Sequence[float],
    round_cells: bool = True,
) -> jax.Array:
    """Anchors of one level: ``[H * W * A, 4]`` float32 ``(x1, y1, x2, y2)``, absolute pixels.

    ``feature_size``: static ``(H, W)``; ``stride``: pixels per cell, int or ``(stride_h,
    stride_w)`` (torchvision: ``image_size // feature_size``); ``A = len(sizes) *
    len(aspect_ratios)``. Row ``(i * W + j) * A + a`` is cell anchor ``a`` at ``(y=i, x=j)``.
    """
    height, width = (int(feature_size[0]), int(feature_size[1]))
    stride_h, stride_w = _pair(stride)
    cells = cell_anchors(sizes, aspect_ratios, round_cells)  # [A, 4]
    shift_x = (np.arange(width, dtype=np.int64) * stride_w).astype(np.float32)
    shift_y = (np.arange(height, dtype=np.int64) * stride_h).astype(np.float32)
    sy, sx = np.meshgrid(shift_y, shift_x, indexing="ij")  # [H, W] each
    shifts = np.stack([sx, sy, sx, sy], axis=-1).reshape(-1, 1, 4)  # [H*W, 1, 4]
    return jnp.asarray((shifts + cells[None]).reshape(-1, 4))


def generate_anchors(
    feature_sizes: Sequence[tuple[int, int]],
    strides: Sequence[_Pair],
    sizes: Sequence[Sequence[float]],
    aspect_ratios: Sequence[Sequence[float]],
    round_cells: bool = True,
) -> list[jax.Array]:
    """Anchors of every pyramid level: one :func:`generate_level_anchors` array per level.

    Per-level sequences: ``feature_sizes`` ``(H_l, W_l)``, ``strides``, ``sizes`` (e.g.
    ``((32,), (64,), ...)``), ``aspect_ratios`` (e.g. ``((0.5, 1.0, 2.0),) * 5``); ValueError if
    their lengths differ. ``jnp.concatenate(result)`` is torchvision's per-image anchor list.
    """
    n = len(feature_sizes)
    if not (len(strides) == len(sizes) == len(aspect_ratios) == n):
        raise ValueError(
            f"feature_sizes, strides, sizes and aspect_ratios need one entry per level; got "
            f"{n}, {len(strides)}, {len(sizes)}, {len(aspect_ratios)}"
        )
    return [
        generate_level_anchors(f, st, sz, ar, round_cells)
        for f, st, sz, ar in zip(feature_sizes, strides, sizes, aspect_ratios, strict=True)
    ]
