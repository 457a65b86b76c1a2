"""Fast R-CNN on given (Selective Search) proposals, static shapes.

Girshick's 2015 detector between R-CNN (:mod:`jaxdet.detection.rcnn`) and Faster R-CNN
(:mod:`jaxdet.detection.faster_rcnn`): ONE backbone pass per image, then every proposal is
RoI-max-pooled (:func:`jaxdet.ops.roi_pool`, 7 x 7) from the shared feature map and
classified / regressed by the box head of :mod:`jaxdet.detection.roi_heads`. The proposals
come from outside (:mod:`jaxdet.data.proposals`), so there is no RPN and no RPN loss.

Contract (that of :class:`~jaxdet.detection.faster_rcnn.FasterRCNN` plus the proposals):

* ``model.apply(v, images, image_hw, train=True, targets=gt, rng=keys, proposals=p,
  proposal_valid=pv, mutable=...)`` (``keys``: one ``jax.random`` key per image, ``[B]``)
  returns ``{"terms": {"roi_classifier": (sum, count), "roi_box": (sum, count)},
  "recall": (hit, total), "num_foreground_rois": (sum, count)}``: the two Fast R-CNN losses
  as ``(sum, count)`` pairs (global mean ``sum / max(count, 1)``), the number of gt boxes
  some of the first ``recall_top_n`` given proposals covers at IoU >= 0.5 and the number of
  gt boxes, and the foreground RoIs over the number of real examples.
* ``model.apply(v, images, image_hw, train=False, proposals=p, proposal_valid=pv)`` returns
  the :class:`~jaxdet.core.Detections` fields (``boxes [B, K, 4]``,
  ``scores [B, K]``, ``classes [B, K]`` int32, ``valid [B, K]``; sorted by score, padding
  last) plus ``proposals [B, P, 4]`` and ``proposal_valid [B, P]`` (the inputs, float32 /
  bool).

Shapes and formats. ``images`` ``[B, H, W, 3]`` float in [0, 1]; ``image_hw`` ``[B, 2]``
(optional, default ``(H, W)``) the unpadded ``(height, width)`` detections are clipped to;
``proposals`` ``[B, P, 4]`` float32 ``(x1, y1, x2, y2)`` absolute pixels of the network input,
``proposal_valid`` ``[B, P]`` bool (False on padding); ``targets``: ``gt_boxes`` ``[B, G, 4]``
float32 ``(x1, y1, x2, y2)`` absolute pixels, ``gt_labels`` ``[B, G]`` int32 0-based classes,
``gt_valid`` ``[B, G]`` bool, optionally ``example_mask`` ``[B]`` (0 for padded examples,
which then add nothing to any sum or count). Boxes stay float32 whatever the compute dtype.

Training: gt boxes appended to the proposals, matched at 0.5, ``roi_batch_size_per_image``
RoIs sampled at ``roi_positive_fraction`` (:func:`~jaxdet.detection.roi_heads.roi_targets`;
the paper's background range ``[0.1, 0.5)`` is replaced by torchvision's ``[0, 0.5)``), RoI
pool, ``fc6``/``fc7``, scores and class-specific deltas (weights 10, 10, 5, 5),
:func:`~jaxdet.detection.roi_heads.roi_losses`. Inference: all ``P`` proposals, then
:func:`~jaxdet.detection.roi_heads.postprocess_detections`.

Feature map: ``roi_feature="C3"`` (stride 8) by default, ``"C4"`` (stride 16, the paper's
conv5 / torchvision's C4 setting) selectable. At 128 x 128 with 10-70 px objects the C4 map is
8 x 8, and RoIPool snaps every box to whole cells: a 16 px grid moves a 10-30 px box's edges
by up to 8 px (measured on the 768 gt boxes of the 200 validation scenes: mean IoU 0.40
between a box and the cells RoIPool reads at stride 16, 0.58 at stride 8), so neighbouring
proposals of a small object pool the same cells and box regression has to undo the
quantisation. C3 halves that error at 4x the
map size (16 x 16), still cheap here. ``stem="small"`` changes the strides (read from
:meth:`jaxdet.models.resnet.ResNet.output_strides`).

Parameter names: ``body`` (the ResNet, truncated after the chosen stage), ``roi_heads``
(:class:`~jaxdet.detection.roi_heads.BoxHead`: ``box_head/fc6``, ``box_head/fc7``,
``box_predictor/cls_score``, ``box_predictor/bbox_pred``).
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
from jaxdet.detection import roi_heads, rpn
from jaxdet.models import resnet

SumCount = tuple[jax.Array, jax.Array]
LOSS_TERMS = ("roi_classifier", "roi_box")


@dataclasses.dataclass(frozen=True)
class ClassicSpec:
    """Static numbers of R-CNN / Fast R-CNN (from ``config.model``; the ``roi_*``, score and
    NMS fields mean what they mean in :class:`jaxdet.detection.faster_rcnn.DetectorSpec`).

    The defaults are :class:`~jaxdet.detection.faster_rcnn.DetectorSpec`'s (torchvision's), so
    that the three detectors compare with the same RoI sampling and losses; the papers used
    128 RoIs per image (64 in Fast R-CNN), smooth-L1 beta 1 and a background IoU range of
    ``[0.1, 0.5)``.
    ``roi_feature``: ``"C3"`` or ``"C4"``, the map Fast R-CNN pools from (module docstring).
    ``rcnn_crop_size``: side of R-CNN's warped crops (pixels). ``rcnn_context``: R-CNN's context
    padding, the fraction of the box's width/height added on each side before warping (the
    paper's 16 px at 227 is about 0.08); 0 warps the box itself.
    """

    num_classes: int
    roi_feature: str = "C3"
    roi_output_size: int = 7
    roi_fg_iou: float = 0.5
    roi_bg_iou: float = 0.5
    roi_batch_size_per_image: int = 512
    roi_positive_fraction: float = 0.25
    roi_smooth_l1_beta: float = 1.0 / 9
    representation_size: int = 1024
    box_weights: tuple[float, float, float, float] = roi_heads.BOX_CODER_WEIGHTS
    score_thresh: float = 0.05
    nms_thresh: float = 0.5
    detections_per_img: int = 100
    recall_top_n: int = 100
    rcnn_crop_size: int = 32
    rcnn_context: float = 0.0

    def __post_init__(self) -> None:
        if self.roi_feature not in ("C3", "C4"):
            raise ValueError(f"model.roi_feature={self.roi_feature!r}; expected 'C3' or 'C4'")
        if self.rcnn_crop_size < 1 or self.rcnn_context < 0:
            raise ValueError("model.rcnn_crop_size must be >= 1 and rcnn_context >= 0")

    @classmethod
    def from_config(cls, model: Mapping[str, Any], num_classes: int) -> ClassicSpec:
        """The spec from a flat ``config.model`` section (unknown keys are ignored)."""
        return config_files.dataclass_from_section(cls, model, num_classes=num_classes)


def sample_rois(spec: ClassicSpec, proposals: jax.Array, proposal_valid: jax.Array,
                targets: Mapping[str, jax.Array], rng: jax.Array,
                real: jax.Array) -> roi_heads.RoiTargets:
    """Vmapped :func:`~jaxdet.detection.roi_heads.roi_targets`: ``[B, S, ...]`` RoIs
    (``S = roi_batch_size_per_image``); padded examples' RoIs are marked invalid."""
    t = jax.vmap(lambda p, v, g, lab, gv, k: roi_heads.roi_targets(
        p, v, g, lab, gv, k, fg_iou=spec.roi_fg_iou, bg_iou=spec.roi_bg_iou,
        batch_size_per_image=spec.roi_batch_size_per_image,
        positive_fraction=spec.roi_positive_fraction, weights=spec.box_weights))(
        proposals, proposal_valid, targets["gt_boxes"], targets["gt_labels"],
        targets["gt_valid"], rng)
    return t._replace(valid=t.valid & real[:, None])


def proposal_recall(spec: ClassicSpec, proposals: jax.Array, proposal_valid: jax.Array,
                    targets: Mapping[str, jax.Array], real: jax.Array) -> SumCount:
    """``(hit, total)`` float32: gt boxes of real examples covered at IoU >= 0.5 by one of the
    first ``recall_top_n`` proposals (:func:`jaxdet.detection.rpn.proposal_recall`)."""
    n = spec.recall_top_n
    gt_valid = jnp.asarray(targets["gt_valid"], bool) & real[:, None]
    hit, total = jax.vmap(rpn.proposal_recall)(
        proposals[:, :n], proposal_valid[:, :n], targets["gt_boxes"], gt_valid)
    return jnp.sum(hit).astype(jnp.float32), jnp.sum(total).astype(jnp.float32)


def train_outputs(spec: ClassicSpec, logits: jax.Array, deltas: jax.Array,
                  t: roi_heads.RoiTargets, proposals: jax.Array, proposal_valid: jax.Array,
                  targets: Mapping[str, jax.Array], real: jax.Array) -> dict[str, Any]:
    """The training dict of the module docstring from ``[B, S, C + 1]`` logits and
    ``[B, S, 4 (C + 1)]`` deltas of the sampled RoIs ``t``."""
    losses = roi_heads.roi_losses(logits, deltas, t, smooth_l1_beta=spec.roi_smooth_l1_beta)
    return {
        "terms": {"roi_classifier": losses["loss_classifier"], "roi_box": losses["loss_box_reg"]},
        "recall": proposal_recall(spec, proposals, proposal_valid, targets, real),
        "num_foreground_rois": (jnp.sum((t.labels > 0) & t.valid, dtype=jnp.float32),
                                jnp.sum(real, dtype=jnp.float32)),
    }


def inference_outputs(spec: ClassicSpec, logits: jax.Array, deltas: jax.Array,
                 proposals: jax.Array, proposal_valid: jax.Array,
                 image_hw: jax.Array) -> dict[str, Any]:
    """Vmapped :func:`~jaxdet.detection.roi_heads.postprocess_detections` over ``[B, P, ...]``
    head outputs, as a dict of the Detections fields plus the proposals."""
    post = lambda lg, dl, p, v, hw: roi_heads.postprocess_detections(  # noqa: E731
        lg, dl, p, v, hw, weights=spec.box_weights, score_thresh=spec.score_thresh,
        nms_thresh=spec.nms_thresh, detections_per_img=spec.detections_per_img)
    dets = jax.vmap(post)(logits, deltas, proposals, proposal_valid, image_hw)
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
    """See the module docstring.

    Attributes:
      spec: the static numbers (:class:`ClassicSpec`).
      backbone: model config section for :func:`jaxdet.models.resnet.create_resnet` (the
        stages after ``spec.roi_feature`` are dropped).
      bn_axis_name: mapped axis for cross-device BatchNorm (training), or None.
      dtype: compute dtype of the convolutions and FC layers (None: float32).
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
            self.spec.num_classes, self.spec.representation_size,
            dtype=self.dtype or jnp.float32)

    def _head(self, features: jax.Array, rois: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``[B, h, w, Ch]`` map, ``[B, R, 4]`` RoIs -> ``([B, R, C + 1], [B, R, 4 (C + 1)])``."""
        s = self.spec.roi_output_size
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
        t = sample_rois(self.spec, proposals, proposal_valid, targets, rng, real)
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
