"""A workdir holds one run: the config it was trained with, and reruns that must match it.

``workdir/config.json`` is the run's config (written by the first run). Once the workdir holds
checkpoints, :func:`check_same_run` refuses a config that differs from it in any field that
shapes the train state or the data; only the fields in :data:`RESUMABLE_FIELDS` (steps,
intervals, evaluation limits, pictures, logging, the learning-rate schedule, loss fields,
inference-only detector options) may change when a run is resumed, evaluated or drawn. The
workdir must be visible to every process of a multi-process run. The check runs before anything
in the workdir is touched.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import ml_collections

from jaxdet import core

CONFIG_FILE = "config.json"

RESUMABLE_FIELDS = frozenset({
    "num_train_steps", "log_every_steps", "eval_every_steps", "checkpoint_every_steps",
    "keep_checkpoints", "eval_limit", "eval_split", "eval_batch_size", "num_prediction_images",
    "tensorboard_images",
    "draw_score_threshold", "progress_bar", "compilation_cache_dir", "recompile_policy",
    "recompile_after_steps", "max_nonfinite_steps", "init_from", "data.data_dir",
    "sweep_strategy", "variant",
    # the learning-rate schedule (not the optimizer's kind or clipping: they shape its state)
    "optimizer.learning_rate", "optimizer.schedule", "optimizer.warmup_steps",
    "optimizer.decay_steps", "optimizer.decay_factor",
    # inference only: post-processing and test-time options of the detectors
    "model.postprocess.score_thresh", "model.postprocess.nms_thresh",
    "model.postprocess.detections_per_img", "model.recall_top_n",
    "model.rpn.pre_nms_top_n_test", "model.rpn.post_nms_top_n_test", "model.ssd_pre_nms_top_n",
    "model.keypoint.detections_per_img", "model.keypoint.decode", "model.keypoint.decode_window",
    "model.keypoint.rescore", "model.keypoint.flip_test",
})
"""Dotted config keys that may differ between a run and its resumption (with every ``loss.*``
field: weights and loss kinds change the objective, not the state)."""

RESUMABLE_PREFIXES = ("loss.",)


class WorkdirMismatchError(core.UserError, ValueError):
    """The workdir cannot hold this run: its checkpoints belong to a run with another config,
    its config.json is unreadable, or none of its checkpoints can be restored."""


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists and tuples are values)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _empty(value: Any) -> bool:
    """An off value: ``None``, ``False``, ``0``, ``""``, ``()``."""
    return value is None or value is False or (
        isinstance(value, (int, float)) and value == 0) or (
        isinstance(value, (str, list, tuple, dict)) and not value)


def differences(saved: Mapping[str, Any],
                current: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """``[(dotted key, saved value, current value)]`` outside :data:`RESUMABLE_FIELDS`,
    sorted by key; a key on one side only counts unless its value is off (:func:`_empty`: a
    field a newer config file states with its off value). Missing values are
    reported as ``"(absent)"``."""
    old, new = flatten(saved), flatten(current)
    out = []
    for key in sorted(set(old) | set(new)):
        if key in RESUMABLE_FIELDS or key.startswith(RESUMABLE_PREFIXES):
            continue
        if key not in old or key not in new:
            value = new.get(key, old.get(key))
            if not _empty(value):
                out.append((key, old.get(key, "(absent)"), new.get(key, "(absent)")))
        elif old[key] != new[key]:
            out.append((key, old[key], new[key]))
    return out


def has_checkpoints(workdir: str) -> bool:
    """Whether ``workdir/checkpoints`` holds at least one step directory."""
    directory = os.path.join(workdir, "checkpoints")
    return os.path.isdir(directory) and any(name.isdigit() for name in os.listdir(directory))


def config_as_json(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """``config`` as the plain JSON structure stored in ``config.json``."""
    return json.loads(config.to_json_best_effort())


def check_same_run(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Raises :class:`WorkdirMismatchError` naming every differing key (old and new values)
    when ``workdir`` holds checkpoints of a run whose stored config differs from ``config``
    outside :data:`RESUMABLE_FIELDS`; does nothing for a new or checkpoint-less workdir."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.isfile(path) or not has_checkpoints(workdir):
        return
    try:
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
    except (OSError, ValueError) as err:
        raise WorkdirMismatchError(
            f"{path} cannot be read ({err}); the workdir holds checkpoints of a run whose config "
            "is unknown: use a new --workdir") from None
    diffs = differences(saved, config_as_json(config))
    if diffs:
        listed = "; ".join(f"{key}: {old!r} -> {new!r}" for key, old, new in diffs)
        raise WorkdirMismatchError(
            f"{workdir} holds a run trained with another config ({listed}); only steps, "
            "intervals, evaluation limits, pictures, learning rates, loss fields and inference "
            "options may change when a run is resumed: use a new --workdir for this config, or "
            "the stored values (config.json) to continue")
