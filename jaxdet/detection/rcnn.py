"""R-CNN (Girshick et al., 2014) on given (Selective Search) proposals: one CNN pass per proposal.

Each proposal is cut from the IMAGE and warped to an ``rcnn_crop_size`` square
(:func:`warp_crops`), run through the ``backbone`` ResNet (all stages, global average pooled)
and two linear heads: ``C + 1`` scores and class-specific deltas (weights 10, 10, 5, 5).
Unlike the paper (for a like-for-like comparison with Fast R-CNN): trained end to end with
softmax + box regression (no SVMs), RoIs sampled as in Fast R-CNN; training runs the
``roi_batch_size_per_image`` sampled crops, test all ``P`` proposals (no chunking).

Contract: that of :class:`jaxdet.detection.fast_rcnn.FastRCNN` (call, train and test dicts).
``images`` ``[B, H, W, 3]`` float in [0, 1]; boxes float32 ``(x1, y1, x2, y2)`` absolute pixels.

Parameters: ``body`` (:mod:`jaxdet.models.resnet`), ``box_predictor``
(:class:`~jaxdet.detection.roi_heads.FastRCNNPredictor`: ``cls_score``, ``bbox_pred``).
BatchNorm statistics in training include the crops of padded RoI slots.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from jaxdet import core, ops
from jaxdet.detection import fast_rcnn, roi_heads
from jaxdet.detection.fast_rcnn import ClassicSpec
from jaxdet.models import resnet

LOSS_TERMS = fast_rcnn.LOSS_TERMS

__all__ = ["LOSS_TERMS", "RCNN", "create_model", "warp_crops"]


def warp_crops(images: jax.Array, boxes: jax.Array, size: int,
               context: float = 0.0) -> jax.Array:
    """Warp each box to a ``size x size`` crop.

    Args:
      images: ``[B, H, W, C]`` float. boxes: ``[B, R, 4]`` float32 ``(x1, y1, x2, y2)`` pixels.
      size: static output side.
      context: fraction of box width/height added on each side first; outside samples read
        :func:`jaxdet.ops.roi_align`'s border-clamped values (zero beyond one pixel).

    Returns ``[B, R, size, size, C]`` float32 (bilinear, 2 x 2 samples per pixel, aspect ratio not
    kept); no gradient to the boxes.
    """
    b = jax.lax.stop_gradient(jnp.asarray(boxes, jnp.float32))
    if context:
        pad = jnp.concatenate([b[..., 2:] - b[..., :2]] * 2, axis=-1) * context
        b = b + pad * jnp.asarray([-1.0, -1.0, 1.0, 1.0], jnp.float32)
    warp = lambda im, bx: ops.roi_align(  # noqa: E731
        im.astype(jnp.float32), bx, (size, size), spatial_scale=1.0, sampling_ratio=2,
        aligned=True)
    return jax.vmap(warp)(images, b)


class RCNN(nn.Module):
    """See the module docstring. ``spec``: :class:`~jaxdet.detection.fast_rcnn.ClassicSpec`
    (``roi_feature``, ``roi.output_size``, ``roi.representation_size`` unused); ``backbone``: config
    section for :func:`jaxdet.models.resnet.create_resnet`, run on the crops; ``bn_axis_name``,
    ``dtype`` as in :class:`~jaxdet.detection.fast_rcnn.FastRCNN`.
    """

    spec: ClassicSpec
    backbone: Mapping[str, Any]
    bn_axis_name: str | None = None
    dtype: Any = None

    def setup(self) -> None:
        self.body = resnet.create_resnet(self.backbone, bn_axis_name=self.bn_axis_name)
        self.box_predictor = roi_heads.FastRCNNPredictor(
            self.spec.num_classes, dtype=self.dtype or jnp.float32)

    def _head(self, images: jax.Array, rois: jax.Array,
              train: bool) -> tuple[jax.Array, jax.Array]:
        """``[B, R, 4]`` RoIs -> ``([B, R, C + 1], [B, R, 4 (C + 1)])``, one CNN pass per RoI."""
        s = self.spec.rcnn_crop_size
        crops = warp_crops(images, rois, s, self.spec.rcnn_context)  # [B, R, s, s, 3]
        b, r = rois.shape[:2]
        features = self.body(crops.reshape(b * r, s, s, crops.shape[-1]).astype(
            self.dtype or jnp.float32), train=train)
        last = features[max(features, key=lambda k: int(k[1:]))]  # deepest stage
        pooled = jnp.mean(last, axis=(1, 2))  # [B * R, Ch]
        logits, deltas = self.box_predictor(pooled)
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
        spec = self.spec
        image_hw = roi_heads.default_image_hw(images, image_hw)
        proposals = jax.lax.stop_gradient(jnp.asarray(proposals, jnp.float32))
        proposal_valid = jnp.asarray(proposal_valid, bool)
        if not train:
            logits, deltas = self._head(images, proposals, train=False)
            return fast_rcnn.inference_outputs(spec, logits, deltas, proposals, proposal_valid,
                                               image_hw)
        batch = images.shape[0]
        rng = fast_rcnn.check_train_args(targets, rng, batch, "RCNN")
        assert targets is not None
        real = core.example_mask(targets, batch)
        t = roi_heads.sample_rois(spec.roi, proposals, proposal_valid, targets, rng, real)
        logits, deltas = self._head(images, t.rois, train=True)
        return fast_rcnn.train_outputs(spec, logits, deltas, t, proposals, proposal_valid,
                                       targets, real)


def create_model(config: ml_collections.ConfigDict, num_classes: int,
                 bn_axis_name: str | None = None) -> RCNN:
    """:class:`RCNN` from ``config.model`` (backbone fields + ``ClassicSpec``)."""
    model = config.model
    return RCNN(
        spec=ClassicSpec.from_config(model, num_classes),
        **resnet.backbone_fields(model, bn_axis_name),
    )
