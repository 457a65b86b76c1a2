"""Anchor grids for dense heads (RPN, RetinaNet-style), in torchvision's AnchorGenerator order.

Anchors are float32 ``[..., 4]`` ``(x1, y1, x2, y2)`` in absolute pixels of the (padded) input
image. Everything here depends only on static configuration (feature-map sizes, strides, sizes,
aspect ratios), so it is computed once in NumPy float32 and enters a jit'd program as a
constant.

Order (the order the heads flatten their ``[H, W, A * k]`` outputs in): for each feature-map
location in row-major order (``y`` outer, ``x`` inner), for each cell anchor. Cell anchors are
ordered aspect-ratio-major: for each aspect ratio ``r`` (outer), for each size ``s`` (inner).
With FPN's one size per level this is simply the aspect-ratio order.

Cell anchor for size ``s`` and aspect ratio ``r = h / w``: ``w = s / sqrt(r)``,
``h = s * sqrt(r)``, centred at 0, i.e. ``(-w/2, -h/2, w/2, h/2)``. With ``round_cells=True``
(the default, matching torchvision) those four numbers are rounded to integers, half to even
(``torch.round`` and ``np.round`` agree), so e.g. size 32 at ratio 0.5 gives
``(-23, -11, 23, 11)`` rather than ``(-22.63, -11.31, 22.63, 11.31)``. The location at grid
cell ``(i, j)`` adds the shift ``(j * stride_w, i * stride_h)``: anchors are centred on the
cell's top-left corner, not its centre, as in torchvision.
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

    Args:
      sizes: anchor sizes in pixels (``sqrt`` of the area), e.g. ``(32,)``.
      aspect_ratios: height / width ratios, e.g. ``(0.5, 1.0, 2.0)``.
      round_cells: round the four coordinates to integers (half to even) like torchvision.

    Returns:
      NumPy float32 ``[len(aspect_ratios) * len(sizes), 4]`` ``(x1, y1, x2, y2)``, ordered
      aspect-ratio-major (index ``r * len(sizes) + s``).
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
    """Anchors of one feature level.

    Args:
      feature_size: ``(H, W)`` of the feature map (static ints).
      stride: pixels per feature cell, an int or ``(stride_h, stride_w)``. torchvision uses
        ``image_size // feature_size`` per axis.
      sizes: anchor sizes in pixels.
      aspect_ratios: height / width ratios.
      round_cells: see :func:`cell_anchors`.

    Returns:
      ``[H * W * A, 4]`` float32 ``(x1, y1, x2, y2)``, absolute pixels, with
      ``A = len(sizes) * len(aspect_ratios)``, in the module's documented order: row ``(i * W
      + j) * A + a`` is cell anchor ``a`` at location ``(y=i, x=j)``.
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
    """Anchors of every level of a feature pyramid.

    Args:
      feature_sizes: ``(H_l, W_l)`` per level.
      strides: stride per level (int or ``(stride_h, stride_w)``).
      sizes: anchor sizes per level, e.g. ``((32,), (64,), (128,), (256,), (512,))``.
      aspect_ratios: aspect ratios per level, e.g. ``((0.5, 1.0, 2.0),) * 5``.
      round_cells: see :func:`cell_anchors`.

    Returns:
      One ``[H_l * W_l * A_l, 4]`` float32 ``(x1, y1, x2, y2)`` array per level (see
      :func:`generate_level_anchors`). ``jnp.concatenate(result)`` gives torchvision's
      per-image anchor list (levels in the given order).
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
