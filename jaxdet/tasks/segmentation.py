"""Semantic segmentation on the synthetic scenes (or a segmentation folder): per-pixel classes.

Batches: ``image`` uint8 ``[B, H, W, 3]``, ``label`` int32 ``[B, H, W]`` (0 background, ``k``
class ``k``, 255 ignored), ``index``, ``mask``. Models map float32 images in [0, 1] to logits
``[B, H / s, W / s, C]`` for stride ``s``.
"""

from __future__ import annotations

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
from jaxdet.data import scenes, scenes_tfds
from jaxdet.losses import segmentation as seg_losses
from jaxdet.metrics import confusion
from jaxdet.models import segmentation as seg_models
from jaxdet.tasks.model_apply import apply_model, model_input
from jaxdet.tasks.model_apply import init_variables as init_variables  # Task.init_variables

IGNORE_LABEL = 255
PRIMARY_METRIC = "mean_iou"  # what a sweep's best member is chosen by (validation split)
PRIMARY_METRIC_HIGHER_IS_BETTER = True
EVALUATES_ON_HOST = False


def class_names(config: ml_collections.ConfigDict) -> list[str]:
    if config.data.get("source", "scenes") != "scenes":  # a segmentation folder
        from jaxdet.data import sources

        return sources.segmentation_class_names(config)
    return ["background", *scenes.CLASS_NAMES]


def num_classes(config: ml_collections.ConfigDict) -> int:
    return len(class_names(config))


def datasets(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """``{"train", "validation"}`` raw sources: scenes, or the folder of ``config.data.source``."""
    if config.data.get("source", "scenes") != "scenes":
        from jaxdet.data import sources

        return sources.segmentation_datasets(config)
    data = config.data
    builder = scenes_tfds.build_scenes(
        os.path.expanduser(data.data_dir),
        image_size=data.image_size,
        min_objects=data.min_objects,
        max_objects=data.max_objects,
        num_train=data.num_train,
        num_val=data.num_val,
        seed=data.seed,
    )
    sources = builder.as_data_source()
    return {"train": sources["train"], "validation": sources["validation"]}


def preprocess(example: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Raw scene example -> ``{"image": uint8 [H,W,3], "label": int32 [H,W]}``."""
    image = np.asarray(example["image"], np.uint8)
    label = np.asarray(example["segmentation"])
    if label.ndim == 3:
        label = label[..., 0]
    if image.ndim != 3 or image.shape[-1] != 3 or label.shape != image.shape[:2]:
        raise ValueError(
            f"segmentation example {example.get('image_id', '?')}: expected image [H,W,3] and "
            f"segmentation [H,W(,1)], got {image.shape} and {np.shape(example['segmentation'])}"
        )
    return {"image": image, "label": label.astype(np.int32)}


def pad_to_multiple(example: Mapping[str, np.ndarray], multiple: int) -> dict[str, np.ndarray]:
    """``image`` (zeros) and ``label`` (:data:`IGNORE_LABEL`, so no loss or metric sees the
    padding) padded bottom/right to the next multiple of ``multiple``."""
    h, w = example["label"].shape
    ph, pw = -(-h // multiple) * multiple, -(-w // multiple) * multiple
    if (ph, pw) == (h, w):
        return dict(example)
    image = np.zeros((ph, pw, 3), np.uint8)
    image[:h, :w] = example["image"]
    label = np.full((ph, pw), IGNORE_LABEL, np.int32)
    label[:h, :w] = example["label"]
    return {**example, "image": image, "label": label}


def make_preprocess(config: ml_collections.ConfigDict) -> Callable[[Mapping[str, Any]], dict]:
    """:func:`preprocess`, then :func:`pad_to_multiple` of what the model's input size must be
    a multiple of (:func:`jaxdet.models.segmentation.size_multiple`)."""
    multiple = seg_models.size_multiple(config.model)
    if multiple == 1:
        return preprocess
    return lambda example: pad_to_multiple(preprocess(example), multiple)



def loss_weights(config: ml_collections.ConfigDict) -> dict[str, float]:
    return {k: float(v) for k, v in config.loss.weights.items()}

def create_model(config: ml_collections.ConfigDict, bn_axis_name: str | None) -> nn.Module:
    return seg_models.create_model(config.model, num_classes(config), bn_axis_name=bn_axis_name)




def make_loss_fn(model: nn.Module, config: ml_collections.ConfigDict):
    """``(params, batch_stats, batch, rng) -> LossOutput`` with one term, ``pixel_ce``."""

    def loss_fn(params, batch_stats, batch, rng):
        del rng  # deterministic model
        logits, new_stats = apply_model(model, params, batch_stats, model_input(batch), train=True)
        ce_sum, count = seg_losses.pixel_cross_entropy(
            logits, batch["label"], batch["mask"], IGNORE_LABEL
        )
        labels = seg_losses.labels_at_logit_resolution(batch["label"], logits.shape[1:3])
        valid = (labels != IGNORE_LABEL) & (batch["mask"][:, None, None] > 0)
        correct = jnp.sum((jnp.argmax(logits, -1) == labels) & valid).astype(jnp.float32)
        return LossOutput(
            terms={"pixel_ce": (ce_sum, count)},
            metrics={"pixel_accuracy": (correct, count)},
            batch_stats=new_stats,
        )

    return loss_fn


def predict(model: nn.Module, params, batch_stats, images: jax.Array) -> jax.Array:
    """Predicted class ids ``[B, h, w]`` int32 for float images ``[B, H, W, 3]``."""
    logits, _ = apply_model(model, params, batch_stats, images, train=False)
    return jnp.argmax(logits, -1).astype(jnp.int32)


def make_eval_fn(model: nn.Module, config: ml_collections.ConfigDict):
    """``(params, batch_stats, batch) -> {"confusion": [C, C]}`` over valid pixels."""
    n = num_classes(config)

    def eval_fn(params, batch_stats, batch):
        preds = predict(model, params, batch_stats, model_input(batch))
        labels = seg_losses.labels_at_logit_resolution(batch["label"], preds.shape[1:3])
        return {
            "confusion": confusion.confusion_matrix(
                preds, labels, n, batch["mask"], IGNORE_LABEL
            )
        }

    return eval_fn


def eval_accumulator(config: ml_collections.ConfigDict) -> dict[str, jax.Array]:
    n = num_classes(config)
    return {"confusion": jnp.zeros((n, n), jnp.float32)}


def summarize(accumulator: Mapping[str, Any], config: ml_collections.ConfigDict) -> dict:
    return confusion.summarize(np.asarray(accumulator["confusion"]), class_names(config))


def draw_predictions(
    model: nn.Module, params, batch_stats, batch: Mapping[str, np.ndarray], config
) -> list:
    """One PIL picture per example: input | ground truth | prediction overlay."""
    preds = np.asarray(jax.jit(predict, static_argnums=0)(
        model, params, batch_stats, model_input(batch)
    ))
    pictures = []
    for i in range(len(batch["image"])):
        if not batch["mask"][i]:
            continue
        pictures.append(
            visualize.segmentation_panel(batch["image"][i], batch["label"][i], preds[i])
        )
    return pictures
