"""COCO evaluation of detections on the host (box AP, mask AP, keypoint AP, RPN recall).

:class:`DetectionEvaluator` is the :class:`jaxdet.core.HostEvaluator` of the detection task:
it takes padded batches and the detector's per-example outputs, maps both to the original
image size and scores them with pycocotools (:mod:`jaxdet.metrics.coco_eval`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdet import ops
from jaxdet.metrics import coco_eval

RESULTS_FILE = "coco_results.json"
SEGM_RESULTS_FILE = "coco_results_segm.json"
KEYPOINT_RESULTS_FILE = "coco_results_keypoints.json"


@functools.partial(jax.jit, static_argnames=("height", "width"))
def paste_binary_masks(masks: jax.Array, boxes: jax.Array, height: int, width: int) -> jax.Array:
    """``[K, M, M]`` mask probabilities in their ``[K, 4]`` boxes -> ``[K, height, width]``
    bool masks of the image (:func:`jaxdet.ops.paste_masks`, ``> 0.5``)."""
    return ops.paste_masks(masks, boxes, height, width, threshold=0.5)


class DetectionEvaluator:
    """Host-side evaluation: COCO box AP of the detections plus the RPN's AR100@0.5; with
    ``config.model.mask_head`` also COCO mask AP (``mask_AP``, ...): the ``[K, 28, 28]``
    probabilities are pasted at the original image size (:func:`jaxdet.ops.paste_masks`,
    ``> 0.5``) and compared with the full-resolution gt masks of the ``config.eval_split``
    source, read by example ``index``; with ``config.model.keypoint_head`` also COCO keypoint
    AP (``kp_AP``, ...) of the person detections against the batch's ``gt_keypoints`` (OKS
    with COCO's 17 sigmas; scale ``s² =`` the gt ``area`` as in COCO). With masks or keypoints
    the gt ``area`` is COCO's, the segment area (the source's ``objects/area``, for the scenes
    the visible mask's pixel count, read by ``index``): it sets the OKS scale and the small /
    medium / large ranges of every AP, as in COCO; the box-only path reads no source and uses
    the boxes' areas for those ranges (the headline APs do not depend on areas)."""

    def __init__(self, model_config: Mapping[str, Any], class_names: Sequence[str],
                 gt_source: Any = None):
        """``model_config``: ``config.model`` (``mask_head``, ``keypoint_head``,
        ``keypoint_class``); ``gt_source``: the evaluated split's source (random access by
        ``index``), required with a mask or keypoint head."""
        self.with_masks = bool(model_config.get("mask_head", False))
        self.with_keypoints = bool(model_config.get("keypoint_head", False))
        self.coco = coco_eval.CocoEvaluator(
            list(class_names), with_masks=self.with_masks,
            with_keypoints=self.with_keypoints,
            keypoint_class=int(model_config.get("keypoint_class", 0)))
        if (self.with_masks or self.with_keypoints) and gt_source is None:
            raise ValueError("DetectionEvaluator: a mask or keypoint head needs gt_source")
        self.gt_source = gt_source
        self.recall_hit = 0
        self.recall_total = 0

    def _add_with_masks(self, batch, outputs, mask, scale, rows, crowd) -> None:
        """Per image: gt masks from the source, detections' masks pasted and thresholded;
        gt keypoints from the batch; the gt areas (OKS scale, small / medium / large ranges)
        from the source's ``objects/area`` where it has one (box areas otherwise)."""
        gt_boxes = np.asarray(batch["gt_boxes"]) * scale
        for i in np.flatnonzero(mask):
            index = int(batch["index"][i])
            h, w = (int(v) for v in np.asarray(batch["orig_hw"])[i])
            gt_masks = det_masks = gt_kps = areas = None
            example = self.gt_source[index]  # original-size annotations where it has them
            objects = example.get("orig_objects", example["objects"])
            n = int(np.sum(rows[i]))  # the source's first n objects (crowds included)
            if self.with_masks:
                gt = np.asarray(objects["mask"], np.uint8)
                gt_masks = np.zeros((len(gt_boxes[i]), h, w), np.uint8)
                gt_masks[:n] = gt.reshape(gt.shape[:3])[:n, :h, :w]  # padding cut off
                det_masks = np.asarray(paste_binary_masks(jnp.asarray(outputs["masks"][i]),
                                              jnp.asarray(outputs["boxes"][i]), h, w))
            if self.with_keypoints:
                gt_kps = np.asarray(batch["gt_keypoints"][i], np.float32).copy()
                gt_kps[..., :2] *= scale[i, 0, :2]
            if "area" in objects:  # COCO's gt area: the segment area (OKS scale, size ranges)
                areas = np.zeros(len(gt_boxes[i]), np.float64)
                areas[:n] = np.asarray(objects["area"], np.float64).reshape(-1)[:n]
            self.coco.add_ground_truth(index, gt_boxes[i], batch["gt_labels"][i],
                                       rows[i], h, w, areas=areas, iscrowd=crowd[i],
                                       masks=gt_masks, keypoints=gt_kps)
            self.coco.add_detections(
                index, outputs["boxes"][i], outputs["scores"][i], outputs["classes"][i],
                outputs["valid"][i], masks=det_masks,
                keypoints=outputs["keypoints"][i] if self.with_keypoints else None,
                keypoint_scores=(outputs["keypoint_scores"][i] if self.with_keypoints
                                 and "keypoint_scores" in outputs else None))

    def add(self, batch: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]) -> None:
        """One padded batch (:mod:`jaxdet.tasks.detection`'s fields) and the outputs of its
        ``predict``.
        Ground truth is mapped to the original image size like the detections; crowd rows
        (``gt_iscrowd``, COCO) are passed as ``iscrowd=1`` ground truth."""
        mask = np.asarray(batch["mask"]) > 0
        crowd = np.asarray(batch.get("gt_iscrowd", np.zeros_like(batch["gt_valid"])), bool)
        rows = np.asarray(batch["gt_valid"], bool) | crowd
        scale = (np.asarray(batch["orig_hw"], np.float32)
                 / np.maximum(np.asarray(batch["image_hw"], np.float32), 1))[:, None, [1, 0, 1, 0]]
        if self.with_masks or self.with_keypoints:
            self._add_with_masks(batch, outputs, mask, scale, rows, crowd)
        else:
            self.coco.add_batch(
                np.asarray(batch["index"]), example_mask=mask,
                gt_boxes=np.asarray(batch["gt_boxes"]) * scale, gt_labels=batch["gt_labels"],
                gt_valid=rows, gt_iscrowd=crowd, heights=np.asarray(batch["orig_hw"])[:, 0],
                widths=np.asarray(batch["orig_hw"])[:, 1], det_boxes=outputs["boxes"],
                det_scores=outputs["scores"], det_labels=outputs["classes"],
                det_valid=outputs["valid"])
        self.recall_hit += int(np.sum(np.asarray(outputs["recall_hit"])[mask]))
        self.recall_total += int(np.sum(np.asarray(outputs["recall_total"])[mask]))

    def summarize(self) -> dict[str, float]:
        out = self.coco.summarize()
        out["AR100@0.5"] = self.recall_hit / max(self.recall_total, 1)
        out["num_images"] = float(self.coco.num_images)
        return out

    def write(self, directory: str) -> str:
        """Writes the detections as a COCO results JSON (with masks also the ``segm`` results
        next to it, ``coco_results_segm.json``); returns the box results' path."""
        path = os.path.join(directory, RESULTS_FILE)
        self.coco.write_results(path)
        if self.with_masks:
            self.coco.write_results(os.path.join(directory, SEGM_RESULTS_FILE), "segm")
        if self.with_keypoints:
            self.coco.write_results(os.path.join(directory, KEYPOINT_RESULTS_FILE), "keypoints")
        return path
