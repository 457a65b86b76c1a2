"""SSD's default boxes (NumPy, static): the fixed boxes every feature-map location predicts from.

With ``m`` maps, map ``k = 1..m`` has scale ``s_k = s_min + (s_max - s_min) (k - 1) / (m - 1)``
(``ssd_min_scale``, ``ssd_max_scale``; fractions of the image side; for ``m = 1``,
``s_1 = s_min``) and the rule is continued to ``s_{m+1}`` (``= s_max`` for ``m = 1``), as the
original Caffe SSD's last ``max_size`` is. Its boxes, in this order at every location:

1. a square of scale ``s_k``;
2. the paper's extra square of scale ``s'_k = sqrt(s_k s_{k+1})``;
3. one box per aspect ratio ``r`` (height / width, the convention of
   :mod:`jaxdet.ops.anchors`) of ``ssd_aspect_ratios[k]`` in config order (``r = 1`` is not
   allowed there: the two squares are always present): width ``s_k / sqrt(r)``, height
   ``s_k sqrt(r)``.

Sizes are fractions of each axis (``w * W``, ``h * H`` pixels, the paper's normalised
coordinates) and centres are ``((j + 0.5) W / f_w, (i + 0.5) H / f_h)`` for the map's cell
``(i, j)`` of ``f_h x f_w``. Boxes are clipped to the padded image (``ssd_clip_boxes``, as
torchvision's ``DefaultBoxGenerator``). Layout ``[A, 4]`` ``(x1, y1, x2, y2)`` absolute
pixels: map, then row ``i``, column ``j``, then the box order above - the order in which the
heads' outputs are flattened. A default box counts only when its centre lies inside
``image_hw`` (else it is neither positive nor negative, and never a detection).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def ssd_scales(num_maps: int, min_scale: float, max_scale: float) -> np.ndarray:
    """``[m + 1]`` float64 scales ``s_1..s_{m+1}`` (module docstring: linear from ``min_scale``
    to ``max_scale`` over the ``m`` maps, continued one step for the extra square)."""
    if num_maps == 1:
        return np.asarray([min_scale, max_scale], np.float64)
    step = (max_scale - min_scale) / (num_maps - 1)
    return min_scale + step * np.arange(num_maps + 1, dtype=np.float64)


def default_box_shapes(
    scale: float, next_scale: float, aspect_ratios: Sequence[float]
) -> np.ndarray:
    """``[n, 2]`` float64 ``(width, height)`` fractions of the image of one map's boxes, in the
    module docstring's order (square ``s``, square ``sqrt(s s')``, one per ratio)."""
    extra = math.sqrt(scale * next_scale)
    shapes = [(scale, scale), (extra, extra)]
    shapes += [(scale / math.sqrt(r), scale * math.sqrt(r)) for r in aspect_ratios]
    return np.asarray(shapes, np.float64)


def default_boxes(
    feature_sizes: Sequence[tuple[int, int]],
    image_size: tuple[int, int],
    min_scale: float,
    max_scale: float,
    aspect_ratios: Sequence[Sequence[float]],
    clip: bool = True,
) -> np.ndarray:
    """All default boxes of the padded image (module docstring for the rule and order).

    Args:
      feature_sizes: ``(f_h, f_w)`` of each map, finest first (static ints).
      image_size: ``(H, W)`` of the padded network input.
      min_scale, max_scale: ``s_min``, ``s_max`` (fractions of the image side).
      aspect_ratios: one sequence of height / width ratios (``!= 1``) per map.
      clip: clip the boxes to ``[0, W] x [0, H]``.

    Returns:
      NumPy float32 ``[A, 4]`` ``(x1, y1, x2, y2)`` absolute pixels, ``A = sum_k f_h f_w
      (2 + len(aspect_ratios[k]))``, ordered by map, row, column, box shape.
    """
    height, width = float(image_size[0]), float(image_size[1])
    scales = ssd_scales(len(feature_sizes), min_scale, max_scale)
    out = []
    for k, (fh, fw) in enumerate(feature_sizes):
        shapes = default_box_shapes(scales[k], scales[k + 1], aspect_ratios[k])  # [n, 2]
        cy = (np.arange(fh, dtype=np.float64) + 0.5) * height / fh
        cx = (np.arange(fw, dtype=np.float64) + 0.5) * width / fw
        cy, cx = np.meshgrid(cy, cx, indexing="ij")  # [fh, fw]
        half_w = 0.5 * shapes[:, 0] * width
        half_h = 0.5 * shapes[:, 1] * height
        boxes = np.stack([
            cx[..., None] - half_w, cy[..., None] - half_h,
            cx[..., None] + half_w, cy[..., None] + half_h], axis=-1)  # [fh, fw, n, 4]
        out.append(boxes.reshape(-1, 4))
    boxes = np.concatenate(out)
    if clip:
        boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0.0, width)
        boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0.0, height)
    return boxes.astype(np.float32)
