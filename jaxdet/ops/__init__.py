"""Detection ops in jax.numpy with static shapes.

Boxes are ``[..., 4]`` float32 ``(x1, y1, x2, y2)`` in absolute pixels, no "+1" in widths.
Every op works under ``jit`` and ``vmap`` (and ``grad`` where differentiable).
"""

# --- boxes, box coding, anchors, matching, sampling, NMS ---
from jaxdet.ops.boxes import (
    box_area,
    box_iou,
    clip_boxes,
    cxcywh_to_xyxy,
    xyxy_to_cxcywh,
    xyxy_to_yxyx,
    yxyx_to_xyxy,
)

# --- RoIAlign, RoIPool, masks, keypoint heatmaps ---
