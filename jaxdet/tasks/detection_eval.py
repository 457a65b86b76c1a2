"""COCO evaluation of detections on the host (box AP, mask AP, keypoint AP, RPN recall).

:class:`DetectionEvaluator` is the :class:`jaxdet.core.HostEvaluator` of the detection task:
it takes padded batches and the detector's per-example outputs, maps both to the original
image size and scores them with pycocotools (:mod:`jaxdet.metrics.coco_eval`).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdet import ops
from jaxdet.detection import faster_rcnn
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
    """Host-side COCO evaluation of the detection task: box AP and ``AR100@0.5``.

    a mask branch: also mask AP (``mask_AP`` ...), ``[K, 28, 28]`` probabilities pasted at the
    original size (``> 0.5``) against the source's full-resolution gt masks (by ``index``).
    a keypoint branch: also keypoint AP (``kp_AP`` ...) of person detections against
    ``gt_keypoints`` (OKS with COCO's 17 sigmas). With masks or keypoints the gt ``area`` is the
    source's ``objects/area`` (OKS scale and size ranges, as COCO); the box-only path reads no
    source and uses box areas.
    """

    def __init__(self, model_config: Mapping[str, Any], class_names: Sequence[str],
                 gt_source: Any = None, dataset_ids: Mapping[str, Sequence[Any]] | None = None):
        """``model_config``: ``config.model`` (its ``mask`` and ``keypoint``
        sections); ``gt_source``: the evaluated split's source by ``index``, required
        (else ValueError) with a mask or keypoint head; ``dataset_ids``: the split's own ids for
        the results files (:func:`in_dataset_ids`).
        """
        self.dataset_ids = dict(dataset_ids or {})
        self.with_masks = "mask" in model_config
        self.with_keypoints = "keypoint" in model_config
        self.coco = coco_eval.CocoEvaluator(
            list(class_names), with_masks=self.with_masks,
            with_keypoints=self.with_keypoints,
            keypoint_class=faster_rcnn.keypoint_class(model_config))
        if (self.with_masks or self.with_keypoints) and gt_source is None:
            raise ValueError("DetectionEvaluator: a mask or keypoint head needs gt_source")
        self.gt_source = gt_source
        self.recall_hit = 0
        self.recall_total = 0

    def _add_with_masks(self, batch, outputs, mask, scale, rows, crowd) -> None:
        """Per image: gt masks and areas from the source (``orig_objects`` if present), detections'
        masks pasted, gt keypoints from the batch.
        """
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
        """One padded batch (:mod:`jaxdet.tasks.detection` fields) and its ``predict`` outputs;
        gt is mapped to the original size like the detections; ``gt_iscrowd`` rows are
        ``iscrowd=1``.
        """
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
        """Write the COCO results JSON (plus ``coco_results_segm.json`` / ``_keypoints.json`` with
        masks / keypoints); returns the box results' path.
        """
        files = {"bbox": RESULTS_FILE}
        if self.with_masks:
            files["segm"] = SEGM_RESULTS_FILE
        if self.with_keypoints:
            files["keypoints"] = KEYPOINT_RESULTS_FILE
        for iou_type, name in files.items():
            records = in_dataset_ids(self.coco.results_json(iou_type), self.dataset_ids,
                                     self.coco.class_names)
            with open(os.path.join(directory, name), "w") as f:
                json.dump(records, f)
        return os.path.join(directory, RESULTS_FILE)


def in_dataset_ids(records: Sequence[Mapping[str, Any]], dataset_ids: Mapping[str, Sequence[Any]],
                   class_names: Sequence[str]) -> list[dict[str, Any]]:
    """COCO result records of :meth:`CocoEvaluator.results_json` (``image_id`` = example index,
    ``category_id`` = label + 1) in the dataset's own ids: ``image_id`` from
    ``dataset_ids["image_ids"]``, ``category_id`` from ``dataset_ids["category_ids"]`` (each
    where given, else unchanged); adds ``file_name`` (from ``dataset_ids["file_names"]``) and
    ``category_name``."""
    image_ids = dataset_ids.get("image_ids")
    file_names = dataset_ids.get("file_names")
    category_ids = dataset_ids.get("category_ids")
    out = []
    for record in records:
        index, label = int(record["image_id"]), int(record["category_id"]) - 1
        mapped = dict(record)
        if image_ids is not None:
            mapped["image_id"] = int(image_ids[index])
        if category_ids is not None:
            mapped["category_id"] = int(category_ids[label])
        if file_names is not None:
            mapped["file_name"] = str(file_names[index])
        mapped["category_name"] = str(class_names[label])
        out.append(mapped)
    return out
