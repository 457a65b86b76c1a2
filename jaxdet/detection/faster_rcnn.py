"""Faster R-CNN (ResNet + FPN or single-level C4, RPN, RoIAlign box head), static shapes.

:class:`FasterRCNN` is torchvision's ``GeneralizedRCNN`` in one ``apply``:

* ``apply(v, images, image_hw, train=True, targets=gt, rng=keys, mutable=...)`` (``keys``
  ``[B]``) -> ``{"terms": {name: (sum, count)}, "recall": (hit, total),
  "num_foreground_rois": (sum, count)}``; terms ``rpn_objectness``, ``rpn_box``,
  ``roi_classifier``, ``roi_box`` (+ ``roi_mask``, ``roi_keypoint``);
* ``train=False`` -> :class:`~jaxdet.core.Detections` fields ``[B, K]`` plus ``proposals`` /
  ``proposal_valid`` (+ ``masks`` ``[B, K, 28, 28]`` class probabilities; ``keypoints``
  ``[B, K, num_keypoints, 3]`` ``(x, y, score)`` pixels, zeros off ``keypoint_class``, and
  ``keypoint_scores`` ``[B, K]``).

``images`` ``[B, H, W, 3]`` float32 in [0, 1], padded; ``image_hw`` ``[B, 2]`` unpadded
``(height, width)`` (default padded size; outputs clipped to it); ``targets``: ``gt_boxes``
``[B, G, 4]`` float32 ``(x1, y1, x2, y2)`` absolute pixels, ``gt_labels`` int32 0-based,
``gt_valid``, optional ``example_mask`` ``[B]`` (0 adds nothing), ``gt_masks`` ``[B, G, M, M]``
uint8 box crops (``mask_head``), ``gt_keypoints`` ``[B, G, K, 3]`` float32 ``(x, y, v)``
(``keypoint_head``). Box math is float32 whatever the compute dtype.

torchvision names: ``body`` <- ``backbone.body``, ``fpn`` <- ``backbone.fpn``, ``rpn`` <-
``rpn.head``, ``roi_heads`` (``box_head/fc6``, ``fc7``, ``box_predictor/*``), ``mask_head``
/ ``mask_predictor`` (:mod:`~jaxdet.detection.mask_head`), ``keypoint_head`` /
``keypoint_predictor`` (:mod:`~jaxdet.detection.keypoint_head`).
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
from jaxdet.detection import keypoint_head as keypoint_head_lib
from jaxdet.detection import mask_head as mask_head_lib
from jaxdet.detection import roi_heads, rpn
from jaxdet.models import fpn as fpn_lib
from jaxdet.models import resnet

SumCount = tuple[jax.Array, jax.Array]
LOSS_TERMS = ("rpn_objectness", "rpn_box", "roi_classifier", "roi_box")
MASK_LOSS_TERMS = ("roi_mask",)
KEYPOINT_LOSS_TERMS = ("roi_keypoint",)


def loss_terms_for(model: Mapping[str, Any], num_classes: int) -> tuple[str, ...]:
    """The loss terms of the detector configured by ``model`` (optional branches add theirs)."""
    del num_classes
    return (LOSS_TERMS + (MASK_LOSS_TERMS if model.get("mask_head", False) else ())
            + (KEYPOINT_LOSS_TERMS if model.get("keypoint_head", False) else ()))


@dataclasses.dataclass(frozen=True)
class DetectorSpec:
    """Every static number of the detector, from ``config.model`` (meanings and torchvision's COCO
    defaults: ``configs/faster_rcnn_shapes.py``). Raises ValueError on inconsistent fields.
    """

    num_classes: int
    levels: str = "fpn"  # "fpn" (P2-P6, RoIAlign over P2-P5) or "c4" (one stride-16 level)
    fpn_channels: int = 256
    anchor_sizes: tuple[tuple[float, ...], ...] = ((32,), (64,), (128,), (256,), (512,))
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    rpn_fg_iou: float = 0.7
    rpn_bg_iou: float = 0.3
    rpn_batch_size_per_image: int = 256
    rpn_positive_fraction: float = 0.5
    rpn_pre_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_train: int = 2000
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_test: int = 1000
    rpn_nms_thresh: float = 0.7
    rpn_min_size: float = 1e-3
    rpn_smooth_l1_beta: float = 1.0 / 9
    roi_fg_iou: float = 0.5
    roi_bg_iou: float = 0.5
    roi_batch_size_per_image: int = 512
    roi_positive_fraction: float = 0.25
    roi_output_size: int = 7
    roi_sampling_ratio: int = 2
    # RoIAlign's half-pixel offset: True (detectron2's ROIAlignV2) or False (torchvision's
    # MultiScaleRoIAlign; set it with torchvision's weights, configs/faster_rcnn_coco.py)
    roi_aligned: bool = True
    roi_canonical_size: float = 224.0
    roi_canonical_level: int = 4
    roi_smooth_l1_beta: float = 1.0 / 9
    representation_size: int = 1024
    box_weights: tuple[float, float, float, float] = roi_heads.BOX_CODER_WEIGHTS
    score_thresh: float = 0.05
    nms_thresh: float = 0.5
    detections_per_img: int = 100
    recall_top_n: int = 100  # proposals counted by the recall statistic (AR@100, IoU 0.5)
    # Mask branch (Mask R-CNN), off by default.
    mask_head: bool = False
    mask_head_width: int = 256  # channels of the 4 convs and the transpose conv
    mask_roi_output_size: int = 14  # RoIAlign bins; the logits are twice that (28)
    mask_rois_per_image: int = 0  # leading RoI slots sent to the head in training; 0: all the
    # sampler's foreground slots, int(roi_batch_size_per_image * roi_positive_fraction)
    # Keypoint branch (Keypoint R-CNN), off by default.
    keypoint_head: bool = False
    keypoint_head_width: int = 512  # channels of the convs
    keypoint_head_convs: int = 8
    keypoint_roi_output_size: int = 14  # RoIAlign bins P; heatmaps are 4P (56)
    num_keypoints: int = 17
    keypoint_class: int = 0  # 0-based class whose RoIs get keypoints (COCO person: 0)
    keypoint_rois_per_image: int = 0  # person-positive RoI budget in training; 0: as mask
    keypoint_detections_per_img: int = 0  # detections decoded at inference; 0: all
    keypoint_decode_window: int = 32  # heatmaps_to_keypoints' exact search block (px)
    keypoint_roi_scale: float = 1.0  # keypoint RoIs scaled about their centres (1: torchvision)
    keypoint_target: str = "cell"  # "cell" (torchvision) or "bilinear" (sub-cell targets)
    keypoint_decode: str = "bicubic"  # "bicubic" (torchvision) or "local_mean" (of bilinear)
    keypoint_rescore: bool = False  # keypoint_scores = box score x mean keypoint confidence
    keypoint_flip_test: bool = False  # average the heatmaps of the image and its mirror
    keypoint_flip_pairs: tuple[tuple[int, int], ...] = keypoint_head_lib.COCO_FLIP_PAIRS

    def __post_init__(self) -> None:
        if self.levels not in ("fpn", "c4"):
            raise ConfigError(f"model.levels={self.levels!r}; expected 'fpn' or 'c4'")
        want = 5 if self.levels == "fpn" else 1
        if len(self.anchor_sizes) != want:
            raise ConfigError(
                f"model.anchor_sizes needs {want} entries (one per level) for levels="
                f"{self.levels!r}, got {self.anchor_sizes}")
        if self.keypoint_target not in keypoint_head_lib.KEYPOINT_TARGETS:
            raise ConfigError(f"model.keypoint_target={self.keypoint_target!r}; expected one "
                             f"of {keypoint_head_lib.KEYPOINT_TARGETS}")
        if self.keypoint_decode not in keypoint_head_lib.KEYPOINT_DECODES:
            raise ConfigError(f"model.keypoint_decode={self.keypoint_decode!r}; expected one "
                             f"of {keypoint_head_lib.KEYPOINT_DECODES}")
        if any(not 0 <= k < self.num_keypoints for pair in self.keypoint_flip_pairs
               for k in pair):
            raise ConfigError(f"model.keypoint_flip_pairs={self.keypoint_flip_pairs}; "
                             f"expected pairs of keypoint indices < {self.num_keypoints}")
        if self.mask_rois_per_image < 0 or self.mask_rois_per_image > \
                self.roi_batch_size_per_image:
            raise ConfigError(f"model.mask_rois_per_image={self.mask_rois_per_image}; expected "
                             f"0 (all foreground slots) .. {self.roi_batch_size_per_image}")

    @property
    def num_anchors(self) -> int:
        return len(self.anchor_sizes[0]) * len(self.aspect_ratios)

    @property
    def num_keypoint_rois(self) -> int:
        """Person-positive RoI slots per image sent to the keypoint head in training."""
        return min(self.keypoint_rois_per_image or max(
            int(self.roi_batch_size_per_image * self.roi_positive_fraction), 1),
            self.roi_batch_size_per_image)

    @property
    def num_keypoint_detections(self) -> int:
        """Detections per image decoded by the keypoint head at inference."""
        return min(self.keypoint_detections_per_img or self.detections_per_img,
                   self.detections_per_img)

    @property
    def num_mask_rois(self) -> int:
        """RoI slots per image sent to the mask head in training."""
        return self.mask_rois_per_image or max(
            int(self.roi_batch_size_per_image * self.roi_positive_fraction), 1)

    @classmethod
    def from_config(cls, model: Mapping[str, Any], num_classes: int) -> DetectorSpec:
        """The spec from a flat ``config.model`` section (unknown keys are ignored)."""
        return config_files.dataclass_from_section(cls, model, num_classes=num_classes)


def _scale_boxes(boxes: jax.Array, scale: float) -> jax.Array:
    """``[..., 4]`` ``(x1, y1, x2, y2)`` scaled about their centres by static ``scale``."""
    if scale == 1.0:
        return boxes
    centre = (boxes[..., :2] + boxes[..., 2:]) / 2
    half = (boxes[..., 2:] - boxes[..., :2]) * (scale / 2)
    return jnp.concatenate([centre - half, centre + half], axis=-1)


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
        backbone = dict(self.backbone)
        if self.spec.levels == "c4":  # ResNet up to layer3 (stride 16): C2..C4
            backbone = resnet.truncated_config(backbone, 3)
        self.body = resnet.create_resnet(backbone, bn_axis_name=self.bn_axis_name)
        if self.spec.levels == "fpn":
            self.fpn = fpn_lib.FPN(self.spec.fpn_channels, dtype=self.dtype)
        self.rpn = rpn.RPNHead(self.spec.num_anchors, dtype=self.dtype or jnp.float32)
        self.roi_heads = roi_heads.BoxHead(
            self.spec.num_classes, self.spec.representation_size,
            dtype=self.dtype or jnp.float32)
        if self.spec.mask_head:
            dt = self.dtype or jnp.float32
            self.mask_head = mask_head_lib.MaskRCNNHeads(self.spec.mask_head_width, dtype=dt)
            self.mask_predictor = mask_head_lib.MaskRCNNPredictor(
                self.spec.num_classes, self.spec.mask_head_width, dtype=dt)
        if self.spec.keypoint_head:
            dt = self.dtype or jnp.float32
            self.keypoint_head = keypoint_head_lib.KeypointRCNNHeads(
                self.spec.keypoint_head_width, self.spec.keypoint_head_convs, dtype=dt)
            self.keypoint_predictor = keypoint_head_lib.KeypointRCNNPredictor(
                self.spec.num_keypoints, dtype=dt)

    def _features(self, images: jax.Array, train: bool) -> list[jax.Array]:
        c = self.body(images, train=train)
        if self.spec.levels == "c4":
            return [c["C4"]]
        p = self.fpn(c)
        return [p[f"P{k}"] for k in feature_levels(self.spec)]

    def _anchors(self, features: list[jax.Array], image_size: tuple[int, int]) -> list[jax.Array]:
        sizes = [f.shape[1:3] for f in features]
        # torchvision: stride = image size // feature size, per axis
        strides = [(image_size[0] // h, image_size[1] // w) for h, w in sizes]
        return ops.generate_anchors(
            sizes, strides, self.spec.anchor_sizes,
            [self.spec.aspect_ratios] * len(sizes))

    def _pool(self, features: list[jax.Array], rois: jax.Array,
              output_size: int | None = None) -> jax.Array:
        """``[B, R, 4]`` RoIs -> ``[B, R, s, s, C]`` RoIAlign (default ``s = roi_output_size``)."""
        s = self.spec
        size = output_size or s.roi_output_size
        if s.levels == "c4":
            one = lambda f, b: ops.roi_align(  # noqa: E731
                f, b, (size,) * 2, spatial_scale=1.0 / 16,
                sampling_ratio=s.roi_sampling_ratio, aligned=s.roi_aligned)
            return jax.vmap(one)(features[0], rois)
        fn = lambda fs, b: ops.multilevel_roi_align(  # noqa: E731
            fs, b, (size,) * 2, s.roi_sampling_ratio,
            canonical_size=s.roi_canonical_size, canonical_level=s.roi_canonical_level,
            min_level=2, max_level=5, aligned=s.roi_aligned)
        return jax.vmap(fn)(features[:4], rois)

    def _box_head(self, features, rois):
        b, r = rois.shape[:2]
        pooled = self._pool(features, rois)
        logits, deltas = self.roi_heads(pooled.reshape((b * r,) + pooled.shape[2:]))
        return logits.reshape(b, r, -1), deltas.reshape(b, r, -1)

    def _mask_logits(self, features, rois):
        """``[B, R, 4]`` RoIs -> ``[B, R, 28, 28, C + 1]`` float32 mask logits."""
        b, r = rois.shape[:2]
        pooled = self._pool(features, rois, self.spec.mask_roi_output_size)
        x = self.mask_predictor(self.mask_head(pooled.reshape((b * r,) + pooled.shape[2:])))
        return x.reshape((b, r) + x.shape[1:])

    def _mask_loss(self, features, roi_t: roi_heads.RoiTargets, targets) -> SumCount:
        """``roi_mask`` over the first ``num_mask_rois`` RoI slots (foreground first)."""
        if "gt_masks" not in targets:
            raise ValueError("FasterRCNN(mask_head=True) training needs targets['gt_masks'] "
                             "[B, G, M, M] uint8 (gt masks cropped to their boxes)")
        n = self.spec.num_mask_rois
        rois, labels = roi_t.rois[:, :n], roi_t.labels[:, :n]
        matched = roi_t.matched_gt[:, :n]
        positive = roi_t.valid[:, :n] & (labels > 0) & (matched >= 0)
        size = 2 * self.spec.mask_roi_output_size
        mask_t = jax.vmap(lambda r, m, g, gm: mask_head_lib.mask_targets(
            r, m, g, gm, mask_size=size, sampling_ratio=self.spec.roi_sampling_ratio))(
            rois, jnp.where(positive, matched, -1), targets["gt_boxes"], targets["gt_masks"])
        logits = self._mask_logits(features, rois)
        return mask_head_lib.mask_loss(logits, labels, mask_t, positive)

    def _keypoint_logits(self, features, rois):
        """``[B, R, 4]`` RoIs -> ``[B, R, 4P, 4P, num_keypoints]`` float32 heatmap logits."""
        b, r = rois.shape[:2]
        pooled = self._pool(features, rois, self.spec.keypoint_roi_output_size)
        x = self.keypoint_predictor(
            self.keypoint_head(pooled.reshape((b * r,) + pooled.shape[2:])))
        return x.reshape((b, r) + x.shape[1:])

    def _keypoint_loss(self, features, roi_t: roi_heads.RoiTargets, targets) -> SumCount:
        """``roi_keypoint`` over up to ``num_keypoint_rois`` person-positive RoIs per image."""
        if "gt_keypoints" not in targets:
            raise ValueError("FasterRCNN(keypoint_head=True) training needs "
                             "targets['gt_keypoints'] [B, G, K, 3] float32 (x, y, v)")
        s = self.spec
        rois, matched, _ = jax.vmap(lambda r, lab, m, v: keypoint_head_lib.select_person_rois(
            r, lab, m, v, s.keypoint_class, s.num_keypoint_rois))(
            roi_t.rois, roi_t.labels, roi_t.matched_gt, roi_t.valid)
        rois = _scale_boxes(rois, s.keypoint_roi_scale)
        size = 4 * s.keypoint_roi_output_size
        cells, weights, kp_valid = jax.vmap(lambda r, m, g: keypoint_head_lib.keypoint_targets(
            r, m, g, size, s.keypoint_target))(rois, matched, targets["gt_keypoints"])
        logits = self._keypoint_logits(features, rois)
        return keypoint_head_lib.keypoint_loss(logits, cells, weights, kp_valid)

    def _keypoint_heatmaps(self, features, flipped_features, rois, image_width: int
                           ) -> jax.Array:
        """``[B, R, 4P, 4P, K]`` heatmap logits of ``[B, R, 4]`` RoIs; given the flipped images'
        features (padded width ``image_width``), averaged with the mirrored RoIs' heatmaps there,
        mapped back (``unflip_heatmaps``).
        """
        logits = self._keypoint_logits(features, rois)
        if flipped_features is None:
            return logits
        w = jnp.float32(image_width)
        mirrored = jnp.stack([w - rois[..., 2], rois[..., 1], w - rois[..., 0], rois[..., 3]],
                             axis=-1)
        flipped = keypoint_head_lib.unflip_heatmaps(
            self._keypoint_logits(flipped_features, mirrored), self.spec.keypoint_flip_pairs)
        return (logits + flipped) / 2

    def _keypoints(self, features, dets, flipped_features=None, image_width: int = 0
                   ) -> tuple[jax.Array, jax.Array]:
        """``([B, D, num_keypoints, 3] (x, y, score), [B, D] keypoint_scores)`` of the first
        ``num_keypoint_detections`` detections of the keypoint class (zeros elsewhere); scores are
        box scores (times mean keypoint confidence with ``keypoint_rescore``).
        """
        s = self.spec
        n = s.num_keypoint_detections
        person = dets.valid & (dets.classes == s.keypoint_class)
        order = jnp.argsort(~person, axis=1, stable=True)[:, :n]  # [B, n]
        rois = _scale_boxes(jnp.take_along_axis(dets.boxes, order[..., None], axis=1),
                            s.keypoint_roi_scale)
        logits = self._keypoint_heatmaps(features, flipped_features, rois, image_width)
        decode = lambda lg, r: keypoint_head_lib.decode_keypoints(  # noqa: E731
            lg, r, window=s.keypoint_decode_window, method=s.keypoint_decode)
        kept = jnp.take_along_axis(person, order, axis=1)  # [B, n]
        kps = jnp.where(kept[..., None, None], jax.vmap(decode)(logits, rois), 0.0)
        scatter = jax.vmap(lambda o, i, v: o.at[i].set(v))
        out = scatter(jnp.zeros(dets.boxes.shape[:2] + kps.shape[2:], jnp.float32), order, kps)
        scores = dets.scores.astype(jnp.float32)
        if s.keypoint_rescore:
            conf = jnp.where(kept, keypoint_head_lib.keypoint_confidence(logits), 0.0)  # [B, n]
            scores = scores * scatter(jnp.zeros_like(scores), order, conf)
        return out, jnp.where(person, scores, 0.0)

    def _proposals(self, objectness, deltas, anchors, image_hw, train: bool):
        s = self.spec
        pre = s.rpn_pre_nms_top_n_train if train else s.rpn_pre_nms_top_n_test
        post = s.rpn_post_nms_top_n_train if train else s.rpn_post_nms_top_n_test

        def one(obj, dl, hw):
            return rpn.generate_proposals(
                obj, dl, anchors, hw, pre_nms_top_n=pre, post_nms_top_n=post,
                nms_thresh=s.rpn_nms_thresh, min_size=s.rpn_min_size)

        boxes, scores, valid = jax.vmap(one)(objectness, deltas, image_hw)
        return jax.lax.stop_gradient(boxes), scores, valid

    def _recall(self, proposals, valid, targets) -> SumCount:
        n = self.spec.recall_top_n
        hit, total = jax.vmap(rpn.proposal_recall)(
            proposals[:, :n], valid[:, :n], targets["gt_boxes"], targets["gt_valid"])
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
        features = self._features(images, train)
        objectness, deltas = self.rpn(features)
        anchors = self._anchors(features, image_size)
        image_hw = roi_heads.default_image_hw(images, image_hw)
        proposals, _, proposal_valid = self._proposals(
            objectness, deltas, anchors, image_hw, train)
        if not train:
            logits, box_deltas = self._box_head(features, proposals)
            post = lambda lg, dl, p, v, hw: roi_heads.postprocess_detections(  # noqa: E731
                lg, dl, p, v, hw, weights=s.box_weights, score_thresh=s.score_thresh,
                nms_thresh=s.nms_thresh, detections_per_img=s.detections_per_img)
            dets = jax.vmap(post)(logits, box_deltas, proposals, proposal_valid, image_hw)
            out: dict[str, Any] = dets._asdict()
            if s.mask_head:  # the detected class's mask (channel c + 1)
                logits = self._mask_logits(features, dets.boxes)
                out["masks"] = jax.nn.sigmoid(
                    mask_head_lib.select_class(logits, dets.classes + 1))
            if s.keypoint_head:
                flipped = (self._features(jnp.flip(images, axis=2), train)
                           if s.keypoint_flip_test else None)
                out["keypoints"], out["keypoint_scores"] = self._keypoints(
                    features, dets, flipped, image_size[1])
            out["proposals"], out["proposal_valid"] = proposals, proposal_valid
            return out
        if targets is None or rng is None:
            raise ValueError("FasterRCNN(train=True) needs targets and rng")
        batch = images.shape[0]
        if rng.shape != (batch,):
            raise ValueError(f"rng must hold one key per image, shape ({batch},), got {rng.shape}")
        keys = jax.vmap(jax.random.split)(rng)  # [B, 2]: the RPN's and the RoI sampler's
        rpn_keys, roi_keys = keys[:, 0], keys[:, 1]
        all_anchors = jnp.concatenate(anchors)
        rpn_t = jax.vmap(lambda g, v, k: rpn.rpn_targets(
            all_anchors, g, v, k, fg_iou=s.rpn_fg_iou, bg_iou=s.rpn_bg_iou,
            batch_size_per_image=s.rpn_batch_size_per_image,
            positive_fraction=s.rpn_positive_fraction))(
            targets["gt_boxes"], targets["gt_valid"], rpn_keys)
        rpn_l = jax.vmap(lambda o, d, t: rpn.rpn_losses(
            o, d, t, smooth_l1_beta=s.rpn_smooth_l1_beta))(
            jnp.concatenate(objectness, axis=1), jnp.concatenate(deltas, axis=1), rpn_t)
        # Padded examples (example_mask 0) add nothing to any sum or count.
        real = core.example_mask(targets, batch)
        rpn_l = {k: jnp.where(real, v, 0.0) for k, v in rpn_l.items()}
        roi_t = jax.vmap(lambda p, v, g, lab, gv, k: roi_heads.roi_targets(
            p, v, g, lab, gv, k, fg_iou=s.roi_fg_iou, bg_iou=s.roi_bg_iou,
            batch_size_per_image=s.roi_batch_size_per_image,
            positive_fraction=s.roi_positive_fraction, weights=s.box_weights))(
            proposals, proposal_valid, targets["gt_boxes"], targets["gt_labels"],
            targets["gt_valid"], roi_keys)
        roi_t = roi_t._replace(valid=roi_t.valid & real[:, None])
        # For inspection with mutable=["intermediates"] (no-op otherwise); float32 box math.
        self.sow("intermediates", "anchors", all_anchors)
        self.sow("intermediates", "rpn_targets", rpn_t)
        self.sow("intermediates", "roi_targets", roi_t)
        logits, box_deltas = self._box_head(features, roi_t.rois)
        roi_l = roi_heads.roi_losses(
            logits, box_deltas, roi_t, smooth_l1_beta=s.roi_smooth_l1_beta)
        rpn_count = jnp.sum(rpn_l["count"])
        terms = {
            "rpn_objectness": (jnp.sum(rpn_l["objectness_sum"]), rpn_count),
            "rpn_box": (jnp.sum(rpn_l["box_sum"]), rpn_count),
            "roi_classifier": roi_l["loss_classifier"],
            "roi_box": roi_l["loss_box_reg"],
        }
        if s.mask_head:
            terms["roi_mask"] = self._mask_loss(features, roi_t, targets)
        if s.keypoint_head:
            terms["roi_keypoint"] = self._keypoint_loss(features, roi_t, targets)
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
