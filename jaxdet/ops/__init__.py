"""Detection ops in jax.numpy with static shapes.

Boxes are ``[..., 4]`` float32 ``(x1, y1, x2, y2)`` in absolute pixels, no "+1" in widths.
Every op works under ``jit`` and ``vmap`` (and ``grad`` where differentiable).
"""

# --- boxes, box coding, anchors, matching, sampling, NMS ---
from jaxdet.ops.anchors import cell_anchors as cell_anchors
from jaxdet.ops.anchors import generate_anchors as generate_anchors
from jaxdet.ops.anchors import generate_level_anchors as generate_level_anchors
from jaxdet.ops.box_coder import DEFAULT_SCALE_CLIP as DEFAULT_SCALE_CLIP
from jaxdet.ops.box_coder import decode_boxes as decode_boxes
from jaxdet.ops.box_coder import encode_boxes as encode_boxes
from jaxdet.ops.boxes import box_area as box_area
from jaxdet.ops.boxes import box_iou as box_iou
from jaxdet.ops.boxes import clip_boxes as clip_boxes
from jaxdet.ops.boxes import cxcywh_to_xyxy as cxcywh_to_xyxy
from jaxdet.ops.boxes import xyxy_to_cxcywh as xyxy_to_cxcywh
from jaxdet.ops.boxes import xyxy_to_yxyx as xyxy_to_yxyx
from jaxdet.ops.boxes import yxyx_to_xyxy as yxyx_to_xyxy
from jaxdet.ops.matcher import BELOW_LOW_THRESHOLD as BELOW_LOW_THRESHOLD
from jaxdet.ops.matcher import BETWEEN_THRESHOLDS as BETWEEN_THRESHOLDS
from jaxdet.ops.matcher import match as match
from jaxdet.ops.matcher import matches_to_labels as matches_to_labels
from jaxdet.ops.nms import batched_nms as batched_nms
from jaxdet.ops.nms import nms as nms
from jaxdet.ops.sampler import sample_balanced as sample_balanced

# --- RoIAlign, RoIPool, masks, keypoint heatmaps ---
# isort: split
from jaxdet.ops.keypoints import heatmaps_to_keypoints as heatmaps_to_keypoints
from jaxdet.ops.keypoints import (
    heatmaps_to_keypoints_local_mean as heatmaps_to_keypoints_local_mean,
)
from jaxdet.ops.keypoints import keypoints_to_bilinear_heatmap as keypoints_to_bilinear_heatmap
from jaxdet.ops.keypoints import keypoints_to_heatmap as keypoints_to_heatmap
from jaxdet.ops.masks import crop_and_resize_masks as crop_and_resize_masks
from jaxdet.ops.masks import paste_mask_probs as paste_mask_probs
from jaxdet.ops.masks import paste_masks as paste_masks
from jaxdet.ops.roi_align import fpn_levels as fpn_levels
from jaxdet.ops.roi_align import multilevel_roi_align as multilevel_roi_align
from jaxdet.ops.roi_align import roi_align as roi_align
from jaxdet.ops.roi_pool import roi_pool as roi_pool
