"""Pictures of inputs, ground truth and predictions (PIL, NumPy)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

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
    """input | ground truth | prediction overlay: ``image`` ``[H, W, 3]`` uint8, ``label``
    ``[H, W]`` and ``prediction`` ``[h, w]`` (upsampled if coarser) int class ids.
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


def overlay_masks(image: np.ndarray, masks: np.ndarray, colour_ids: np.ndarray,
                  alpha: float = 0.5) -> np.ndarray:
    """``[H, W, 3]`` uint8 image with each ``[N, H, W]`` bool mask blended (``alpha``) in the
    :data:`PALETTE` colour ``colour_ids`` ``[N]``, later masks on top.
    """
    out = np.asarray(image, np.float32).copy()
    for m, c in zip(np.asarray(masks, bool), np.asarray(colour_ids), strict=True):
        colour = PALETTE[int(c) % len(PALETTE)].astype(np.float32)
        out[m] = out[m] * (1 - alpha) + colour * alpha
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def draw_skeletons(image: np.ndarray, keypoints: np.ndarray,
                   skeleton: list[tuple[int, int]] | tuple[tuple[int, int], ...],
                   colour: tuple[int, int, int] = (255, 230, 0)) -> np.ndarray:
    """``[H, W, 3]`` uint8 image with each person's limbs (``skeleton`` index pairs) as lines and
    keypoints ``[N, K, 2 or 3]`` (absolute pixels) as dots in ``colour``.
    """
    picture = Image.fromarray(np.asarray(image, np.uint8))
    draw = ImageDraw.Draw(picture)
    for person in np.asarray(keypoints, np.float32).reshape(-1, *np.shape(keypoints)[-2:]):
        pts = [tuple(p) for p in person[:, :2].tolist()]
        for a, b in skeleton:
            draw.line([pts[a], pts[b]], fill=colour, width=1)
        for x, y in pts:
            draw.ellipse([x - 1, y - 1, x + 1, y + 1], fill=colour)
    return np.asarray(picture)


def boxes_panel(
    image: np.ndarray,
    gt: list[tuple[np.ndarray, str]],
    pred: list[tuple[np.ndarray, str]],
    scale: int = 0,
) -> Image.Image:
    """The image (uint8 ``[H, W, 3]``) with captioned gt (green) and predicted (red) boxes,
    ``(box [4] (x1, y1, x2, y2) absolute pixels, caption)`` pairs; ``scale``: integer upscaling
    (0: at least 256 px wide).
    """
    height, width = image.shape[:2]
    scale = scale or max(1, -(-256 // width))
    picture = Image.fromarray(np.asarray(image, np.uint8)).resize(
        (width * scale, height * scale), Image.NEAREST
    )
    draw = ImageDraw.Draw(picture)
    for items, colour, row in ((gt, (40, 220, 40), 0), (pred, (240, 40, 40), 1)):
        for box, caption in items:
            x1, y1, x2, y2 = (float(v) * scale for v in box)
            x1, x2 = sorted((x1, x2))  # an untrained model may predict inverted boxes
            y1, y2 = sorted((y1, y2))
            x2, y2 = max(x2, x1 + 1), max(y2, y1 + 1)
            draw.rectangle([x1, y1, x2 - 1, y2 - 1], outline=colour, width=2)
            draw.text((x1 + 2, y1 + 2 + 12 * row), caption, fill=colour)
    return picture


def skeleton_panel(
    image: np.ndarray,
    gt_joints: np.ndarray,
    gt_visible: np.ndarray,
    pred_joints: np.ndarray,
    skeleton: list[tuple[int, int]] | tuple[tuple[int, int], ...],
    scale: int = 0,
) -> Image.Image:
    """input | gt skeleton (green, visible joints) | predicted skeleton (red); joints ``[K, 2]``
    absolute pixels, ``gt_visible`` ``[K]``, ``skeleton`` limb pairs; ``scale`` (0: >= 192 px
    per panel).
    """
    height, width = image.shape[:2]
    scale = scale or max(1, -(-192 // width))
    base = Image.fromarray(np.asarray(image, np.uint8)).resize(
        (width * scale, height * scale), Image.NEAREST
    )
    panels = [base]
    for joints, visible, colour in (
        (gt_joints, gt_visible, (40, 220, 40)),
        (pred_joints, np.ones(len(pred_joints)), (240, 40, 40)),
    ):
        panel = base.copy()
        draw = ImageDraw.Draw(panel)
        pts = np.asarray(joints, np.float32) * scale
        for a, b in skeleton:
            if visible[a] and visible[b]:
                draw.line([tuple(pts[a]), tuple(pts[b])], fill=colour, width=2)
        for k, (x, y) in enumerate(pts):
            if visible[k]:
                draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
        panels.append(panel)
    gap = 4
    row = Image.new("RGB", (3 * base.width + 2 * gap, base.height), (255, 255, 255))
    for i, panel in enumerate(panels):
        row.paste(panel, (i * (base.width + gap), 0))
    return row


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
