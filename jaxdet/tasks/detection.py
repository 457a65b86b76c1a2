"""Object detection on the synthetic scenes (or real data), evaluated with COCO box AP.

``config.model.detector`` (:data:`DETECTORS`): ``faster_rcnn`` (default), ``fast_rcnn`` /
``rcnn`` (cached Selective Search proposals: batches add ``proposals`` float32 ``[B, P, 4]``,
``proposal_valid`` ``[B, P]``), ``sliding_window``, ``yolo``, ``ssd``.

Batch (``G = config.data.max_instances``): ``image`` uint8 ``[B, H, W, 3]``; ``gt_boxes``
float32 ``[B, G, 4]`` ``(x1, y1, x2, y2)`` absolute input pixels, ``gt_labels`` int32 0-based,
``gt_valid`` bool; COCO: ``gt_iscrowd`` (not targets, ``iscrowd=1`` in evaluation);
``image_hw`` int32 ``[B, 2]`` (image inside the padding; outputs clipped to it); ``orig_hw``
int32 ``[B, 2]`` (evaluation size); ``index``, ``mask``; a mask branch: ``gt_masks`` uint8
``[B, G, M, M]`` (``M = config.data.mask_crop_size``, 56); a keypoint branch:
``gt_keypoints`` float32 ``[B, G, 17, 3]`` ``(x, y, v)`` input pixels.

Loss: the detector's terms weighted by ``config.loss.<term>_weight``. Evaluation
(:mod:`jaxdet.tasks.detection_eval`): COCO box AP family and per-class AP (plus ``mask_AP``
/ ``kp_AP`` with those heads) over each validation image once, ``AR100@0.5``, and a COCO
results JSON.
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
from jaxdet.core import ConfigError, LossOutput
from jaxdet.data import scenes, scenes_tfds, stick_figures
from jaxdet.detection import faster_rcnn, mask_head, roi_heads
from jaxdet.detection import rpn as rpn_lib
from jaxdet.tasks import detection_eval
from jaxdet.tasks.model_apply import model_input

PRIMARY_METRIC = "AP"
PRIMARY_METRIC_HIGHER_IS_BETTER = True
EVALUATES_ON_HOST = True
LOSS_TERMS = faster_rcnn.LOSS_TERMS  # of the default detector; see loss_terms(config)
#: ``config.model.detector`` -> module providing ``create_model(config, num_classes,
#: bn_axis_name)`` and ``LOSS_TERMS`` (or ``loss_terms_for(config.model, num_classes)``); its
#: model follows :class:`~jaxdet.detection.faster_rcnn.FasterRCNN`'s apply contract.
DETECTORS = {
    "faster_rcnn": "jaxdet.detection.faster_rcnn",
    "fast_rcnn": "jaxdet.detection.fast_rcnn",
    "rcnn": "jaxdet.detection.rcnn",
    "sliding_window": "jaxdet.detection.sliding_window",
    "yolo": "jaxdet.detection.yolo",
    "ssd": "jaxdet.detection.ssd",
}
_NEEDS_PROPOSALS = ("fast_rcnn", "rcnn")


def needs_proposals(config: ml_collections.ConfigDict) -> bool:
    """Whether the detector reads precomputed proposals (R-CNN, Fast R-CNN) from its data."""
    return detector_name(config) in _NEEDS_PROPOSALS


def detector_name(config: ml_collections.ConfigDict) -> str:
    name = config.model.get("detector", "faster_rcnn")
    if name not in DETECTORS:
        raise ConfigError(f"config.model.detector={name!r}; expected one of {list(DETECTORS)}")
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
    """``{"train", "validation"}`` sources: multi-object scenes, or the real data of
    ``config.data.source`` (:mod:`jaxdet.data.sources`); NotImplementedError for another
    ``config.data.name``.
    """
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
    """A source whose examples also carry cached proposals: ``proposals`` float32 ``[P, 4]``
    absolute pixels, ``proposal_valid`` bool ``[P]`` (row ``i`` for example ``i``).
    """

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
    """Raw example -> one example's batch fields (module docstring), padded to ``G``.

    ValueError naming the example for a malformed image, boxes not ``[N, 4]`` ``(x1, y1, x2, y2)``
    inside the image, labels outside the class range, more than ``G`` objects, or missing
    keypoints with a keypoint branch.
    """
    max_instances = int(config.data.max_instances)
    num_classes = len(class_names(config))
    with_masks = "mask" in config.model
    crop_size = int(config.data.get("mask_crop_size", 56))
    with_keypoints = "keypoint" in config.model
    num_keypoints = (int(config.model.keypoint.get("num_keypoints", stick_figures.NUM_KEYPOINTS))
                     if with_keypoints else 0)

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
                raise ValueError(f"{where}: the keypoint branch needs objects.keypoints (scenes "
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
    """``(params, batch_stats, batch, rng) -> LossOutput`` with the detector's terms.

    Sampling uses one key per image, ``fold_in(rng, index)`` (independent of the device split).
    Metrics: ``proposal_recall`` and ``fg_rois_per_image``.
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
    """Per-example detections in ``orig_hw`` pixels and proposal-recall counts.

    Returns ``boxes`` ``[B, K, 4]`` float32 ``(x1, y1, x2, y2)``, ``scores`` ``[B, K]``,
    ``classes`` ``[B, K]`` int32 0-based, ``valid`` ``[B, K]``, ``recall_hit`` / ``recall_total``
    ``[B]`` int32 (top ``recall_top_n`` proposals at IoU 0.5 / valid gt); Mask R-CNN adds
    ``masks`` ``[B, K, 28, 28]`` float32 probabilities; Keypoint R-CNN adds ``keypoints``
    ``[B, K, 17, 3]`` ``(x, y, score)`` in ``orig_hw`` pixels and ``keypoint_scores``.
    """
    out = model.apply(_variables(params, batch_stats), model_input(batch), batch["image_hw"],
                      train=False, **_proposal_inputs(batch))
    boxes = jax.vmap(roi_heads.rescale_boxes)(out["boxes"], batch["image_hw"], batch["orig_hw"])
    targets = _targets(batch)
    hit, total = rpn_lib.batch_proposal_recall(out["proposals"], out["proposal_valid"],
                                               targets["gt_boxes"], targets["gt_valid"],
                                               recall_top_n)
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
    """COCO evaluation of ``config.eval_split`` (its source is read for gt masks / areas when the
    model has a mask or keypoint head).
    """
    needs_source = "mask" in config.model or "keypoint" in config.model
    split = config.get("eval_split", "validation")
    source = datasets(config)[split] if needs_source else None
    return detection_eval.DetectionEvaluator(config.model, class_names(config), source,
                                             dataset_ids(config, split))


def dataset_ids(config: ml_collections.ConfigDict, split: str) -> dict[str, Any]:
    """The source's own ids of ``split`` (:func:`jaxdet.data.sources.detection_dataset_ids`;
    {} for the synthetic scenes)."""
    from jaxdet.data import sources  # not imported for the synthetic scenes

    return sources.detection_dataset_ids(config, split)


def draw_predictions(
    model: nn.Module, params, batch_stats, batch: Mapping[str, np.ndarray], config
) -> list:
    """One picture per example: gt (green) and detections with score >= ``draw_score_threshold``
    (red), with their masks (translucent) and person skeletons.
    """
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
                out["classes"][i] == faster_rcnn.keypoint_class(config.model))
            image = visualize.draw_skeletons(image, out["keypoints"][i][keep],
                                             stick_figures.SKELETON)
        pictures.append(visualize.boxes_panel(image, gt=gt, pred=pred))
    return pictures
