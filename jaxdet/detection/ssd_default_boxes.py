"""SSD's default boxes (NumPy, static).

Map ``k = 1..m`` has scale ``s_k = s_min + (s_max - s_min) (k - 1) / (m - 1)``
(``ssd_min_scale``/``ssd_max_scale``, fractions of the image side; ``m = 1``: ``s_1 = s_min``),
continued to ``s_{m+1}`` (``= s_max`` for ``m = 1``) as Caffe SSD. Boxes per location, in
order: square ``s_k``; square ``sqrt(s_k s_{k+1})``; per aspect ratio ``r`` (height / width,
``!= 1``) of ``ssd_aspect_ratios[k]``: width ``s_k / sqrt(r)``, height ``s_k sqrt(r)``.

Sizes are fractions of each axis; centres ``((j + 0.5) W / f_w, (i + 0.5) H / f_h)`` for cell
``(i, j)``. Layout ``[A, 4]`` ``(x1, y1, x2, y2)`` absolute pixels ordered by map, row, column,
box (the heads' flattening order); clipped to the padded image if ``ssd_clip_boxes`` (as
torchvision's ``DefaultBoxGenerator``). A box counts only when its centre is inside
``image_hw``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def ssd_scales(num_maps: int, min_scale: float, max_scale: float) -> np.ndarray:
    """``[m + 1]`` float64 scales ``s_1..s_{m+1}`` (module docstring)."""
    if num_maps == 1:
        return np.asarray([min_scale, max_scale], np.float64)
    step = (max_scale - min_scale) / (num_maps - 1)
    return min_scale + step * np.arange(num_maps + 1, dtype=np.float64)


def default_box_shapes(
    scale: float, next_scale: float, aspect_ratios: Sequence[float]
) -> np.ndarray:
    """``[n, 2]`` float64 ``(width, height)`` fractions of one map's boxes, in module order."""
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
    """All default boxes of the padded image.

    Args:
      feature_sizes: ``(f_h, f_w)`` per map, finest first. image_size: padded ``(H, W)``.
      min_scale, max_scale: ``s_min``, ``s_max``. aspect_ratios: per map, ratios ``!= 1``.
      clip: clip to ``[0, W] x [0, H]``.

    Returns float32 ``[A, 4]`` ``(x1, y1, x2, y2)`` absolute pixels,
    ``A = sum_k f_h f_w (2 + len(aspect_ratios[k]))``.
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
