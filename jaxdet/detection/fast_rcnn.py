"""Fast R-CNN (Girshick, 2015) on given (Selective Search) proposals, static shapes.

One backbone pass per image; proposals are RoI-max-pooled (:func:`jaxdet.ops.roi_pool`) from
the ``roi_feature`` map (``"C3"`` stride 8, default; ``"C4"`` stride 16, the paper's) into
:class:`~jaxdet.detection.roi_heads.BoxHead`. No RPN: proposals come from
:mod:`jaxdet.data.proposals`.

Call contract of :class:`~jaxdet.detection.faster_rcnn.FasterRCNN` (``images``, ``image_hw``,
``targets`` with optional ``example_mask``, float32 boxes) plus keyword ``proposals``
``[B, P, 4]`` float32 ``(x1, y1, x2, y2)`` absolute pixels and ``proposal_valid`` ``[B, P]``:

* ``train=True`` (``rng`` ``[B]``): ``{"terms": {"roi_classifier", "roi_box"}, "recall",
  "num_foreground_rois"}``, all ``(sum, count)``; recall over the first ``recall_top_n``
  proposals at IoU 0.5.
* ``train=False``: :class:`~jaxdet.core.Detections` fields ``[B, K]`` plus the input
  ``proposals`` / ``proposal_valid``.

Training samples RoIs with :func:`~jaxdet.detection.roi_heads.roi_targets` (gt appended;
torchvision's background ``[0, 0.5)``, not the paper's ``[0.1, 0.5)``); inference scores all
``P`` proposals. Parameters: ``body`` (ResNet truncated after ``roi_feature``), ``roi_heads``
(``box_head/fc6``, ``box_head/fc7``, ``box_predictor/cls_score``, ``box_predictor/bbox_pred``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from jaxdet import config_files, core, ops
from jaxdet.core import ConfigError
from jaxdet.detection import faster_rcnn, roi_heads, rpn
from jaxdet.detection.select import PostprocessSpec, postprocess_from_config
from jaxdet.models import resnet

SumCount = tuple[jax.Array, jax.Array]
LOSS_TERMS = ("roi_classifier", "roi_box")


@dataclasses.dataclass(frozen=True)
class ClassicSpec:
    """Static numbers of R-CNN / Fast R-CNN, from ``config.model``: ``roi`` and ``postprocess``
    sections as in :class:`~jaxdet.detection.faster_rcnn.DetectorSpec` (RoI sampling, box
    head, losses, detection selection; R-CNN reads only the sampling, losses and box weights),
    plus ``roi_feature`` (``"C3"`` or ``"C4"``, Fast R-CNN's pooled map), ``rcnn_crop_size``
    (side of R-CNN's warped crops, pixels), ``rcnn_context`` (fraction of the box's width /
    height added on each side before warping; the paper's 16 px at 227 is ~0.08) and
    ``recall_top_n``. ConfigError on another ``roi_feature``, ``rcnn_crop_size < 1`` or
    ``rcnn_context < 0``.
    """

    num_classes: int
    roi_feature: str = "C3"
    rcnn_crop_size: int = 32
    rcnn_context: float = 0.0
    recall_top_n: int = 100
    roi: roi_heads.RoiSpec = roi_heads.RoiSpec()
    postprocess: PostprocessSpec = PostprocessSpec()

    def __post_init__(self) -> None:
        if self.roi_feature not in ("C3", "C4"):
            raise ConfigError(f"config.model.roi_feature={self.roi_feature!r}; expected 'C3' or "
                              f"'C4'")
        if self.rcnn_crop_size < 1 or self.rcnn_context < 0:
            raise ConfigError("config.model.rcnn_crop_size must be >= 1 and rcnn_context >= 0")

    @classmethod
    def from_config(cls, model: Mapping[str, Any], num_classes: int) -> ClassicSpec:
        """The spec from ``config.model`` (its ``roi`` / ``postprocess`` sections and the fields
        above; other keys are the backbone's). ConfigError on a field outside its section."""
        faster_rcnn.check_no_flat_fields(model, keep=("roi_feature",))
        return config_files.dataclass_from_section(
            cls, model, num_classes=num_classes,
            roi=config_files.spec_from_section(roi_heads.RoiSpec, model.get("roi"), "model.roi"),
            postprocess=postprocess_from_config(model))


def proposal_recall(spec: ClassicSpec, proposals: jax.Array, proposal_valid: jax.Array,
                    targets: Mapping[str, jax.Array], real: jax.Array) -> SumCount:
    """``(hit, total)`` float32: gt of real examples covered at IoU >= 0.5 by one of the first
    ``recall_top_n`` proposals (:func:`jaxdet.detection.rpn.proposal_recall`).
    """
    gt_valid = jnp.asarray(targets["gt_valid"], bool) & real[:, None]
    hit, total = rpn.batch_proposal_recall(proposals, proposal_valid, targets["gt_boxes"],
                                           gt_valid, spec.recall_top_n)
    return jnp.sum(hit).astype(jnp.float32), jnp.sum(total).astype(jnp.float32)


def train_outputs(spec: ClassicSpec, logits: jax.Array, deltas: jax.Array,
                  t: roi_heads.RoiTargets, proposals: jax.Array, proposal_valid: jax.Array,
                  targets: Mapping[str, jax.Array], real: jax.Array) -> dict[str, Any]:
    """The training dict (module docstring) from ``[B, S, C + 1]`` logits and ``[B, S, 4 (C + 1)]``
    deltas of the sampled RoIs ``t``.
    """
    losses = roi_heads.roi_losses(logits, deltas, t, smooth_l1_beta=spec.roi.smooth_l1_beta)
    return {
        "terms": {"roi_classifier": losses["loss_classifier"], "roi_box": losses["loss_box_reg"]},
        "recall": proposal_recall(spec, proposals, proposal_valid, targets, real),
        "num_foreground_rois": (jnp.sum((t.labels > 0) & t.valid, dtype=jnp.float32),
                                jnp.sum(real, dtype=jnp.float32)),
    }


def inference_outputs(spec: ClassicSpec, logits: jax.Array, deltas: jax.Array,
                      proposals: jax.Array, proposal_valid: jax.Array,
                      image_hw: jax.Array) -> dict[str, Any]:
    """:func:`~jaxdet.detection.roi_heads.detect` over ``[B, P, ...]`` head outputs: the
    Detections fields plus the proposals, as a dict.
    """
    dets = roi_heads.detect(spec.roi, spec.postprocess, logits, deltas, proposals,
                            proposal_valid, image_hw)
    out: dict[str, Any] = dets._asdict()
    out["proposals"], out["proposal_valid"] = proposals, proposal_valid
    return out


def check_train_args(targets: Any, rng: jax.Array | None, batch: int, name: str) -> jax.Array:
    if targets is None or rng is None:
        raise ValueError(f"{name}(train=True) needs targets and rng")
    if rng.shape != (batch,):
        raise ValueError(f"rng must hold one key per image, shape ({batch},), got {rng.shape}")
    return rng


class FastRCNN(nn.Module):
    """See the module docstring. ``backbone``: config section for
    :func:`jaxdet.models.resnet.create_resnet` (stages after ``roi_feature`` dropped);
    ``bn_axis_name``: cross-device BatchNorm axis or None; ``dtype``: compute dtype (None: float32).
    """

    spec: ClassicSpec
    backbone: Mapping[str, Any]
    bn_axis_name: str | None = None
    dtype: Any = None

    def setup(self) -> None:
        stages = {"C3": 2, "C4": 3}[self.spec.roi_feature]
        config = resnet.truncated_config(self.backbone, stages)
        self.body = resnet.create_resnet(config, bn_axis_name=self.bn_axis_name)
        self.stride = self.body.output_strides()[self.spec.roi_feature]
        self.roi_heads = roi_heads.BoxHead(
            self.spec.num_classes, self.spec.roi.representation_size,
            dtype=self.dtype or jnp.float32)

    def _head(self, features: jax.Array, rois: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``[B, h, w, Ch]`` map, ``[B, R, 4]`` RoIs -> ``([B, R, C + 1], [B, R, 4 (C + 1)])``."""
        s = self.spec.roi.output_size
        pooled = jax.vmap(lambda f, b: ops.roi_pool(f, b, (s, s), 1.0 / self.stride))(
            features, rois)
        b, r = rois.shape[:2]
        logits, deltas = self.roi_heads(pooled.reshape((b * r,) + pooled.shape[2:]))
        return logits.reshape(b, r, -1), deltas.reshape(b, r, -1)

    def __call__(
        self,
        images: jax.Array,
        image_hw: jax.Array | None = None,
        *,
        train: bool,
        targets: Mapping[str, jax.Array] | None = None,
        rng: jax.Array | None = None,
        proposals: jax.Array,
        proposal_valid: jax.Array,
    ) -> dict[str, Any]:
        image_hw = roi_heads.default_image_hw(images, image_hw)
        proposals = jax.lax.stop_gradient(jnp.asarray(proposals, jnp.float32))
        proposal_valid = jnp.asarray(proposal_valid, bool)
        batch = images.shape[0]
        if train:
            rng = check_train_args(targets, rng, batch, "FastRCNN")
        features = self.body(images.astype(self.dtype or jnp.float32),
                             train=train)[self.spec.roi_feature]
        if not train:
            logits, deltas = self._head(features, proposals)
            return inference_outputs(self.spec, logits, deltas, proposals, proposal_valid, image_hw)
        assert targets is not None and rng is not None
        real = core.example_mask(targets, batch)
        t = roi_heads.sample_rois(self.spec.roi, proposals, proposal_valid, targets, rng, real)
        logits, deltas = self._head(features, t.rois)
        return train_outputs(self.spec, logits, deltas, t, proposals, proposal_valid, targets,
                             real)


def create_model(config: ml_collections.ConfigDict, num_classes: int,
                 bn_axis_name: str | None = None) -> FastRCNN:
    """:class:`FastRCNN` from ``config.model`` (backbone fields + :class:`ClassicSpec`)."""
    model = config.model
    return FastRCNN(
        spec=ClassicSpec.from_config(model, num_classes),
        **resnet.backbone_fields(model, bn_axis_name),
    )
