"""Contracts shared by every layer of jaxdet (imports nothing from jaxdet): :data:`AXIS_NAME`
(the device axis of the train / eval bodies), :class:`LossOutput`, :class:`Detections`,
:func:`example_mask`, and the :class:`Task` protocols.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar, NamedTuple, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

AXIS_NAME = "batch"

SumCount = tuple[jax.Array, jax.Array]
"""``(sum over a shard, count over the shard)`` of one loss term or metric."""

Batch = Mapping[str, jax.Array]
Config = ml_collections.ConfigDict


class LossOutput(NamedTuple):
    """A task loss function's result for one device's shard.

    Attributes:
      terms: name -> (sum, count) over the shard; objective ``sum_k weight_k * psum(sum_k) /
        psum(count_k)``; counts must not depend on params.
      metrics: name -> (sum, count), reported as global means, not in the objective.
      batch_stats: updated BatchNorm statistics (``{}`` without BatchNorm).
    """

    terms: dict[str, SumCount]
    metrics: dict[str, SumCount]
    batch_stats: Any


class UserError(Exception):
    """A problem with what the user gave (config, data folder, workdir), not a bug: the command
    line prints its message alone, one line, and exits non-zero."""


class ConfigError(UserError, ValueError):
    """A config value that cannot work; the message names the field (``config.x.y=value``) and
    what was expected."""


LossFn = Callable[[Any, Any, Batch, jax.Array], LossOutput]
"""``(params, batch_stats, batch, rng) -> LossOutput`` for one device's shard."""

EvalFn = Callable[[Any, Any, Batch], dict[str, jax.Array]]
"""``(params, batch_stats, batch) -> additive statistics`` (summed over devices and batches)."""

PredictFn = Callable[[Any, Any, Batch], dict[str, jax.Array]]
"""``(params, batch_stats, batch) -> per-example outputs`` (leading axis = batch)."""


class Detections(NamedTuple):
    """Final detections of one image (``vmap`` adds ``[B, ...]``), ``K = detections_per_img`` rows
    by descending score, padding last (zeros, ``valid`` False): ``boxes`` ``[K, 4]`` float32
    ``(x1, y1, x2, y2)`` absolute pixels of the network input; ``scores`` ``[K]`` float32 class
    probability; ``classes`` ``[K]`` int32 0-based; ``valid`` ``[K]`` bool.
    """

    boxes: jax.Array
    scores: jax.Array
    classes: jax.Array
    valid: jax.Array


def example_mask(targets: Mapping[str, jax.Array], batch: int) -> jax.Array:
    """``[B]`` bool real examples of a padded batch (``targets["example_mask"]`` > 0; all real when
    absent). Padded examples add nothing to any sum or count.
    """
    return jnp.asarray(targets.get("example_mask", jnp.ones((batch,))), jnp.float32) > 0


@runtime_checkable
class HostEvaluator(Protocol):
    """Accumulates predictions on the host and summarises them (e.g. COCO AP)."""

    def add(self, batch: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]) -> None:
        """One batch (with its ``mask`` of real examples) and the model's outputs for it."""

    def summarize(self) -> dict[str, float]:
        """Metric name -> value over everything added."""

    def write(self, directory: str) -> None:
        """Saves the predictions (e.g. COCO results files) in ``directory``."""


@runtime_checkable
class Task(Protocol):
    """A task module: data, preprocessing, model, loss and pictures for one kind of model.

    ``config``: the run's ``ConfigDict``; ``batch``: arrays with a leading batch axis (``image``
    uint8 ``[B, H, W, 3]``, the task's targets, ``mask``).
    """

    PRIMARY_METRIC: ClassVar[str]
    """Summary key a sweep's best member is chosen by (on the evaluation split)."""
    PRIMARY_METRIC_HIGHER_IS_BETTER: ClassVar[bool]
    EVALUATES_ON_HOST: ClassVar[bool]
    """True: :class:`HostEvaluatedTask`; False: :class:`DeviceEvaluatedTask`."""

    def datasets(self, config: Config) -> dict[str, Any]:
        """Split name ("train", "validation", ...) -> random-access source of examples."""

    def make_preprocess(self, config: Config) -> Callable[[Mapping[str, Any]], dict]:
        """One raw example -> dict of fixed-shape NumPy arrays."""

    def create_model(self, config: Config, bn_axis_name: str | None) -> Any:
        """The Flax module (BatchNorm statistics averaged over ``bn_axis_name`` in training)."""

    def init_variables(self, model: Any, rng: jax.Array, batch: Batch) -> dict[str, Any]:
        """The model's initial variables from a one-example batch."""

    def make_loss_fn(self, model: Any, config: Config) -> LossFn:
        """The per-device loss function."""

    def loss_weights(self, config: Config) -> dict[str, float]:
        """Loss term name -> weight in the objective."""

    def draw_predictions(self, model: Any, params: Any, batch_stats: Any, batch: Batch,
                         config: Config) -> list[Any]:
        """One ``PIL.Image`` per example of ``batch``: the model's predictions drawn on it."""


@runtime_checkable
class DeviceEvaluatedTask(Task, Protocol):
    """Evaluation by additive statistics summed on the devices (mIoU, accuracy, PCK)."""

    def make_eval_fn(self, model: Any, config: Config) -> EvalFn:
        """Per-device statistics of one batch (padding examples masked out)."""

    def eval_accumulator(self, config: Config) -> dict[str, jax.Array]:
        """Zeros shaped like :meth:`make_eval_fn`'s statistics."""

    def summarize(self, accumulator: Mapping[str, Any], config: Config) -> dict[str, float]:
        """Metric name -> value from the summed statistics."""


@runtime_checkable
class HostEvaluatedTask(Task, Protocol):
    """Evaluation on the host from per-example predictions (COCO AP)."""

    def make_predict_fn(self, model: Any, config: Config) -> PredictFn:
        """Per-example outputs of one batch."""

    def host_evaluator(self, config: Config) -> HostEvaluator:
        """A fresh evaluator for one evaluation pass."""
