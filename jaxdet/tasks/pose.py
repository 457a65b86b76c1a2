"""Pose estimation as fixed-count joint regression: one stick figure per image, K = 17 joints.

Data: :mod:`jaxdet.data.pose_tfds` (COCO keypoints; v = 2 visible, 1 occluded, 0
unlabelled). Model: :class:`jaxdet.models.global_heads.GlobalHeadsNet`, one ``joints`` head of
2K numbers, (x, y) normalised by the image size. Loss: ``config.loss.joint_weight`` x
``config.loss.joint_loss`` ({"l2", "l1", "smooth_l1"}, ``smooth_l1_beta``), summed over x, y,
averaged over visible (v = 2) joints. Metrics over visible joints: PCK@0.2 (within 0.2 x the
longer side of the figure's box) and mean joint error in pixels.
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
from jaxdet.core import LossOutput
from jaxdet.data import pose_tfds, stick_figures
from jaxdet.losses import regression
from jaxdet.metrics import keypoints as kp_metrics
from jaxdet.models import global_heads
from jaxdet.tasks.model_apply import apply_model, model_input
from jaxdet.tasks.model_apply import init_variables as init_variables  # Task.init_variables

NUM_JOINTS = len(stick_figures.KEYPOINT_NAMES)
PCK_THRESHOLD = 0.2
PRIMARY_METRIC = "pck@0.2"
PRIMARY_METRIC_HIGHER_IS_BETTER = True
EVALUATES_ON_HOST = False


def loss_weights(config: ml_collections.ConfigDict) -> dict[str, float]:
    return {"joints": float(config.loss.joint_weight)}


def datasets(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """``{"train": source, "validation": source}`` of stick-figure images."""
    data = config.data
    builder = pose_tfds.build_pose(
        os.path.expanduser(data.data_dir), image_size=data.image_size,
        num_train=data.num_train, num_val=data.num_val, seed=data.seed,
    )
    sources = builder.as_data_source()
    return {"train": sources["train"], "validation": sources["validation"]}


def preprocess(example: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Raw example -> ``image`` uint8 [H,W,3], ``joints`` float32 [K,2] absolute pixels,
    ``visible`` float32 [K] (v = 2), ``box`` float32 [4] (x1, y1, x2, y2); ValueError on bad shapes.
    """
    image = np.asarray(example["image"], np.uint8)
    keypoints = np.asarray(example["keypoints"], np.float32)
    box = np.asarray(example["box"], np.float32).reshape(-1)
    where = f"pose example {example.get('image_id', '?')}"
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"{where}: image must be [H, W, 3], got {image.shape}")
    if keypoints.shape != (NUM_JOINTS, 3):
        raise ValueError(f"{where}: keypoints must be [{NUM_JOINTS}, 3], got {keypoints.shape}")
    if box.shape != (4,):
        raise ValueError(f"{where}: box must be [4], got {box.shape}")
    return {
        "image": image,
        "joints": keypoints[:, :2],
        "visible": (keypoints[:, 2] == 2).astype(np.float32),
        "box": box,
    }


def make_preprocess(config: ml_collections.ConfigDict) -> Callable[[Mapping[str, Any]], dict]:
    """:func:`preprocess` (its output shapes do not depend on ``config``)."""
    del config
    return preprocess


def create_model(config: ml_collections.ConfigDict, bn_axis_name: str | None) -> nn.Module:
    return global_heads.create_model(
        config.model, (("joints", 2 * NUM_JOINTS),), bn_axis_name=bn_axis_name
    )



def _scale(image_shape) -> jax.Array:
    h, w = image_shape
    return jnp.asarray([w, h], jnp.float32)



def predict(model: nn.Module, params, batch_stats, images: jax.Array) -> jax.Array:
    """Joints ``float32 [B, K, 2]`` (x, y) in absolute pixels."""
    outputs, _ = apply_model(model, params, batch_stats, images, train=False)
    joints = outputs["joints"].reshape(images.shape[0], NUM_JOINTS, 2)
    return joints * _scale(images.shape[1:3])


def _joint_loss(pred_normalised, batch, config):
    weights = batch["visible"] * batch["mask"][:, None].astype(jnp.float32)
    target = batch["joints"].astype(jnp.float32) / _scale(batch["image"].shape[1:3])
    return regression.regression_loss(
        pred_normalised, target, weights, config.loss.joint_loss,
        beta=float(config.loss.get("smooth_l1_beta", 1.0)),
    )


def make_loss_fn(model: nn.Module, config: ml_collections.ConfigDict):
    """``(params, batch_stats, batch, rng) -> LossOutput`` with one term, ``joints``."""

    def loss_fn(params, batch_stats, batch, rng):
        del rng
        images = model_input(batch)
        outputs, new_stats = apply_model(model, params, batch_stats, images, train=True)
        pred = outputs["joints"].reshape(images.shape[0], NUM_JOINTS, 2)
        return LossOutput(
            terms={"joints": _joint_loss(pred, batch, config)}, metrics={}, batch_stats=new_stats
        )

    return loss_fn


def make_eval_fn(model: nn.Module, config: ml_collections.ConfigDict):
    """``(params, batch_stats, batch) -> additive stats`` (PCK hits, errors, loss sum)."""

    def eval_fn(params, batch_stats, batch):
        images = model_input(batch)
        joints = predict(model, params, batch_stats, images)
        stats = kp_metrics.keypoint_stats(
            joints, batch["joints"], batch["visible"], kp_metrics.person_box_size(batch["box"]),
            batch["mask"], pck_threshold=PCK_THRESHOLD,
        )
        total, _ = _joint_loss(joints / _scale(images.shape[1:3]), batch, config)
        stats["loss_sum/joints"] = total
        return stats

    return eval_fn


def eval_accumulator(config: ml_collections.ConfigDict) -> dict[str, jax.Array]:
    names = ["visible_count", "pck_hits", "error_sum", "loss_sum/joints"]
    return {k: jnp.zeros((), jnp.float32) for k in names}


def summarize(accumulator: Mapping[str, Any], config: ml_collections.ConfigDict) -> dict:
    stats = {k: float(v) for k, v in accumulator.items()}
    out = kp_metrics.summarize(
        {k: v for k, v in stats.items() if "/" not in k}, pck_threshold=PCK_THRESHOLD
    )
    out["val_loss/joints"] = stats["loss_sum/joints"] / max(stats["visible_count"], 1.0)
    out["val_loss/total"] = loss_weights(config)["joints"] * out["val_loss/joints"]
    return out


def draw_predictions(
    model: nn.Module, params, batch_stats, batch: Mapping[str, np.ndarray], config
) -> list:
    """One picture per example: input | ground-truth skeleton | predicted skeleton."""
    del config
    fn = jax.jit(functools.partial(predict, model))
    joints = np.asarray(jax.device_get(fn(params, batch_stats, model_input(batch))))
    pictures = []
    for i in range(len(batch["image"])):
        if not batch["mask"][i]:
            continue
        pictures.append(visualize.skeleton_panel(
            batch["image"][i], batch["joints"][i], batch["visible"][i], joints[i],
            stick_figures.SKELETON,
        ))
    return pictures
