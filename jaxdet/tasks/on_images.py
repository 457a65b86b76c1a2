"""Prediction on arbitrary images, mapped back to each image's own pixels, for every task.

An image (uint8 ``[h, w, 3]``, any size) is fitted the way the config evaluates
(:func:`fit_image`: ``data.resize_short`` / ``resize_max`` or fit, then padded bottom/right to
``data.pad_sizes[-1]`` or ``image_size`` squared); :func:`make_batch_predict_fn` runs the model
on a batch of them and returns outputs already in original pixels; :func:`image_results` turns
one image's outputs into results and a picture:

* detection: COCO-style records ``{"category_id", "category_name", "bbox": [x, y, w, h],
  "score"}`` (+ ``"segmentation"``: COCO RLE at the original size with a mask head,
  ``"keypoints"``: ``[x, y, 1] * K`` with a keypoint head), every detection;
* localisation: one record (its box, class and score); pose: one record with ``"keypoints"``;
* segmentation: a ``[h, w]`` uint8 class-index map.

Category ids are the dataset's own (:func:`jaxdet.data.sources.detection_dataset_ids`) where it
has them, else ``label + 1``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import PIL.Image
from pycocotools import mask as mask_utils

from jaxdet import visualize
from jaxdet.core import ConfigError
from jaxdet.data import augment, stick_figures
from jaxdet.detection import faster_rcnn
from jaxdet.models import segmentation as seg_models
from jaxdet.tasks import detection, detection_eval, localization, pose, segmentation
from jaxdet.tasks.model_apply import model_input


def input_size(config: ml_collections.ConfigDict) -> tuple[int, int]:
    """``(height, width)`` of the padded network input the config evaluates at (for
    segmentation rounded up to what the model needs, as its training pads)."""
    sizes = [tuple(int(v) for v in s) for s in config.data.get("pad_sizes", ()) or ()]
    size = int(config.data.get("image_size", 0) or 0)
    if not sizes and size <= 0:
        raise ConfigError("config.data.image_size (or data.pad_sizes) is needed to predict on "
                          "images")
    height, width = sizes[-1] if sizes else (size, size)
    if config.task == "segmentation" and len(config.get("model", {})):
        m = seg_models.size_multiple(config.model)
        height, width = -(-height // m) * m, -(-width // m) * m
    return height, width


def fit_image(image: np.ndarray, config: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
    """``{"image": [H, W, 3] uint8 padded input, "image_hw": [2], "orig_hw": [2]}`` int32."""
    transform = augment.GeometryTransform(
        [input_size(config)], train=False, short=int(config.data.get("resize_short", 0) or 0),
        max_size=int(config.data.get("resize_max", 0) or 0))
    out = transform({"image": np.asarray(image, np.uint8)})
    return {"image": out["image"], "image_hw": np.asarray(out["image_hw"], np.int32),
            "orig_hw": np.asarray(out["orig_hw"], np.int32)}


def stack_batch(fitted: Sequence[Mapping[str, np.ndarray]], batch_size: int
                ) -> dict[str, np.ndarray]:
    """The :func:`fit_image` fields of up to ``batch_size`` images as one batch padded to
    ``batch_size`` with zeros, plus ``mask`` (1 real, 0 padding) and ``index``."""
    batch = {k: np.stack([f[k] for f in fitted]) for k in ("image", "image_hw", "orig_hw")}
    batch["mask"] = np.ones(len(fitted), np.float32)
    batch["index"] = np.arange(len(fitted), dtype=np.int32)
    pad = batch_size - len(fitted)
    return {k: np.concatenate([v, np.zeros((pad, *v.shape[1:]), v.dtype)]) if pad else v
            for k, v in batch.items()}


def label_names_and_ids(task: Any, config: ml_collections.ConfigDict
                        ) -> tuple[list[str], list[int] | None]:
    """``(class names, dataset category ids or None)`` that :func:`image_results` names its
    labels with (pose: its one class, ``person``)."""
    if config.task == "pose":
        return ["person"], None
    ids = detection.dataset_ids(config, "train") if config.task == "detection" else {}
    return list(task.class_names(config)), ids.get("category_ids")


def _ratio(batch: Mapping[str, jax.Array]) -> jax.Array:
    """``[B, 2]`` (x, y) factors from network-input pixels to original pixels."""
    return (batch["orig_hw"].astype(jnp.float32)
            / jnp.maximum(batch["image_hw"].astype(jnp.float32), 1.0))[:, ::-1]


def make_batch_predict_fn(model: Any, config: ml_collections.ConfigDict
                          ) -> Callable[[Any, Any, Mapping[str, jax.Array]], dict[str, jax.Array]]:
    """``(params, batch_stats, batch) -> outputs`` for a batch of :func:`fit_image` fields
    (``image`` ``[B, H, W, 3]`` uint8, ``image_hw``, ``orig_hw`` ``[B, 2]``); coordinates in
    original pixels. Detection: :func:`jaxdet.tasks.detection.predict`'s ``boxes`` ...;
    segmentation: ``labels`` ``[B, h', w']`` int32 at the network's output resolution;
    localisation: ``boxes`` ``[B, 4]``, ``classes``, ``scores`` ``[B]``; pose: ``keypoints``
    ``[B, K, 2]``. ConfigError for detectors that need precomputed proposals.
    """
    task = config.task
    if task == "detection":
        if detection.needs_proposals(config):
            raise ConfigError(f"config.model.detector={config.model.detector!r} needs precomputed "
                              "proposals: prediction on images takes a detector with its own RPN")
        predict = detection.make_predict_fn(model, config)

        def detect(params, batch_stats, batch):
            b = batch["image"].shape[0]
            full = {**batch, "gt_boxes": jnp.zeros((b, 1, 4), jnp.float32),
                    "gt_labels": jnp.zeros((b, 1), jnp.int32),
                    "gt_valid": jnp.zeros((b, 1), bool)}
            out = predict(params, batch_stats, full)
            return {k: v for k, v in out.items() if not k.startswith("recall")}

        return detect
    if task == "segmentation":
        return lambda params, batch_stats, batch: {"labels": segmentation.predict(
            model, params, batch_stats, model_input(batch))}
    if task == "localization":
        def localize(params, batch_stats, batch):
            classes, boxes, scores = localization.predict(
                model, params, batch_stats, model_input(batch), config.model.box_format)
            ratio = _ratio(batch)
            return {"boxes": boxes * jnp.concatenate([ratio, ratio], -1), "classes": classes,
                    "scores": scores}

        return localize
    if task == "pose":
        return lambda params, batch_stats, batch: {"keypoints": pose.predict(
            model, params, batch_stats, model_input(batch)) * _ratio(batch)[:, None, :]}
    raise ConfigError(f"config.task={task!r}: no prediction on images")


def _xywh(box: Sequence[float], hw: Sequence[int]) -> list[float]:
    """COCO ``[x, y, w, h]`` of an ``(x1, y1, x2, y2)`` box clipped to an ``hw`` image."""
    h, w = (float(v) for v in hw)
    x1, x2 = sorted(min(max(float(v), 0.0), w) for v in (box[0], box[2]))
    y1, y2 = sorted(min(max(float(v), 0.0), h) for v in (box[1], box[3]))
    return [x1, y1, x2 - x1, y2 - y1]


def _category(label: int, names: Sequence[str], category_ids: Sequence[int] | None
              ) -> dict[str, Any]:
    return {"category_id": int(category_ids[label]) if category_ids else label + 1,
            "category_name": str(names[label])}


def _detection_results(image, out, config, names, category_ids, draw):
    h, w = image.shape[:2]
    threshold = float(config.get("draw_score_threshold", 0.5))
    valid = np.asarray(out["valid"], bool)
    boxes, scores, classes = out["boxes"], out["scores"], out["classes"]
    masks = None
    if "masks" in out:
        masks = np.asarray(detection_eval.paste_binary_masks(
            jnp.asarray(out["masks"]), jnp.asarray(boxes), h, w))
    records = []
    for k in np.flatnonzero(valid):
        record = {**_category(int(classes[k]), names, category_ids),
                  "bbox": _xywh(boxes[k], (h, w)), "score": float(scores[k])}
        if masks is not None:
            rle = mask_utils.encode(np.asfortranarray(masks[k].astype(np.uint8)))
            record["segmentation"] = {"size": [int(h), int(w)],
                                      "counts": rle["counts"].decode("ascii")}
        if "keypoints" in out:
            kp = np.asarray(out["keypoints"][k], np.float32)
            record["keypoints"] = np.concatenate(
                [kp[:, :2], np.ones((len(kp), 1), np.float32)], 1).reshape(-1).tolist()
        records.append(record)
    if not draw:
        return records, None
    shown = valid & (np.asarray(scores) >= threshold)
    picture = np.asarray(image, np.uint8)
    if masks is not None:
        picture = visualize.overlay_masks(picture, masks[shown], np.asarray(classes)[shown] + 1)
    if "keypoints" in out:
        people = shown & (np.asarray(classes) == faster_rcnn.keypoint_class(config.model))
        picture = visualize.draw_skeletons(picture, np.asarray(out["keypoints"])[people],
                                           stick_figures.SKELETON)
    pred = [(boxes[k], f"{names[int(classes[k])]} {float(scores[k]):.2f}")
            for k in np.flatnonzero(shown)]
    return records, visualize.boxes_panel(picture, gt=[], pred=pred, scale=1)


def _segmentation_results(image, out, fitted, draw):
    h, w = image.shape[:2]
    labels = np.asarray(out["labels"])
    ih, iw = fitted["image"].shape[:2]
    if labels.shape != (ih, iw):  # a coarser output: nearest up to the input size
        rows = np.minimum((np.arange(ih) * labels.shape[0]) // ih, labels.shape[0] - 1)
        cols = np.minimum((np.arange(iw) * labels.shape[1]) // iw, labels.shape[1] - 1)
        labels = labels[rows][:, cols]
    nh, nw = (int(v) for v in fitted["image_hw"])
    label_map = np.asarray(PIL.Image.fromarray(labels[:nh, :nw].astype(np.uint8)).resize(
        (w, h), PIL.Image.NEAREST))
    if not draw:
        return label_map, None
    overlay = np.asarray(image, np.float32) * 0.45 + visualize.colorize(label_map) * 0.55
    overlay = np.where((label_map == 0)[..., None], image, overlay).astype(np.uint8)
    return label_map, PIL.Image.fromarray(overlay)


def image_results(image: np.ndarray, fitted: Mapping[str, np.ndarray],
                  out: Mapping[str, np.ndarray], config: ml_collections.ConfigDict,
                  names: Sequence[str], category_ids: Sequence[int] | None = None,
                  draw: bool = True) -> tuple[Any, PIL.Image.Image | None]:
    """``(results, picture)`` of one image (``image`` its original uint8 pixels, ``fitted`` its
    :func:`fit_image` fields, ``out`` its slice of the batch outputs): detection / localisation /
    pose: a list of records; segmentation: the ``[h, w]`` uint8 label map. The picture is at the
    original size (None without ``draw``); ``config.draw_score_threshold`` applies to it
    only."""
    task = config.task
    if task == "detection":
        return _detection_results(image, out, config, names, category_ids, draw)
    if task == "segmentation":
        return _segmentation_results(image, out, fitted, draw)
    if task == "localization":
        label = int(out["classes"])
        record = {**_category(label, names, category_ids),
                  "bbox": _xywh(out["boxes"], image.shape[:2]), "score": float(out["scores"])}
        picture = visualize.boxes_panel(np.asarray(image, np.uint8), gt=[], pred=[(
            out["boxes"], f"{names[label]} {float(out['scores']):.2f}")], scale=1)
        return [record], picture
    kp = np.asarray(out["keypoints"], np.float32)
    record = {"category_id": 1, "category_name": "person",
              "keypoints": np.concatenate([kp, np.ones((len(kp), 1), np.float32)], 1)
              .reshape(-1).tolist()}
    picture = visualize.draw_skeletons(np.asarray(image, np.uint8), kp[None],
                                       stick_figures.SKELETON)
    return [record], PIL.Image.fromarray(picture)
