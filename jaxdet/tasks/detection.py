"""Object detection on the synthetic scenes, evaluated with COCO box AP.

The detector is ``config.model.detector``: ``faster_rcnn`` (default), or the
earlier detectors on the same data and evaluation — ``fast_rcnn`` and ``rcnn`` on Selective
Search proposals (computed once per split and cached next to the dataset; the examples then
also carry ``proposals`` float32 ``[B, P, 4]`` and ``proposal_valid`` ``[B, P]``), and
``sliding_window``.

Batches (all static shapes; ``G = config.data.max_instances``):

* ``image`` uint8 ``[B, H, W, 3]`` (one padded size per config);
* ``gt_boxes`` float32 ``[B, G, 4]`` ``(x1, y1, x2, y2)`` absolute pixels of the network input,
  ``gt_labels`` int32 ``[B, G]`` (0-based object class), ``gt_valid`` bool ``[B, G]``;
* with COCO data (examples with ``objects/is_crowd``) also ``gt_iscrowd`` bool ``[B, G]``:
  crowd rows are not training targets (``gt_valid`` False) but are passed to pycocotools as
  ``iscrowd=1`` ground truth (detections on crowd regions are neither hits nor misses);
* ``image_hw`` int32 ``[B, 2]``: the image's ``(height, width)`` inside the padded input
  (the example's ``image_hw`` when it has one, :func:`jaxdet.data.augment.pad_to`; proposals
  and detections are clipped to it); ``orig_hw`` int32 ``[B, 2]``: the original
  image size, to which detections are mapped back for evaluation (the example's ``orig_hw``
  when it has one: real data through the resize chain of :mod:`jaxdet.data.sources` is
  evaluated at its original size, with the gt masks and areas of the example's
  ``orig_objects``; the synthetic scenes and images fitted by ``image_size`` alone at the
  input size, both equal);
* the pipeline's ``index`` and ``mask``;
* with ``config.model.mask_head`` (Mask R-CNN) also ``gt_masks`` uint8 ``[B, G, M, M]``,
  ``M = config.data.mask_crop_size`` (default 56): each instance's visible mask RoIAligned
  over its own gt box (:func:`jaxdet.detection.mask_head.crop_gt_masks`, soft values
  ``round(255 v)``), the memory-aware form (a COCO image's 100 instances at 56 x 56 are
  314 KB, not ``[100, 800, 1333]`` float32). Evaluation reads the full-resolution gt masks
  from the split's source by ``index``; the predicted ``[B, K, 28, 28]`` probabilities are
  pasted at the original size with :func:`jaxdet.ops.paste_masks` (``> 0.5``), RLE-encoded,
  and scored with pycocotools ``segm`` next to ``bbox`` (``mask_AP``, ``mask_AP50``, ...);
* with ``config.model.keypoint_head`` (Keypoint R-CNN, on scenes with stick-figure persons:
  ``config.data.person_fraction > 0``, class "person" last) also ``gt_keypoints`` float32
  ``[B, G, 17, 3]`` ``(x, y, v)`` absolute pixels of the network input (zeros for shapes).
  The person detections' ``keypoints`` ``[B, K, 17, 3]`` are scored with pycocotools
  ``keypoints`` (COCO's 17 sigmas; ``kp_AP``, ``kp_AP50``, ...) next to ``bbox``.

Loss: the detector's terms (Faster R-CNN: ``rpn_objectness``, ``rpn_box``, ``roi_classifier``,
``roi_box``; Mask R-CNN adds ``roi_mask``, Keypoint R-CNN ``roi_keypoint``), each with its
weight ``config.loss.<term>_weight`` (sweepable). Evaluation runs on the host: COCO AP / AP50 /
AP75 / AP small-medium-large / AR and per-class AP through pycocotools over every validation
image exactly once, plus the RPN's proposal recall ``AR100@0.5`` (fraction of gt boxes with
IoU >= 0.5 to one of the top 100 proposals); the detections are written as a COCO results JSON
(:mod:`jaxdet.tasks.detection_eval`).
"""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxdet import visualize
from jaxdet.core import LossOutput
from jaxdet.data import scenes, scenes_tfds, stick_figures
from jaxdet.detection import faster_rcnn, mask_head, roi_heads
from jaxdet.detection import rpn as rpn_lib
from jaxdet.tasks import detection_eval
from jaxdet.tasks.model_apply import model_input

PRIMARY_METRIC = "AP"
PRIMARY_METRIC_HIGHER_IS_BETTER = True
EVALUATES_ON_HOST = True
LOSS_TERMS = faster_rcnn.LOSS_TERMS  # of the default detector; see loss_terms(config)
#: ``config.model.detector`` values -> the module holding the detector. R-CNN and Fast R-CNN
#: classify given (Selective Search) proposals; Faster R-CNN learns its own; the sliding window
#: classifies a fixed window grid; YOLO and SSD predict boxes in one pass over a grid of cells.
#: Each module provides ``create_model(config, num_classes, bn_axis_name)`` and ``LOSS_TERMS``
#: (or ``loss_terms_for(config.model, num_classes)`` when config fields add terms); its model
#: follows :class:`~jaxdet.detection.faster_rcnn.FasterRCNN`'s apply contract.
DETECTORS = {
    "faster_rcnn": "jaxdet.detection.faster_rcnn",
    "fast_rcnn": "jaxdet.detection.fast_rcnn",
    "rcnn": "jaxdet.detection.rcnn",
    "sliding_window": "jaxdet.detection.sliding_window",
    "yolo": "jaxdet.detection.yolo",
    "ssd": "jaxdet.detection.ssd",
}
_NEEDS_PROPOSALS = ("fast_rcnn", "rcnn")


def detector_name(config: ml_collections.ConfigDict) -> str:
    name = config.model.get("detector", "faster_rcnn")
    if name not in DETECTORS:
        raise ValueError(f"config.model.detector={name!r}; expected one of {list(DETECTORS)}")
    return name


def _detector_module(config: ml_collections.ConfigDict):
    return importlib.import_module(DETECTORS[detector_name(config)])


def loss_terms(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The loss terms of ``config.model.detector`` (each weighted by ``config.loss.<t>_weight``)."""
    module = _detector_module(config)
    if hasattr(module, "loss_terms_for"):  # config fields add terms (e.g. a box head)
        return tuple(module.loss_terms_for(config.model, len(class_names(config))))
    return tuple(module.LOSS_TERMS)


def class_names(config: ml_collections.ConfigDict) -> list[str]:
    """The scenes' classes; "person" last when ``config.data.person_fraction > 0``."""
    if config.data.get("source", "scenes") != "scenes":  # real data: jaxdet.data.sources
        from jaxdet.data import sources

        return sources.detection_class_names(config)
    with_person = float(config.data.get("person_fraction", 0.0)) > 0
    return list(scenes.CLASS_NAMES) + ([scenes.PERSON] if with_person else [])


def loss_weights(config: ml_collections.ConfigDict) -> dict[str, float]:
    return {t: float(config.loss[f"{t}_weight"]) for t in loss_terms(config)}


def datasets(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """``{"train": source, "validation": source}`` of multi-object scenes, or of the real data
    of ``config.data.source`` (:mod:`jaxdet.data.sources`)."""
    if config.data.get("source", "scenes") != "scenes":  # COCO / VOC folders
        from jaxdet.data import sources

        return sources.detection_datasets(config)
    data = config.data
    if data.get("name", "scenes") != "scenes":  # e.g. configs/faster_rcnn_coco.py
        raise NotImplementedError(
            f"config.data.name={data.name!r}: the detection task loads only the synthetic "
            "scenes or config.data.source='coco' / 'voc' / 'tfds_coco' folders")
    builder = scenes_tfds.build_scenes(
        os.path.expanduser(data.data_dir), image_size=data.image_size,
        min_objects=data.min_objects, max_objects=data.max_objects, num_train=data.num_train,
        num_val=data.num_val, seed=data.seed,
        # object size range in px (0: the default range; COCO's min/max_size mean resizing)
        min_size=int(data.get("object_min_size", 0)),
        max_size=int(data.get("object_max_size", 0)),
        person_fraction=float(data.get("person_fraction", 0.0)),
    )
    sources = builder.as_data_source()
    splits = {"train": sources["train"], "validation": sources["validation"]}
    if detector_name(config) not in _NEEDS_PROPOSALS:
        return splits
    from jaxdet.data import proposals as proposals_lib

    p = config.proposals
    out = {}
    for split, source in splits.items():
        boxes, valid = proposals_lib.load_or_compute(
            source, split, os.fspath(builder.data_dir), max_proposals=int(p.max_proposals),
            mode=p.mode, min_size=float(p.min_size))
        out[split] = WithProposals(source, boxes, valid)
    return out


class WithProposals:
    """A random-access source whose examples also carry their cached region proposals:
    ``proposals`` float32 ``[P, 4]`` (x1, y1, x2, y2) absolute pixels, ``proposal_valid``
    bool ``[P]`` (example ``i`` gets row ``i``)."""

    def __init__(self, source, boxes: np.ndarray, valid: np.ndarray):
        if len(boxes) != len(source) or len(valid) != len(source):
            raise ValueError(f"{len(boxes)} proposal rows for a split of {len(source)} examples")
        self.source, self.boxes, self.valid = source, boxes, valid

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {**self.source[index], "proposals": self.boxes[index],
                "proposal_valid": self.valid[index]}


def make_preprocess(config: ml_collections.ConfigDict) -> Callable[[Mapping[str, Any]], dict]:
    """Raw scene example -> the batch fields of one example (module docstring), ``G`` padded.

    Raises ``ValueError`` naming the example and field for a malformed image, boxes that are
    not ``[N, 4]`` with ``x1 <= x2``, ``y1 <= y2`` inside the image, labels outside the class
    range, or more than ``G`` objects (the real-data sources keep at most ``G``, counting the
    excess: :class:`jaxdet.data.augment.InstanceLimit`).
    """
    max_instances = int(config.data.max_instances)
    num_classes = len(class_names(config))
    with_masks = bool(config.model.get("mask_head", False))
    crop_size = int(config.data.get("mask_crop_size", 56))
    with_keypoints = bool(config.model.get("keypoint_head", False))
    num_keypoints = int(config.model.get("num_keypoints", stick_figures.NUM_KEYPOINTS))

    def preprocess(example: Mapping[str, Any]) -> dict[str, np.ndarray]:
        where = f"detection example {example.get('image_id', '?')}"
        image = np.asarray(example["image"], np.uint8)
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"{where}: image must be [H, W, 3], got {image.shape}")
        boxes = np.asarray(example["objects"]["bbox"], np.float32).reshape(-1, 4)
        labels = np.asarray(example["objects"]["label"]).reshape(-1)
        h, w = image.shape[:2]
        n = len(boxes)
        if len(labels) != n:
            raise ValueError(f"{where}: {n} objects.bbox rows but {len(labels)} objects.label")
        if n > max_instances:
            raise ValueError(
                f"{where}: {n} objects, more than config.data.max_instances={max_instances}")
        bad = ~np.isfinite(boxes).all(1) | (boxes[:, 2] < boxes[:, 0]) | (
            boxes[:, 3] < boxes[:, 1]) | (boxes[:, :2] < 0).any(1) | (boxes[:, 2] > w) | (
            boxes[:, 3] > h)
        if bad.any():
            raise ValueError(f"{where}: objects.bbox {boxes[bad].tolist()} are not (x1, y1, x2, "
                             f"y2) absolute pixels inside the {h}x{w} image")
        if ((labels < 0) | (labels >= num_classes)).any():
            raise ValueError(f"{where}: objects.label {labels.tolist()} outside [0, {num_classes})")
        gt_boxes = np.zeros((max_instances, 4), np.float32)
        gt_labels = np.zeros((max_instances,), np.int32)
        gt_boxes[:n], gt_labels[:n] = boxes, labels
        hw = np.asarray(example.get("image_hw", (h, w)), np.int32)  # the image inside padding
        out = {"image": image, "gt_boxes": gt_boxes, "gt_labels": gt_labels,
               "gt_valid": np.arange(max_instances) < n, "image_hw": hw,
               "orig_hw": np.asarray(example.get("orig_hw", hw), np.int32)}
        if "is_crowd" in example["objects"]:  # COCO: not a target, iscrowd=1 in evaluation
            out["gt_iscrowd"] = np.zeros(max_instances, bool)
            out["gt_iscrowd"][:n] = np.asarray(example["objects"]["is_crowd"], bool).reshape(-1)
            out["gt_valid"] &= ~out["gt_iscrowd"]
        if with_masks:
            masks = np.asarray(example["objects"]["mask"], np.uint8).reshape(n, h, w)
            out["gt_masks"] = np.zeros((max_instances, crop_size, crop_size), np.uint8)
            out["gt_masks"][:n] = mask_head.crop_gt_masks(masks, boxes, crop_size)
        if with_keypoints:
            if "keypoints" not in example["objects"]:
                raise ValueError(f"{where}: keypoint_head needs objects.keypoints (scenes "
                                 "built with config.data.person_fraction > 0)")
            out["gt_keypoints"] = np.zeros((max_instances, num_keypoints, 3), np.float32)
            out["gt_keypoints"][:n] = np.asarray(
                example["objects"]["keypoints"], np.float32).reshape(n, num_keypoints, 3)
        if "proposals" in example:
            out["proposals"] = np.asarray(example["proposals"], np.float32)
            out["proposal_valid"] = np.asarray(example["proposal_valid"], bool)
        return out

    return preprocess


def create_model(config: ml_collections.ConfigDict, bn_axis_name: str | None) -> nn.Module:
    """The detector ``config.model.detector`` (default Faster R-CNN)."""
    return _detector_module(config).create_model(config, len(class_names(config)), bn_axis_name)


def _proposal_inputs(batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    if "proposals" not in batch:
        return {}
    return {"proposals": batch["proposals"], "proposal_valid": batch["proposal_valid"]}


def init_variables(model: nn.Module, rng: jax.Array, batch: Mapping[str, jax.Array]):
    """Initial variables from a batch (the detectors on given proposals need them)."""
    return model.init(rng, model_input(batch), batch["image_hw"], train=False,
                      **_proposal_inputs(batch))


def _variables(params, batch_stats) -> dict[str, Any]:
    return {"params": params, **({"batch_stats": batch_stats} if batch_stats else {})}


def _targets(batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    real = batch["mask"] > 0
    out = {"gt_boxes": batch["gt_boxes"], "gt_labels": batch["gt_labels"],
           "gt_valid": batch["gt_valid"] & real[:, None], "example_mask": batch["mask"]}
    if "gt_masks" in batch:
        out["gt_masks"] = batch["gt_masks"]
    if "gt_keypoints" in batch:
        out["gt_keypoints"] = batch["gt_keypoints"]
    return out


def make_loss_fn(model: nn.Module, config: ml_collections.ConfigDict):
    """``(params, batch_stats, batch, rng) -> LossOutput`` with the four loss terms.

    Anchor and RoI sampling use one key per image, ``fold_in(rng, index)``, so a step does not
    depend on how the batch is split over devices. Metrics: ``proposal_recall`` (gt boxes with
    IoU >= 0.5 to one of the top proposals) and ``fg_rois_per_image``.
    """
    del config

    def loss_fn(params, batch_stats, batch, rng):
        keys = jax.vmap(lambda i: jax.random.fold_in(rng, i))(batch["index"])
        kwargs = dict(train=True, targets=_targets(batch), rng=keys, **_proposal_inputs(batch))
        variables = _variables(params, batch_stats)
        if batch_stats:
            out, updates = model.apply(variables, model_input(batch), batch["image_hw"],
                                       mutable=["batch_stats"], **kwargs)
            batch_stats = updates["batch_stats"]
        else:
            out = model.apply(variables, model_input(batch), batch["image_hw"], **kwargs)
        return LossOutput(
            terms=out["terms"],
            metrics={"proposal_recall": out["recall"],
                     "fg_rois_per_image": out["num_foreground_rois"]},
            batch_stats=batch_stats,
        )

    return loss_fn


def predict(model: nn.Module, params, batch_stats, batch: Mapping[str, jax.Array],
            recall_top_n: int = 100) -> dict[str, jax.Array]:
    """Per-example detections in original-image pixels and proposal-recall counts.

    Returns ``boxes`` ``[B, K, 4]`` float32 ``(x1, y1, x2, y2)`` of the ``orig_hw`` image,
    ``scores`` ``[B, K]``, ``classes`` ``[B, K]`` int32 (0-based), ``valid`` ``[B, K]`` and
    ``recall_hit`` / ``recall_total`` ``[B]`` int32 (gt boxes covered at IoU 0.5 by the top
    ``recall_top_n`` proposals / valid gt boxes); Mask R-CNN adds ``masks`` ``[B, K, 28, 28]``
    float32 probabilities of each detection's class inside its box; Keypoint R-CNN adds
    ``keypoints`` ``[B, K, 17, 3]`` float32 ``(x, y, score)`` in ``orig_hw`` pixels (zeros for
    detections that are not persons).
    """
    out = model.apply(_variables(params, batch_stats), model_input(batch), batch["image_hw"],
                      train=False, **_proposal_inputs(batch))
    boxes = jax.vmap(roi_heads.rescale_boxes)(out["boxes"], batch["image_hw"], batch["orig_hw"])
    targets = _targets(batch)
    hit, total = jax.vmap(rpn_lib.proposal_recall)(
        out["proposals"][:, :recall_top_n], out["proposal_valid"][:, :recall_top_n],
        targets["gt_boxes"], targets["gt_valid"])
    result = {"boxes": boxes, "scores": out["scores"], "classes": out["classes"],
              "valid": out["valid"], "recall_hit": hit, "recall_total": total}
    if "masks" in out:
        result["masks"] = out["masks"]
    if "keypoints" in out:
        scale = (batch["orig_hw"].astype(jnp.float32)
                 / jnp.maximum(batch["image_hw"].astype(jnp.float32), 1.0))[:, None, None, ::-1]
        kp = out["keypoints"]
        result["keypoints"] = jnp.concatenate([kp[..., :2] * scale, kp[..., 2:]], axis=-1)
        result["keypoint_scores"] = out["keypoint_scores"]
    return result


def make_predict_fn(model: nn.Module, config: ml_collections.ConfigDict):
    """``(params, batch_stats, batch) -> per-example outputs`` (see :func:`predict`)."""
    return functools.partial(predict, model,
                             recall_top_n=int(config.model.get("recall_top_n", 100)))


def host_evaluator(config: ml_collections.ConfigDict) -> detection_eval.DetectionEvaluator:
    """COCO evaluation of the ``config.eval_split`` detections (ground-truth masks and areas
    read from its source when the model has a mask or keypoint head)."""
    needs_source = config.model.get("mask_head", False) or config.model.get("keypoint_head",
                                                                             False)
    source = datasets(config)[config.get("eval_split", "validation")] if needs_source else None
    return detection_eval.DetectionEvaluator(config.model, class_names(config), source)


def draw_predictions(
    model: nn.Module, params, batch_stats, batch: Mapping[str, np.ndarray], config
) -> list:
    """One picture per example: ground truth (green) and detections scoring >= 0.5 (red);
    Mask R-CNN's masks of those detections are drawn translucent in per-class colours,
    Keypoint R-CNN's skeletons of those person detections as lines and dots."""
    fn = jax.jit(make_predict_fn(model, config))
    out = jax.device_get(fn(params, batch_stats, {k: jnp.asarray(v) for k, v in batch.items()}))
    names = class_names(config)
    threshold = float(config.get("draw_score_threshold", 0.5))
    pictures = []
    for i in range(len(batch["image"])):
        if not batch["mask"][i]:
            continue
        gt = [(b, names[int(c)]) for b, c, v in zip(
            batch["gt_boxes"][i], batch["gt_labels"][i], batch["gt_valid"][i], strict=True) if v]
        pred = [(b, f"{names[int(c)]} {s:.2f}") for b, c, s, v in zip(
            out["boxes"][i], out["classes"][i], out["scores"][i], out["valid"][i], strict=True)
            if v and s >= threshold]
        image = batch["image"][i]
        if "masks" in out:
            keep = out["valid"][i] & (out["scores"][i] >= threshold)
            h, w = image.shape[:2]
            pasted = np.asarray(detection_eval.paste_binary_masks(
                jnp.asarray(out["masks"][i]), jnp.asarray(out["boxes"][i]), h, w))
            image = visualize.overlay_masks(image, pasted[keep], out["classes"][i][keep] + 1)
        if "keypoints" in out:
            keep = out["valid"][i] & (out["scores"][i] >= threshold) & (
                out["classes"][i] == int(config.model.get("keypoint_class", 0)))
            image = visualize.draw_skeletons(image, out["keypoints"][i][keep],
                                             stick_figures.SKELETON)
        pictures.append(visualize.boxes_panel(image, gt=gt, pred=pred))
    return pictures
