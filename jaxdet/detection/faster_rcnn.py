"""Faster R-CNN (ResNet + FPN or single-level C4, RPN, RoIAlign box head), static shapes, with
optional RoI branches: Mask R-CNN's (:class:`~jaxdet.detection.mask_head.MaskBranch`) and
Keypoint R-CNN's (:class:`~jaxdet.detection.keypoint_head.KeypointBranch`).

Composition: ``config.model`` holds the backbone's fields, ``levels``, ``fpn_channels`` and one
section per part, each read into that part's spec: ``rpn`` (:class:`~jaxdet.detection.rpn.RPNSpec`),
``roi`` (:class:`~jaxdet.detection.roi_heads.RoiSpec`), ``postprocess``
(:class:`~jaxdet.detection.select.PostprocessSpec`), ``mask`` / ``keypoint`` (present = on).
:class:`FasterRCNN` is torchvision's ``GeneralizedRCNN`` in one ``apply``:

* ``apply(v, images, image_hw, train=True, targets=gt, rng=keys, mutable=...)`` (``keys``
  ``[B]``) -> ``{"terms": {name: (sum, count)}, "recall": (hit, total),
  "num_foreground_rois": (sum, count)}``; terms ``rpn_objectness``, ``rpn_box``,
  ``roi_classifier``, ``roi_box`` (+ ``roi_mask``, ``roi_keypoint``);
* ``train=False`` -> :class:`~jaxdet.core.Detections` fields ``[B, K]`` plus ``proposals`` /
  ``proposal_valid`` (+ ``masks`` ``[B, K, 28, 28]`` class probabilities; ``keypoints``
  ``[B, K, num_keypoints, 3]`` ``(x, y, score)`` pixels, zeros off ``keypoint.class_index``, and
  ``keypoint_scores`` ``[B, K]``).

``images`` ``[B, H, W, 3]`` float32 in [0, 1], padded; ``image_hw`` ``[B, 2]`` unpadded
``(height, width)`` (default padded size; outputs clipped to it); ``targets``: ``gt_boxes``
``[B, G, 4]`` float32 ``(x1, y1, x2, y2)`` absolute pixels, ``gt_labels`` int32 0-based,
``gt_valid``, optional ``example_mask`` ``[B]`` (0 adds nothing), ``gt_masks`` ``[B, G, M, M]``
uint8 box crops (mask branch), ``gt_keypoints`` ``[B, G, K, 3]`` float32 ``(x, y, v)``
(keypoint branch). Box math is float32 whatever the compute dtype.

torchvision names: ``body`` <- ``backbone.body``, ``fpn`` <- ``backbone.fpn``, ``rpn`` <-
``rpn.head``, ``roi_heads`` (``box_head/fc6``, ``fc7``, ``box_predictor/*``), ``mask_head``
/ ``mask_predictor`` (:mod:`~jaxdet.detection.mask_head`), ``keypoint_head`` /
``keypoint_predictor`` (:mod:`~jaxdet.detection.keypoint_head`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from jaxdet import config_files, core, ops
from jaxdet.core import ConfigError
from jaxdet.detection import keypoint_head as keypoint_head_lib
from jaxdet.detection import mask_head as mask_head_lib
from jaxdet.detection import roi_heads, rpn
from jaxdet.detection.select import PostprocessSpec, postprocess_from_config
from jaxdet.models import fpn as fpn_lib
from jaxdet.models import resnet

SumCount = tuple[jax.Array, jax.Array]
LOSS_TERMS = ("rpn_objectness", "rpn_box", "roi_classifier", "roi_box")

#: Flat ``config.model`` keys of earlier versions, now in the sections ``rpn``, ``roi``,
#: ``postprocess``, ``mask`` and ``keypoint``.
_MOVED_PREFIXES = ("rpn_", "roi_", "mask_", "keypoint_")
_MOVED_KEYS = ("anchor_sizes", "aspect_ratios", "representation_size", "box_weights",
               "score_thresh", "nms_thresh", "detections_per_img", "num_keypoints")


def check_no_flat_fields(model: Mapping[str, Any], keep: tuple[str, ...] = ()) -> None:
    """ConfigError naming the first ``config.model`` key (not in ``keep``) that an R-CNN family
    spec now reads from a section (``model.rpn.fg_iou``, not ``model.rpn_fg_iou``)."""
    for key in model:
        if key not in keep and (key.startswith(_MOVED_PREFIXES) or key in _MOVED_KEYS):
            raise ConfigError(
                f"config.model.{key}: the R-CNN fields live in the sections model.rpn, model.roi, "
                f"model.postprocess, model.mask and model.keypoint (e.g. model.rpn.fg_iou, "
                f"model.roi.batch_size_per_image, model.postprocess.score_thresh); see "
                f"configs/faster_rcnn_shapes.py")


def keypoint_class(model: Mapping[str, Any]) -> int:
    """The 0-based class whose detections carry keypoints (``model.keypoint.class_index``; 0
    without a keypoint branch)."""
    return int(model["keypoint"].get("class_index", 0)) if "keypoint" in model else 0


def roi_output_size(model: Mapping[str, Any]) -> int:
    """The box head's RoIAlign bins, ``model.roi.output_size`` (default 7)."""
    return int(model["roi"].get("output_size", 7)) if "roi" in model else 7


def loss_terms_for(model: Mapping[str, Any], num_classes: int) -> tuple[str, ...]:
    """The loss terms of the detector configured by ``model`` (present branches add theirs)."""
    del num_classes
    return (LOSS_TERMS + (mask_head_lib.LOSS_TERMS if "mask" in model else ())
            + (keypoint_head_lib.LOSS_TERMS if "keypoint" in model else ()))


@dataclasses.dataclass(frozen=True)
class DetectorSpec:
    """The detector's static numbers: the parts' specs (``config.model.<section>``) plus
    ``levels`` (``"fpn"``: P2-P6, RoIAlign over P2-P5; ``"c4"``: one stride-16 level),
    ``fpn_channels`` and ``recall_top_n`` (proposals counted by the AR@100 statistic).
    ``mask`` / ``keypoint`` None: that branch is off. ConfigError on inconsistent fields.
    """

    num_classes: int
    levels: str = "fpn"
    fpn_channels: int = 256
    recall_top_n: int = 100
    rpn: rpn.RPNSpec = rpn.RPNSpec()
    roi: roi_heads.RoiSpec = roi_heads.RoiSpec()
    postprocess: PostprocessSpec = PostprocessSpec()
    mask: mask_head_lib.MaskSpec | None = None
    keypoint: keypoint_head_lib.KeypointSpec | None = None

    def __post_init__(self) -> None:
        if self.levels not in ("fpn", "c4"):
            raise ConfigError(f"config.model.levels={self.levels!r}; expected 'fpn' or 'c4'")
        want = 5 if self.levels == "fpn" else 1
        if len(self.rpn.anchor_sizes) != want:
            raise ConfigError(
                f"config.model.rpn.anchor_sizes needs {want} entries (one per level) for levels="
                f"{self.levels!r}, got {self.rpn.anchor_sizes}")
        if self.mask is not None and not (
                0 <= self.mask.rois_per_image <= self.roi.batch_size_per_image):
            raise ConfigError(f"config.model.mask.rois_per_image={self.mask.rois_per_image}; "
                              f"expected 0 (all foreground slots) .. "
                              f"{self.roi.batch_size_per_image}")

    @classmethod
    def from_config(cls, model: Mapping[str, Any], num_classes: int) -> DetectorSpec:
        """The spec from ``config.model``: its ``levels``, ``fpn_channels``, ``recall_top_n`` and
        the sections ``rpn``, ``roi``, ``postprocess``, ``mask``, ``keypoint`` (other keys are the
        backbone's). ConfigError on a field outside its section or unknown inside one.
        """
        check_no_flat_fields(model)
        parts = {
            "rpn": config_files.spec_from_section(rpn.RPNSpec, model.get("rpn"), "model.rpn"),
            "roi": config_files.spec_from_section(roi_heads.RoiSpec, model.get("roi"),
                                                  "model.roi"),
            "postprocess": postprocess_from_config(model),
            "mask": (config_files.spec_from_section(mask_head_lib.MaskSpec, model["mask"],
                                                    "model.mask") if "mask" in model else None),
            "keypoint": (config_files.spec_from_section(
                keypoint_head_lib.KeypointSpec, model["keypoint"], "model.keypoint")
                if "keypoint" in model else None),
        }
        return config_files.dataclass_from_section(cls, model, num_classes=num_classes, **parts)


def feature_levels(spec: DetectorSpec) -> list[int]:
    """Pyramid levels ``k`` (stride ``2**k``) the RPN runs on."""
    return [2, 3, 4, 5, 6] if spec.levels == "fpn" else [4]


class FasterRCNN(nn.Module):
    """See the module docstring. ``backbone``: config section for
    :func:`jaxdet.models.resnet.create_resnet`; ``bn_axis_name``: cross-device BatchNorm axis or
    None; ``dtype``: compute dtype of convolutions and FC layers (None: float32).
    """

    spec: DetectorSpec
    backbone: Mapping[str, Any]
    bn_axis_name: str | None = None
    dtype: Any = None

    def setup(self) -> None:
        s = self.spec
        dtype = self.dtype or jnp.float32
        backbone = dict(self.backbone)
        if s.levels == "c4":  # ResNet up to layer3 (stride 16): C2..C4
            backbone = resnet.truncated_config(backbone, 3)
        self.body = resnet.create_resnet(backbone, bn_axis_name=self.bn_axis_name)
        if s.levels == "fpn":
            self.fpn = fpn_lib.FPN(s.fpn_channels, dtype=self.dtype)
        self.rpn = rpn.RPNHead(s.rpn.num_anchors, dtype=dtype)
        self.roi_heads = roi_heads.BoxHead(s.num_classes, s.roi.representation_size, dtype=dtype)
        # The branches' parameters stay at the root (mask_head/..., keypoint_head/...).
        if s.mask is not None:
            self.mask = mask_head_lib.MaskBranch(s.mask, s.num_classes, s.roi, dtype=dtype)
            nn.share_scope(self, self.mask)
        if s.keypoint is not None:
            self.keypoint = keypoint_head_lib.KeypointBranch(
                s.keypoint, s.roi, s.postprocess.detections_per_img, dtype=dtype)
            nn.share_scope(self, self.keypoint)

    def _branches(self) -> list[Any]:
        """The RoI branches that are on (mask, keypoint)."""
        return [getattr(self, name) for name in ("mask", "keypoint")
                if getattr(self.spec, name) is not None]

    def features(self, images: jax.Array, train: bool) -> list[jax.Array]:
        """``[B, H, W, 3]`` images -> the RPN's maps ``[B, H_l, W_l, C]``: ``[C4]`` or FPN
        ``P2..P6`` (finest first)."""
        c = self.body(images, train=train)
        if self.spec.levels == "c4":
            return [c["C4"]]
        p = self.fpn(c)
        return [p[f"P{k}"] for k in feature_levels(self.spec)]

    def anchors(self, features: list[jax.Array], image_size: tuple[int, int]) -> list[jax.Array]:
        """Per map ``[H_l * W_l * A, 4]`` anchors, ``(x1, y1, x2, y2)`` input pixels."""
        sizes = [f.shape[1:3] for f in features]
        # torchvision: stride = image size // feature size, per axis
        strides = [(image_size[0] // h, image_size[1] // w) for h, w in sizes]
        return ops.generate_anchors(
            sizes, strides, self.spec.rpn.anchor_sizes,
            [self.spec.rpn.aspect_ratios] * len(sizes))

    def pool_rois(self, features: list[jax.Array], rois: jax.Array,
                  output_size: int | None = None,
                  image_index: jax.Array | None = None) -> jax.Array:
        """``[B, R, 4]`` RoIs -> ``[B, R, s, s, C]`` RoIAlign (default ``s = roi.output_size``);
        ``[K, 4]`` RoIs of images ``image_index`` ``[K]`` -> ``[K, s, s, C]``."""
        r = self.spec.roi
        size = output_size or r.output_size
        if self.spec.levels == "c4":
            c4 = functools.partial(ops.roi_align, output_size=(size,) * 2, spatial_scale=1.0 / 16,
                                   sampling_ratio=r.sampling_ratio, aligned=r.aligned)
            if image_index is not None:
                return c4(features[0], rois, image_index=image_index)
            return jax.vmap(c4)(features[0], rois)
        return ops.multilevel_roi_align(
            features[:4], rois, (size,) * 2, r.sampling_ratio,
            canonical_size=r.canonical_size, canonical_level=r.canonical_level,
            min_level=2, max_level=5, aligned=r.aligned, image_index=image_index)

    def _box_head(self, features, rois):
        b, r = rois.shape[:2]
        pooled = self.pool_rois(features, rois)
        logits, deltas = self.roi_heads(pooled.reshape((b * r,) + pooled.shape[2:]))
        return logits.reshape(b, r, -1), deltas.reshape(b, r, -1)

    def _recall(self, proposals, valid, targets) -> SumCount:
        hit, total = rpn.batch_proposal_recall(proposals, valid, targets["gt_boxes"],
                                               targets["gt_valid"], self.spec.recall_top_n)
        return jnp.sum(hit).astype(jnp.float32), jnp.sum(total).astype(jnp.float32)

    def __call__(
        self,
        images: jax.Array,
        image_hw: jax.Array | None = None,
        *,
        train: bool,
        targets: Mapping[str, jax.Array] | None = None,
        rng: jax.Array | None = None,
    ) -> dict[str, Any]:
        s = self.spec
        image_size = images.shape[1:3]
        images = images.astype(self.dtype or jnp.float32)
        features = self.features(images, train)
        pool = functools.partial(self.pool_rois, features)
        objectness, deltas = self.rpn(features)
        anchors = self.anchors(features, image_size)
        image_hw = roi_heads.default_image_hw(images, image_hw)
        proposals, _, proposal_valid = rpn.batch_proposals(
            s.rpn, objectness, deltas, anchors, image_hw, train)
        if not train:
            logits, box_deltas = self._box_head(features, proposals)
            dets = roi_heads.detect(s.roi, s.postprocess, logits, box_deltas, proposals,
                                    proposal_valid, image_hw)
            out: dict[str, Any] = dets._asdict()
            if s.mask is not None:
                out.update(self.mask.predict(pool, dets))
            if s.keypoint is not None:
                mirror_pool = None
                if s.keypoint.flip_test:
                    flipped = self.features(jnp.flip(images, axis=2), train)
                    mirror_pool = functools.partial(self.pool_rois, flipped)
                out.update(self.keypoint.predict(pool, dets, mirror_pool, image_size[1]))
            out["proposals"], out["proposal_valid"] = proposals, proposal_valid
            return out
        if targets is None or rng is None:
            raise ValueError("FasterRCNN(train=True) needs targets and rng")
        batch = images.shape[0]
        if rng.shape != (batch,):
            raise ValueError(f"rng must hold one key per image, shape ({batch},), got {rng.shape}")
        keys = jax.vmap(jax.random.split)(rng)  # [B, 2]: the RPN's and the RoI sampler's
        # Padded examples (example_mask 0) add nothing to any sum or count.
        real = core.example_mask(targets, batch)
        all_anchors = jnp.concatenate(anchors)
        terms, rpn_t = rpn.batch_losses(s.rpn, objectness, deltas, all_anchors, targets,
                                        keys[:, 0], real)
        roi_t = roi_heads.sample_rois(s.roi, proposals, proposal_valid, targets, keys[:, 1], real)
        # For inspection with mutable=["intermediates"] (no-op otherwise); float32 box math.
        self.sow("intermediates", "anchors", all_anchors)
        self.sow("intermediates", "rpn_targets", rpn_t)
        self.sow("intermediates", "roi_targets", roi_t)
        logits, box_deltas = self._box_head(features, roi_t.rois)
        roi_l = roi_heads.roi_losses(
            logits, box_deltas, roi_t, smooth_l1_beta=s.roi.smooth_l1_beta)
        terms["roi_classifier"] = roi_l["loss_classifier"]
        terms["roi_box"] = roi_l["loss_box_reg"]
        for branch in self._branches():
            terms.update(branch.loss_terms(pool, roi_t, targets))
        return {
            "terms": terms,
            "recall": self._recall(proposals, proposal_valid, targets),
            "num_foreground_rois": (jnp.sum((roi_t.labels > 0) & roi_t.valid, dtype=jnp.float32),
                                    jnp.sum(real, dtype=jnp.float32)),
        }


def create_model(config: ml_collections.ConfigDict, num_classes: int,
                 bn_axis_name: str | None = None) -> FasterRCNN:
    """:class:`FasterRCNN` from ``config.model`` (backbone fields + :class:`DetectorSpec`)."""
    model = config.model
    return FasterRCNN(
        spec=DetectorSpec.from_config(model, num_classes),
        **resnet.backbone_fields(model, bn_axis_name),
    )
