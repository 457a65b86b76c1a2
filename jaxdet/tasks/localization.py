"""Classification + localisation: one object per image, its class and its box.

Data: one-object scenes (``min_objects = max_objects = 1``). Model:
:class:`jaxdet.models.global_heads.GlobalHeadsNet` with heads ``class_logits`` (C, no
background) and ``box`` (4 numbers normalised by the image size, ``config.model.box_format``
``"cxcywh"`` or ``"xyxy"``); metrics decode to absolute ``(x1, y1, x2, y2)`` pixels.

Loss: ``class_weight * class_ce + box_weight * box`` (softmax CE; ``config.loss.box_loss`` in
{"l2", "l1", "smooth_l1"} with ``smooth_l1_beta``, summed over the 4 numbers, averaged over
images). Both terms are also reported on the validation split.
"""

from __future__ import annotations

import functools
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
from jaxdet.data import scenes, scenes_tfds
from jaxdet.losses import regression
from jaxdet.metrics import localization as loc_metrics
from jaxdet.models import global_heads
from jaxdet.ops import boxes as box_ops
from jaxdet.tasks.model_apply import apply_model, model_input
from jaxdet.tasks.model_apply import init_variables as init_variables  # Task.init_variables

PRIMARY_METRIC = "correct_and_iou50"
PRIMARY_METRIC_HIGHER_IS_BETTER = True
EVALUATES_ON_HOST = False
BOX_FORMATS = ("cxcywh", "xyxy")


def class_names(config: ml_collections.ConfigDict) -> list[str]:
    del config
    return list(scenes.CLASS_NAMES)


def loss_weights(config: ml_collections.ConfigDict) -> dict[str, float]:
    return {"class_ce": float(config.loss.class_weight), "box": float(config.loss.box_weight)}


def datasets(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """``{"train": source, "validation": source}`` of one-object scenes."""
    data = config.data
    builder = scenes_tfds.build_scenes(
        os.path.expanduser(data.data_dir), image_size=data.image_size, min_objects=1,
        max_objects=1, num_train=data.num_train, num_val=data.num_val, seed=data.seed,
        min_size=data.get("min_size", 0), max_size=data.get("max_size", 0),
    )
    sources = builder.as_data_source()
    return {"train": sources["train"], "validation": sources["validation"]}


def preprocess(example: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Raw one-object example -> ``{"image": uint8 [H,W,3], "label": int32, "box": f32 [4]}``, box
    ``(x1, y1, x2, y2)`` absolute pixels; ValueError unless exactly one object.
    """
    image = np.asarray(example["image"], np.uint8)
    objects = example["objects"]
    boxes = np.asarray(objects["bbox"], np.float32).reshape(-1, 4)
    labels = np.asarray(objects["label"]).reshape(-1)
    where = f"localisation example {example.get('image_id', '?')}"
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"{where}: image must be [H, W, 3], got {image.shape}")
    if len(boxes) != 1 or len(labels) != 1:
        raise ValueError(
            f"{where}: objects.bbox/objects.label must hold exactly one object, got "
            f"{len(boxes)} boxes and {len(labels)} labels"
        )
    return {"image": image, "label": labels[0].astype(np.int32), "box": boxes[0]}


def make_preprocess(config: ml_collections.ConfigDict) -> Callable[[Mapping[str, Any]], dict]:
    """:func:`preprocess` (its output shapes do not depend on ``config``)."""
    del config
    return preprocess


def create_model(config: ml_collections.ConfigDict, bn_axis_name: str | None) -> nn.Module:
    heads = (("class_logits", len(class_names(config))), ("box", 4))
    return global_heads.create_model(config.model, heads, bn_axis_name=bn_axis_name)



def encode_boxes(boxes: jax.Array, image_size: tuple[int, int], box_format: str) -> jax.Array:
    """Absolute (x1, y1, x2, y2) ``[..., 4]`` -> the head's normalised 4 numbers (float32)."""
    h, w = image_size
    scale = jnp.asarray([w, h, w, h], jnp.float32)
    boxes = boxes.astype(jnp.float32) / scale
    if box_format == "xyxy":
        return boxes
    if box_format == "cxcywh":
        return box_ops.xyxy_to_cxcywh(boxes)
    raise ConfigError(f"model.box_format={box_format!r}; expected one of {list(BOX_FORMATS)}")


def decode_boxes(numbers: jax.Array, image_size: tuple[int, int], box_format: str) -> jax.Array:
    """Inverse of :func:`encode_boxes`: ``[..., 4]`` -> absolute (x1, y1, x2, y2), float32."""
    h, w = image_size
    numbers = numbers.astype(jnp.float32)
    if box_format == "cxcywh":
        numbers = box_ops.cxcywh_to_xyxy(numbers)
    elif box_format != "xyxy":
        raise ConfigError(f"model.box_format={box_format!r}; expected one of {list(BOX_FORMATS)}")
    return numbers * jnp.asarray([w, h, w, h], jnp.float32)



def _loss_terms(outputs, batch, config) -> dict[str, tuple[jax.Array, jax.Array]]:
    mask = batch["mask"].astype(jnp.float32)
    size = batch["image"].shape[1:3]
    target = encode_boxes(batch["box"], size, config.model.box_format)
    return {
        "class_ce": regression.softmax_cross_entropy(outputs["class_logits"], batch["label"], mask),
        "box": regression.regression_loss(
            outputs["box"], target, mask, config.loss.box_loss,
            beta=float(config.loss.get("smooth_l1_beta", 1.0)),
        ),
    }


def make_loss_fn(model: nn.Module, config: ml_collections.ConfigDict):
    """``(params, batch_stats, batch, rng) -> LossOutput`` with terms ``class_ce`` and ``box``."""

    def loss_fn(params, batch_stats, batch, rng):
        del rng  # deterministic model
        outputs, new_stats = apply_model(model, params, batch_stats, model_input(batch), train=True)
        mask = batch["mask"].astype(jnp.float32)
        correct = jnp.sum((jnp.argmax(outputs["class_logits"], -1) == batch["label"]) * mask)
        return LossOutput(
            terms=_loss_terms(outputs, batch, config),
            metrics={"accuracy": (correct, jnp.sum(mask))},
            batch_stats=new_stats,
        )

    return loss_fn


def predict(model: nn.Module, params, batch_stats, images: jax.Array, box_format: str):
    """``(labels int32 [B], boxes float32 [B, 4] absolute (x1, y1, x2, y2), scores [B])``."""
    outputs, _ = apply_model(model, params, batch_stats, images, train=False)
    probs = jax.nn.softmax(outputs["class_logits"], -1)
    boxes = decode_boxes(outputs["box"], images.shape[1:3], box_format)
    return jnp.argmax(probs, -1).astype(jnp.int32), boxes, jnp.max(probs, -1)


def make_eval_fn(model: nn.Module, config: ml_collections.ConfigDict):
    """``(params, batch_stats, batch) -> additive stats``: metrics and validation loss sums."""

    def eval_fn(params, batch_stats, batch):
        images = model_input(batch)
        outputs, _ = apply_model(model, params, batch_stats, images, train=False)
        labels = jnp.argmax(outputs["class_logits"], -1)
        boxes = decode_boxes(outputs["box"], images.shape[1:3], config.model.box_format)
        stats = loc_metrics.localization_stats(
            labels, boxes, batch["label"], batch["box"], batch["mask"]
        )
        for name, (total, _) in _loss_terms(outputs, batch, config).items():
            stats[f"loss_sum/{name}"] = total
        return stats

    return eval_fn


def eval_accumulator(config: ml_collections.ConfigDict) -> dict[str, jax.Array]:
    names = ["count", "class_correct", "iou_sum", "iou50", "correct_and_iou50"]
    names += [f"loss_sum/{t}" for t in loss_weights(config)]
    return {k: jnp.zeros((), jnp.float32) for k in names}


def summarize(accumulator: Mapping[str, Any], config: ml_collections.ConfigDict) -> dict:
    """Accuracy, mean IoU, IoU>=0.5 rate, right class AND IoU>=0.5; validation loss terms."""
    stats = {k: float(v) for k, v in accumulator.items()}
    out = loc_metrics.summarize({k: v for k, v in stats.items() if "/" not in k})
    count = max(stats["count"], 1.0)
    weights = loss_weights(config)
    total = 0.0
    for term, weight in weights.items():
        out[f"val_loss/{term}"] = stats[f"loss_sum/{term}"] / count
        total += weight * out[f"val_loss/{term}"]
    out["val_loss/total"] = total
    return out


def draw_predictions(
    model: nn.Module, params, batch_stats, batch: Mapping[str, np.ndarray], config
) -> list:
    """One picture per example: ground-truth box (green) and predicted box (red) + class."""
    fn = jax.jit(functools.partial(predict, model, box_format=config.model.box_format))
    labels, boxes, scores = jax.device_get(fn(params, batch_stats, model_input(batch)))
    names = class_names(config)
    pictures = []
    for i in range(len(batch["image"])):
        if not batch["mask"][i]:
            continue
        pictures.append(visualize.boxes_panel(
            batch["image"][i],
            gt=[(batch["box"][i], names[int(batch["label"][i])])],
            pred=[(boxes[i], f"{names[int(labels[i])]} {scores[i]:.2f}")],
        ))
    return pictures

