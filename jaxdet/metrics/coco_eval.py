"""COCO box, mask and keypoint AP through pycocotools, for padded static-shape detections.

:class:`CocoEvaluator` collects padded detections / ground truth on the host and runs
pycocotools' ``COCOeval`` (the reference numbers; its prints are swallowed): ``"bbox"``, plus
``"segm"`` with ``with_masks`` (binary masks stored as COCO RLE) and ``"keypoints"`` with
``with_keypoints`` (OKS with the 17 COCO sigmas by default, scale the gt ``areas``). Boxes are
``(x1, y1, x2, y2)`` in absolute pixels of the ORIGINAL image (undo any resize); labels are
0-based, written as COCO ``category_id = label + 1``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

# ``COCOeval.stats`` indices -> summary keys (the first 9 of its 12 entries).
STAT_KEYS = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR1", "AR10", "AR100")
#: ``COCOeval.stats`` of ``iouType="keypoints"`` (20 detections per image, no small range).
KEYPOINT_STAT_KEYS = ("AP", "AP50", "AP75", "AP_medium", "AP_large", "AR", "AR50", "AR75",
                      "AR_medium", "AR_large")
#: pycocotools' OKS sigmas of the 17 COCO person keypoints, in COCO order.
COCO_KEYPOINT_SIGMAS = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07,
                                 1.07, .87, .87, .89, .89]) / 10.0


@dataclass(frozen=True)
class _GroundTruth:
    boxes: np.ndarray  # [G, 4] float64 (x1, y1, x2, y2), valid rows only
    labels: np.ndarray  # [G] int64, 0-based
    areas: np.ndarray  # [G] float64
    iscrowd: np.ndarray  # [G] bool
    height: int
    width: int
    rles: list[dict[str, Any]] | None = None  # [G] COCO RLE (counts as str), valid rows only
    keypoints: np.ndarray | None = None  # [G, K, 3] float64 (x, y, v), valid rows only


@dataclass(frozen=True)
class _Detections:
    boxes: np.ndarray  # [D, 4] float64 (x1, y1, x2, y2), valid rows only
    scores: np.ndarray  # [D] float64
    labels: np.ndarray  # [D] int64, 0-based
    rles: list[dict[str, Any]] | None = None  # [D] COCO RLE (counts as str), valid rows only
    keypoints: np.ndarray | None = None  # [D, K, 3] float64 (x, y, score), valid rows only
    keypoint_scores: np.ndarray | None = None  # [D] float64 scores of the keypoint results


def _rles(masks: npt.ArrayLike, keep: np.ndarray, height: int, width: int, what: str
          ) -> list[dict[str, Any]]:
    """``[N, H, W]`` binary masks -> COCO RLEs (``counts`` a str) of the ``keep`` rows."""
    m = np.asarray(masks)
    if m.shape != (len(keep), height, width):
        raise ValueError(f"{what}: masks must be [{len(keep)}, {height}, {width}] (one per row, "
                         f"image size), got {m.shape}")
    m = np.asfortranarray((m[keep] > 0).astype(np.uint8).transpose(1, 2, 0))
    if m.shape[-1] == 0:
        return []
    rles = mask_utils.encode(m)
    return [{"size": r["size"], "counts": r["counts"].decode("ascii")} for r in rles]


def _rows(valid: npt.ArrayLike, n: int, what: str) -> np.ndarray:
    mask = np.asarray(valid).astype(bool).reshape(-1)
    if mask.shape != (n,):
        raise ValueError(f"{what}: valid has {mask.size} entries for {n} rows")
    return mask


def _boxes(boxes: npt.ArrayLike, what: str) -> np.ndarray:
    out = np.asarray(boxes, np.float64)
    if out.ndim != 2 or out.shape[1] != 4:
        raise ValueError(f"{what}: boxes must be [N, 4] (x1, y1, x2, y2), got {out.shape}")
    return out


def _check_labels(labels: np.ndarray, num_classes: int, what: str) -> None:
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        raise ValueError(f"{what}: labels {sorted(set(labels[bad].tolist()))} outside "
                         f"[0, {num_classes})")


def _xywh(boxes: np.ndarray) -> np.ndarray:
    """``[N, 4]`` ``(x1, y1, x2, y2)`` -> ``[N, 4]`` ``(x, y, w, h)``."""
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def _quiet(fn: Callable[..., Any], *args: Any) -> Any:
    """Calls ``fn(*args)`` with stdout redirected away (pycocotools prints progress)."""
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args)


class CocoEvaluator:
    """Collects ground truth and detections image by image; evaluates COCO AP at the end.

    Each image is added once with :meth:`add_ground_truth` (registering it, even without boxes)
    and at most once with :meth:`add_detections` (never: no detections); :meth:`add_batch` does
    both for a padded batch. Adding either twice raises ValueError. With ``with_masks`` /
    ``with_keypoints`` every call must pass the masks / keypoints.
    """

    def __init__(self, class_names: Sequence[str], with_masks: bool = False,
                 with_keypoints: bool = False, keypoint_class: int = 0,
                 keypoint_sigmas: npt.ArrayLike | None = None) -> None:
        """``class_names[k]`` (unique) names label ``k``, COCO ``category_id`` ``k + 1``.

        ``with_masks``: also evaluate mask AP (``segm``); ``with_keypoints``: also keypoint AP of
        class ``keypoint_class`` with OKS ``keypoint_sigmas`` (default the 17 COCO ones).
        """
        names = [str(name) for name in class_names]
        if not names:
            raise ValueError("CocoEvaluator needs at least one class name")
        if len(set(names)) != len(names):
            raise ValueError(f"class names must be unique, got {names}")
        self.class_names: tuple[str, ...] = tuple(names)
        self.with_masks = bool(with_masks)
        self.with_keypoints = bool(with_keypoints)
        self.keypoint_class = int(keypoint_class)
        self.keypoint_sigmas = np.asarray(
            COCO_KEYPOINT_SIGMAS if keypoint_sigmas is None else keypoint_sigmas, np.float64)
        if self.with_keypoints and not 0 <= self.keypoint_class < len(names):
            raise ValueError(f"keypoint_class {keypoint_class} outside [0, {len(names)})")
        self._gt: dict[int, _GroundTruth] = {}
        self._dets: dict[int, _Detections] = {}

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_images(self) -> int:
        """Images registered through :meth:`add_ground_truth`."""
        return len(self._gt)

    def add_ground_truth(
        self,
        image_id: int,
        boxes: npt.ArrayLike,
        labels: npt.ArrayLike,
        valid: npt.ArrayLike,
        height: int,
        width: int,
        areas: npt.ArrayLike | None = None,
        iscrowd: npt.ArrayLike | None = None,
        masks: npt.ArrayLike | None = None,
        keypoints: npt.ArrayLike | None = None,
    ) -> None:
        """Registers one image and its ground truth (``image_id`` unique across the split).

        ``boxes``: ``[G, 4]`` ``(x1, y1, x2, y2)``, original-image pixels, ``x2 >= x1``,
        ``y2 >= y1``; ``labels``: ``[G]`` int, 0-based; ``valid``: ``[G]`` bool, False on padding
        (values ignored); ``height``, ``width``: original image size; ``areas``: optional ``[G]``
        for COCO's area ranges (default: box area); ``iscrowd``: optional ``[G]`` bool (crowd boxes
        are neither hits nor misses); ``masks``: ``[G, height, width]`` binary; ``keypoints``:
        ``[G, K, 3]`` ``(x, y, v)``, ``v > 0`` labelled (other classes ``v = 0``). Masks and
        keypoints are given exactly when the evaluator was built with them.
        """
        image_id = int(image_id)
        if image_id in self._gt:
            raise ValueError(f"ground truth for image_id {image_id} was already added")
        what = f"ground truth of image {image_id}"
        boxes = _boxes(boxes, what)
        keep = _rows(valid, len(boxes), what)
        labels = np.asarray(labels).astype(np.int64).reshape(-1)[keep]
        boxes = boxes[keep]
        if not np.isfinite(boxes).all():
            raise ValueError(f"{what}: non-finite valid box")
        if (boxes[:, 2:] < boxes[:, :2]).any():
            raise ValueError(f"{what}: box with x2 < x1 or y2 < y1")
        _check_labels(labels, self.num_classes, what)
        if areas is None:
            area = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
        else:
            area = np.asarray(areas, np.float64).reshape(-1)[keep]
        crowd = (np.zeros(len(boxes), bool) if iscrowd is None
                 else np.asarray(iscrowd).astype(bool).reshape(-1)[keep])
        rles = self._masks_arg(masks, keep, int(height), int(width), what)
        kps = self._keypoints_arg(keypoints, keep, what)
        self._gt[image_id] = _GroundTruth(boxes, labels, area, crowd, int(height), int(width),
                                          rles, kps)

    def _keypoints_arg(self, keypoints: npt.ArrayLike | None, keep: np.ndarray, what: str
                       ) -> np.ndarray | None:
        if (keypoints is None) == self.with_keypoints:
            raise ValueError(f"{what}: keypoints are "
                             f"{'required' if self.with_keypoints else 'not taken'}"
                             f" (CocoEvaluator(with_keypoints={self.with_keypoints}))")
        if keypoints is None:
            return None
        kp = np.asarray(keypoints, np.float64)
        k = len(self.keypoint_sigmas)
        if kp.shape != (len(keep), k, 3):
            raise ValueError(f"{what}: keypoints must be [{len(keep)}, {k}, 3], got {kp.shape}")
        return kp[keep]

    def _masks_arg(self, masks: npt.ArrayLike | None, keep: np.ndarray, height: int,
                   width: int, what: str) -> list[dict[str, Any]] | None:
        if (masks is None) == self.with_masks:
            raise ValueError(f"{what}: masks are {'required' if self.with_masks else 'not taken'}"
                             f" (CocoEvaluator(with_masks={self.with_masks}))")
        return None if masks is None else _rles(masks, keep, height, width, what)

    def add_detections(
        self,
        image_id: int,
        boxes: npt.ArrayLike,
        scores: npt.ArrayLike,
        labels: npt.ArrayLike,
        valid: npt.ArrayLike,
        masks: npt.ArrayLike | None = None,
        keypoints: npt.ArrayLike | None = None,
        keypoint_scores: npt.ArrayLike | None = None,
    ) -> None:
        """Adds one image's detections (its ground truth may come before or after).

        ``boxes``: ``[D, 4]`` ``(x1, y1, x2, y2)``, original-image pixels (``x2 < x1``, ``y`` alike,
        clipped to zero width: hits nothing); ``scores``: ``[D]`` (COCOeval keeps the 100 best per
        image and class); ``labels``, ``valid``: as ground truth; ``masks``: ``[D, H, W]`` binary;
        ``keypoints``: ``[D, K, 3]`` ``(x, y, score)``, read for ``keypoint_class`` only (masks and
        keypoints exactly when built with them); ``keypoint_scores``: optional ``[D]`` (default
        ``scores``).
        """
        image_id = int(image_id)
        if image_id in self._dets:
            raise ValueError(f"detections for image_id {image_id} were already added")
        what = f"detections of image {image_id}"
        boxes = _boxes(boxes, what)
        keep = _rows(valid, len(boxes), what)
        boxes = boxes[keep]
        scores = np.asarray(scores, np.float64).reshape(-1)[keep]
        labels = np.asarray(labels).astype(np.int64).reshape(-1)[keep]
        if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
            raise ValueError(f"{what}: non-finite valid box or score")
        _check_labels(labels, self.num_classes, what)
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2])
        shape = np.shape(masks) if masks is not None else (0, 0, 0)
        rles = self._masks_arg(masks, keep, *(shape[1:3] if len(shape) == 3 else (-1, -1)),
                               what)
        kps = self._keypoints_arg(keypoints, keep, what)
        kp_scores = None
        if keypoint_scores is not None:
            if not self.with_keypoints:
                raise ValueError(f"{what}: keypoint_scores given but with_keypoints=False")
            kp_scores = np.asarray(keypoint_scores, np.float64).reshape(-1)
            if kp_scores.shape != keep.shape:
                raise ValueError(f"{what}: keypoint_scores has {kp_scores.shape[0]} rows, "
                                 f"expected {keep.shape[0]} (one per detection)")
            kp_scores = kp_scores[keep]
            if not np.isfinite(kp_scores).all():
                raise ValueError(f"{what}: non-finite valid keypoint score")
        self._dets[image_id] = _Detections(boxes, scores, labels, rles, kps, kp_scores)

    def add_batch(
        self,
        image_ids: npt.ArrayLike,
        *,
        example_mask: npt.ArrayLike,
        gt_boxes: npt.ArrayLike,
        gt_labels: npt.ArrayLike,
        gt_valid: npt.ArrayLike,
        heights: npt.ArrayLike,
        widths: npt.ArrayLike,
        det_boxes: npt.ArrayLike,
        det_scores: npt.ArrayLike,
        det_labels: npt.ArrayLike,
        det_valid: npt.ArrayLike,
        gt_areas: npt.ArrayLike | None = None,
        gt_iscrowd: npt.ArrayLike | None = None,
        gt_masks: npt.ArrayLike | None = None,
        det_masks: npt.ArrayLike | None = None,
        gt_keypoints: npt.ArrayLike | None = None,
        det_keypoints: npt.ArrayLike | None = None,
    ) -> None:
        """Adds a padded batch: :meth:`add_ground_truth` + :meth:`add_detections` per example.

        ``image_ids``, ``heights``, ``widths``: ``[B]``; ``example_mask``: ``[B]``, False examples
        are skipped entirely; ``gt_*`` ``[B, G, ...]`` and ``det_*`` ``[B, D, ...]`` as in those
        methods (masks ``[B, G|D, H, W]``, one image size per batch; keypoints ``[B, G|D, K, 3]``).
        """
        ids = np.asarray(image_ids).reshape(-1)
        mask = _rows(example_mask, len(ids), "add_batch example_mask")
        arrays = [np.asarray(a) for a in (gt_boxes, gt_labels, gt_valid, heights, widths,
                                          det_boxes, det_scores, det_labels, det_valid)]
        areas = None if gt_areas is None else np.asarray(gt_areas)
        crowd = None if gt_iscrowd is None else np.asarray(gt_iscrowd)
        for a in arrays + [x for x in (areas, crowd) if x is not None]:
            if a.shape[:1] != ids.shape:
                raise ValueError(f"add_batch: leading dim {a.shape[:1]} != batch {ids.shape}")
        gb, gl, gv, hs, ws, db, ds, dl, dv = arrays
        for i in np.flatnonzero(mask):
            self.add_ground_truth(
                int(ids[i]), gb[i], gl[i], gv[i], int(hs[i]), int(ws[i]),
                areas=None if areas is None else areas[i],
                iscrowd=None if crowd is None else crowd[i],
                masks=None if gt_masks is None else gt_masks[i],
                keypoints=None if gt_keypoints is None else gt_keypoints[i],
            )
            self.add_detections(int(ids[i]), db[i], ds[i], dl[i], dv[i],
                                masks=None if det_masks is None else det_masks[i],
                                keypoints=None if det_keypoints is None else det_keypoints[i])

    def _check_iou_type(self, iou_type: str) -> None:
        if iou_type not in ("bbox", "segm", "keypoints") or (
                iou_type == "segm" and not self.with_masks) or (
                iou_type == "keypoints" and not self.with_keypoints):
            raise ValueError(f"iou_type={iou_type!r}; expected 'bbox' or, with masks, 'segm' "
                             "or, with keypoints, 'keypoints'")

    def results_json(self, iou_type: str = "bbox") -> list[dict[str, Any]]:
        """Detections in COCO results format, by image id then input order.

        ``{"image_id", "category_id": label + 1, "bbox": [x, y, w, h], "score"}``, plain Python
        numbers. ``"segm"``: ``"segmentation": {"size": [h, w], "counts": str}`` instead of
        ``bbox``; ``"keypoints"``: ``keypoint_class`` detections only, with ``"keypoints": [x1, y1,
        1, ...]`` instead of ``bbox`` and their ``keypoint_scores`` where given.
        """
        self._check_iou_type(iou_type)
        results = []
        for image_id in sorted(self._dets):
            det = self._dets[image_id]
            if iou_type == "keypoints":
                kp_scores = det.scores if det.keypoint_scores is None else det.keypoint_scores
                for kp, score, label in zip(det.keypoints, kp_scores.tolist(),
                                            det.labels.tolist(), strict=True):
                    if label != self.keypoint_class:
                        continue
                    flat = np.concatenate([kp[:, :2], np.ones((len(kp), 1))], axis=1)
                    results.append({"image_id": image_id, "category_id": label + 1,
                                    "keypoints": flat.reshape(-1).tolist(), "score": score})
                continue
            if iou_type == "segm":
                for rle, score, label in zip(det.rles, det.scores.tolist(),
                                             det.labels.tolist(), strict=True):
                    results.append({"image_id": image_id, "category_id": label + 1,
                                    "segmentation": dict(rle), "score": score})
                continue
            for box, score, label in zip(_xywh(det.boxes).tolist(), det.scores.tolist(),
                                         det.labels.tolist(), strict=True):
                results.append({"image_id": image_id, "category_id": label + 1,
                                "bbox": box, "score": score})
        return results

    def write_results(self, path: str | os.PathLike[str], iou_type: str = "bbox") -> None:
        """Writes :meth:`results_json` to ``path`` as JSON (loadable by ``COCO.loadRes``)."""
        with open(path, "w") as f:
            json.dump(self.results_json(iou_type), f)

    def ground_truth_dataset(self) -> dict[str, Any]:
        """The COCO ground-truth dict (``images``, ``annotations``, ``categories``).

        Annotation ids start at 1 (COCOeval treats id 0 as unmatched); ``bbox`` ``[x, y, w, h]``;
        with masks an RLE ``segmentation``; with keypoints ``keypoints`` ``[x1, y1, v1, ...]`` and
        ``num_keypoints``.
        """
        images, annotations = [], []
        for image_id in sorted(self._gt):
            gt = self._gt[image_id]
            images.append({"id": image_id, "height": gt.height, "width": gt.width})
            rles = gt.rles if gt.rles is not None else [None] * len(gt.boxes)
            for box, label, area, crowd, rle in zip(
                    _xywh(gt.boxes).tolist(), gt.labels.tolist(), gt.areas.tolist(),
                    gt.iscrowd.tolist(), rles, strict=True):
                annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                    "category_id": label + 1, "bbox": box, "area": area,
                                    "iscrowd": int(crowd)})
                if rle is not None:
                    annotations[-1]["segmentation"] = dict(rle)
            if gt.keypoints is not None:
                for ann, kp in zip(annotations[len(annotations) - len(gt.boxes):], gt.keypoints,
                                   strict=True):
                    ann["keypoints"] = kp.reshape(-1).tolist()
                    ann["num_keypoints"] = int(np.count_nonzero(kp[:, 2] > 0))
        categories = [{"id": k + 1, "name": name} for k, name in enumerate(self.class_names)]
        return {"images": images, "annotations": annotations, "categories": categories}

    def evaluate(self, iou_type: str = "bbox") -> COCOeval:
        """Runs ``COCOeval`` evaluate / accumulate / summarize silently for ``iou_type``.

        Without detections the results object is built directly (COCOeval then gives precision 0
        where there is ground truth). ValueError with no images, or with detections of an image
        without ground truth.
        """
        self._check_iou_type(iou_type)
        if not self._gt:
            raise ValueError("CocoEvaluator: no images added")
        unknown = sorted(set(self._dets) - set(self._gt))
        if unknown:
            raise ValueError(f"detections for image ids without ground truth: {unknown[:10]}")
        coco_gt = COCO()
        coco_gt.dataset = self.ground_truth_dataset()
        _quiet(coco_gt.createIndex)
        results = self.results_json(iou_type)
        if results:
            coco_dt = _quiet(coco_gt.loadRes, results)
        else:
            coco_dt = COCO()
            coco_dt.dataset = {"images": list(coco_gt.dataset["images"]),
                               "categories": list(coco_gt.dataset["categories"]),
                               "annotations": []}
            _quiet(coco_dt.createIndex)
        coco_eval = COCOeval(coco_gt, coco_dt, iou_type)
        if iou_type == "keypoints":
            coco_eval.params.catIds = [self.keypoint_class + 1]
            coco_eval.params.kpt_oks_sigmas = self.keypoint_sigmas
        _quiet(coco_eval.evaluate)
        _quiet(coco_eval.accumulate)
        _quiet(coco_eval.summarize)
        return coco_eval

    def summarize(self) -> dict[str, float]:
        """COCO metrics over every image added, fractions in [0, 1], never NaN.

        ``AP`` (IoU .50:.05:.95), ``AP50``, ``AP75``, ``AP_small`` / ``AP_medium`` /
        ``AP_large`` (gt area < 32², < 96², else), ``AR1`` / ``AR10`` / ``AR100`` (1 / 10 / 100
        detections per image and class) = ``COCOeval.stats[:9]``, and ``AP/<class name>`` (all
        areas, 100 detections); -1.0 where there is no ground truth to measure (such classes are
        left out of ``AP``). With masks the same keys prefixed ``mask_``; with keypoints ``kp_`` +
        :data:`KEYPOINT_STAT_KEYS` (OKS .50:.05:.95, 20 detections per image, ``keypoint_class``).
        """
        out = {}
        if self.with_keypoints:
            coco_eval = self.evaluate("keypoints")
            for key, value in zip(KEYPOINT_STAT_KEYS, coco_eval.stats, strict=False):
                out["kp_" + key] = float(value)
        for iou_type, prefix in (("bbox", ""), ("segm", "mask_")):
            if iou_type == "segm" and not self.with_masks:
                continue
            coco_eval = self.evaluate(iou_type)
            for key, value in zip(STAT_KEYS, coco_eval.stats, strict=False):
                out[prefix + key] = float(value)
            # precision: [T iou thresholds, R recall points, K classes, A area ranges, M max
            # dets], -1 where a class has no gt; area range 0 is "all", max-dets -1 is 100.
            precision = coco_eval.eval["precision"]
            for k, name in enumerate(self.class_names):
                p = precision[:, :, k, 0, -1]
                p = p[p > -1]
                out[f"{prefix}AP/{name}"] = float(p.mean()) if p.size else -1.0
        return out
