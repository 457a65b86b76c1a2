"""R-CNN on given (Selective Search) proposals, static shapes: one CNN pass per proposal.

Girshick et al.'s 2014 detector before Fast R-CNN (:mod:`jaxdet.detection.fast_rcnn`): every
proposal's crop is cut from the IMAGE and warped to a fixed ``rcnn_crop_size`` square
(:func:`jaxdet.ops.roi_align` on the image with ``spatial_scale=1``, 2 x 2 bilinear samples
per output pixel, i.e. an anti-aliased bilinear warp that ignores the aspect ratio), then a
small CNN (the ResNet of the ``backbone`` config, all its stages, global average pooled)
and two linear heads give ``C + 1`` class scores and class-specific box deltas (weights
10, 10, 5, 5). The CNN thus runs once per proposal instead of once per image, which is the
point of the comparison. Deviations from the paper, for a like-for-like comparison: the CNN is
trained end to end with softmax and box regression (no SVMs, no separate bounding-box
regressor), on RoIs sampled exactly as in Fast R-CNN
(:func:`~jaxdet.detection.roi_heads.roi_targets`), so only the ``roi_batch_size_per_image``
sampled crops per image go through the CNN in training; at test time all ``P`` proposals do.

Contract: exactly that of :class:`jaxdet.detection.fast_rcnn.FastRCNN` (see its module
docstring for the call, the train dict ``{"terms": {"roi_classifier", "roi_box"}, "recall",
"num_foreground_rois"}`` and the test dict of Detections fields ``[B, K, ...]`` plus
``proposals [B, P, 4]`` / ``proposal_valid [B, P]``). ``images`` ``[B, H, W, 3]`` float in
[0, 1]; every box float32 ``(x1, y1, x2, y2)`` absolute pixels of the network input.

Cost: ``B * S`` (train) or ``B * P`` (test) crops of ``rcnn_crop_size**2 * 3`` values through
the CNN. Memory at test time: a few activations of all crops at once, e.g. 8 images x 500
proposals x (16 x 16 x 64) float32 after a 64-wide ImageNet stem on 32 x 32 crops is 0.26 GB
per tensor, so no chunking is done (the proposals could be split with ``nn.scan`` if ``P``
or the width grows).

Parameter names: ``body`` (the ResNet, :mod:`jaxdet.models.resnet`), ``box_predictor``
(:class:`~jaxdet.detection.roi_heads.FastRCNNPredictor`: ``cls_score``, ``bbox_pred``).
BatchNorm statistics (``norm="batch"``) in training include the crops of padded RoI slots.
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
    """Warp each box of each image to a ``size x size`` crop.

    Args:
      images: ``[B, H, W, C]`` float.
      boxes: ``[B, R, 4]`` float32 ``(x1, y1, x2, y2)`` absolute pixels.
      size: output side in pixels (static).
      context: fraction of the box's width / height added on each side first (R-CNN's
        context padding); samples outside the image read the border-clamped bilinear values
        of :func:`jaxdet.ops.roi_align` (zero beyond one pixel outside).

    Returns:
      ``[B, R, size, size, C]`` float32 (bilinear, 2 x 2 samples averaged per output pixel,
      aspect ratio not kept). No gradient flows to the boxes.
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
    """See the module docstring.

    Attributes:
      spec: the static numbers (:class:`~jaxdet.detection.fast_rcnn.ClassicSpec`;
        ``rcnn_crop_size``, ``rcnn_context`` and the ``roi_*`` sampling, score and NMS fields;
        ``roi_feature``, ``roi_output_size`` and ``representation_size`` are unused).
      backbone: model config section for :func:`jaxdet.models.resnet.create_resnet`, applied to
        the crops (e.g. ``stem="small"`` for 32 x 32 crops).
      bn_axis_name: mapped axis for cross-device BatchNorm (training), or None.
      dtype: compute dtype of the CNN and heads (None: float32).
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
        t = fast_rcnn.sample_rois(spec, proposals, proposal_valid, targets, rng, real)
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
