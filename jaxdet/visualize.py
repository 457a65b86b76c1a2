"""Pictures of inputs, ground truth and predictions (PIL, NumPy)."""

from __future__ import annotations

import numpy as np
from PIL import Image

# Background black, then distinct saturated colours; cycles for more classes.
PALETTE = np.array(
    [
        [0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200],
        [245, 130, 48], [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60],
    ],
    np.uint8,
)


def colorize(label_map: np.ndarray) -> np.ndarray:
    """``[H, W]`` int class ids -> ``[H, W, 3]`` uint8 colours (ignore labels are white)."""
    label_map = np.asarray(label_map)
    out = PALETTE[np.mod(label_map, len(PALETTE))]
    out[label_map == 255] = 255
    return out


def _upsample_nearest(label_map: np.ndarray, height: int, width: int) -> np.ndarray:
    s = height // label_map.shape[0]
    return np.repeat(np.repeat(label_map, s, axis=0), width // label_map.shape[1], axis=1)


def segmentation_panel(
    image: np.ndarray, label: np.ndarray, prediction: np.ndarray, alpha: float = 0.55
) -> Image.Image:
    """input | ground truth | prediction overlaid on the input, side by side.

    Args:
      image: ``[H, W, 3]`` uint8.
      label: ``[H, W]`` int class ids.
      prediction: ``[h, w]`` int class ids (upsampled to ``H x W`` if coarser).
    """
    height, width = image.shape[:2]
    if prediction.shape != (height, width):
        prediction = _upsample_nearest(prediction, height, width)
    overlay = image.astype(np.float32) * (1 - alpha) + colorize(prediction) * alpha
    overlay = np.where((prediction == 0)[..., None], image, overlay)
    gap = np.full((height, 4, 3), 255, np.uint8)
    row = np.concatenate(
        [image, gap, colorize(label), gap, overlay.astype(np.uint8)], axis=1
    )
    return Image.fromarray(row)


def stack_vertically(pictures: list[Image.Image], gap: int = 4) -> Image.Image:
    """One picture of several equally wide pictures, top to bottom."""
    width = max(p.width for p in pictures)
    height = sum(p.height for p in pictures) + gap * (len(pictures) - 1)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    y = 0
    for p in pictures:
        canvas.paste(p, (0, y))
        y += p.height + gap
    return canvas
