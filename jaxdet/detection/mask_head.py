"""Mask R-CNN mask branch, static shapes (torchvision's ``MaskRCNNHeads`` / ``MaskRCNNPredictor`` /
``maskrcnn_loss``; detectron2's mask targets).

Gt masks travel cropped to their gt boxes: :func:`crop_gt_masks` (NumPy, task preprocessing)
RoIAligns each full-resolution mask over its own box (``aligned=True``, sampling 2) to
``M x M`` stored as uint8 ``round(255 * v)``; a batch holds ``[B, G, M, M]`` uint8. A positive
RoI's target (:func:`mask_targets`) is RoIAlign (``aligned=True``, sampling 2, ``>= 0.5``) of
its matched gt's crop, the RoI mapped into the crop frame ``u = (x - gx1) * M / (gx2 - gx1)``
(``v`` alike) and the crop zero-padded by one pixel (outside the gt box reads 0). Equals
detectron2's full-resolution ``crop_and_resize`` up to resampling of the crop; use
``M >= 2 * 28``.

Boxes ``[..., 4]`` float32 ``(x1, y1, x2, y2)`` absolute pixels; mask logits
``[..., 28, 28, C + 1]`` NHWC, channel 0 unused background, ``c + 1`` class ``c``
(torchvision's ``mask_fcn_logits`` layout).

Parameter names (torchvision >= 0.13): ``mask_head/{i}`` <- ``roi_heads.mask_head.{i}.0``
(older ``mask_fcn{i+1}``), ``mask_predictor/conv5_mask``, ``mask_predictor/mask_fcn_logits``.
Conv ``kernel = weight.transpose(2, 3, 1, 0)``; ``conv5_mask`` (``ConvTranspose2d``, weight
``[in, out, 2, 2]``) -> Flax ``ConvTranspose`` kernel ``weight[:, :, ::-1, ::-1].transpose(2, 3,
0, 1)`` (Flax does not flip the kernel).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxdet.core import Detections
from jaxdet.detection.roi_heads import RoiPool, RoiSpec, RoiTargets
from jaxdet.models.conv import BlockConvTranspose, SameConv
from jaxdet.ops.masks import crop_and_resize_masks

__all__ = [
    "LOSS_TERMS",
    "MaskBranch",
    "MASK_SLOT_CHUNK",
    "MaskSpec",
    "MaskRCNNHeads",
    "MaskRCNNPredictor",
    "class_mask_loss",
    "crop_gt_mask_values",
    "crop_gt_masks",
    "mask_loss",
    "mask_targets",
    "select_class",
    "training_head_slots",
]

_KAIMING_FAN_OUT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
MASK_SLOT_CHUNK = 32
"""Training packs the batch's positive mask slots first and runs the head on chunks of this many
slots per image of the batch (:func:`training_head_slots`)."""
LOSS_TERMS = ("roi_mask",)


@dataclasses.dataclass(frozen=True)
class MaskSpec:
    """``config.model.mask`` (the section present: the mask branch is on). ``width``: channels of
    the 4 convs and the transpose conv; ``roi_output_size``: RoIAlign bins (the logits are twice
    that); ``rois_per_image``: leading sampled-RoI slots (foreground first) sent to the head in
    training, 0 for the sampler's whole foreground budget.
    """

    width: int = 256
    roi_output_size: int = 14
    rois_per_image: int = 0


# ---------------------------------------------------------------------------------------------
# Ground truth in the memory-aware form (host, NumPy)
# ---------------------------------------------------------------------------------------------


def _align_samples(start: float, length: float, size: int, out: int, sampling_ratio: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """RoIAlign (aligned) samples along one axis with the reference kernel's clamping:
    ``(index, weight)`` ``[out, 2 g]`` (``g = sampling_ratio``): lower then upper neighbour pixel
    and bilinear weight (0 outside the image).
    """
    bin_size = length / out
    p = np.arange(out, dtype=np.float64)[:, None]
    i = np.arange(sampling_ratio, dtype=np.float64)[None, :]
    coord = (start - 0.5) + p * bin_size + (i + 0.5) * bin_size / sampling_ratio  # [out, g]
    inside = (coord >= -1.0) & (coord <= size)
    c = np.maximum(coord, 0.0)
    low = np.floor(np.minimum(c, size)).astype(np.int64)
    edge = low >= size - 1
    low = np.where(edge, size - 1, low)
    high = np.where(edge, size - 1, low + 1)
    c = np.where(edge, low, c)
    frac = c - low
    return (np.concatenate([low, high], axis=1),
            np.concatenate([np.where(inside, 1.0 - frac, 0.0), np.where(inside, frac, 0.0)],
                           axis=1))


def _align_weights(start: float, length: float, size: int, out: int, sampling_ratio: int
                   ) -> np.ndarray:
    """``[out, size]`` RoIAlign (aligned) weights along one axis, averaged over samples per bin."""
    index, weight = _align_samples(start, length, size, out, sampling_ratio)
    w = np.zeros((out, size), np.float64)
    np.add.at(w, (np.broadcast_to(np.arange(out)[:, None], index.shape), index), weight)
    return w / sampling_ratio


def crop_gt_masks(masks: np.ndarray, boxes: np.ndarray, size: int, sampling_ratio: int = 2
                  ) -> np.ndarray:
    """Each instance mask ``[N, H, W]`` (0/1, any numeric/bool dtype) RoIAligned over its box
    ``[N, 4]`` (pixels) to ``[N, M, M]`` uint8 ``round(255 * v)``, ``M = size``
    (:func:`crop_gt_mask_values`).
    """
    values = crop_gt_mask_values(masks, boxes, size, sampling_ratio)
    return np.clip(np.rint(values * 255.0), 0, 255).astype(np.uint8)


def crop_gt_mask_values(masks: np.ndarray, boxes: np.ndarray, size: int,
                        sampling_ratio: int = 2) -> np.ndarray:
    """float64 ``[N, M, M]`` values of :func:`crop_gt_masks` before rounding: ``Wy @ mask @ Wx.T``
    computed sparsely (cost ~ box width, not image area).
    """
    masks = np.asarray(masks)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    n = len(boxes)
    out = np.zeros((n, size, size), np.float64)
    if n == 0:
        return out
    h, w = masks.shape[1:3]
    for k in range(n):
        x1, y1, x2, y2 = boxes[k]
        iy, wy = _align_samples(y1, y2 - y1, h, size, sampling_ratio)
        ix, wx = _align_samples(x1, x2 - x1, w, size, sampling_ratio)
        used = ix[wx != 0]
        if not used.size or not wy.any():
            continue
        xa, xb = int(used.min()), int(used.max()) + 1
        rows = masks[k][iy.reshape(-1), xa:xb].astype(np.float64)  # [M * 2g, bw]
        a = np.einsum("pgc,pg->pc", rows.reshape(size, -1, xb - xa), wy)  # [M, bw]
        cols = a[:, np.clip(ix - xa, 0, xb - xa - 1)]  # [M, M, 2g]
        out[k] = np.einsum("pqg,qg->pq", cols, wx) / sampling_ratio**2
    return out


# ---------------------------------------------------------------------------------------------
# Targets and loss (device, static shapes)
# ---------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("mask_size", "sampling_ratio"))
def mask_targets(
    rois: jax.Array,
    matched_gt: jax.Array,
    gt_boxes: jax.Array,
    gt_masks: jax.Array,
    mask_size: int = 28,
    sampling_ratio: int = 2,
) -> jax.Array:
    """Binary targets ``[R, S, S]`` float32 of ONE image's RoIs ``[R, 4]`` from the box-cropped gt
    (module docstring): ``matched_gt`` ``[R]`` (``-1``: target 0), ``gt_boxes`` ``[G, 4]`` the
    crops were taken over, ``gt_masks`` ``[G, M, M]`` uint8 of :func:`crop_gt_masks`.
    """
    m = gt_masks.shape[-1]
    fg = matched_gt >= 0
    idx = jnp.maximum(matched_gt, 0)
    g = gt_boxes.astype(jnp.float32)[idx]  # [R, 4]
    gw = jnp.maximum(g[:, 2] - g[:, 0], 1e-3)
    gh = jnp.maximum(g[:, 3] - g[:, 1], 1e-3)
    r = rois.astype(jnp.float32)
    # RoI in the padded crop's pixel frame (one zero pixel on each side: + 1).
    mapped = jnp.stack([(r[:, 0] - g[:, 0]) * m / gw, (r[:, 1] - g[:, 1]) * m / gh,
                        (r[:, 2] - g[:, 0]) * m / gw, (r[:, 3] - g[:, 1]) * m / gh], -1) + 1.0
    mapped = jnp.where(fg[:, None], mapped, 0.0)
    crops = jnp.pad(gt_masks.astype(jnp.float32) / 255.0, ((0, 0), (1, 1), (1, 1)))
    t = crop_and_resize_masks(crops, mapped, idx, mask_size=mask_size,
                              sampling_ratio=sampling_ratio, threshold=0.5)
    return jax.lax.stop_gradient(jnp.where(fg[:, None, None], t, 0.0))


def select_class(mask_logits: jax.Array, labels: jax.Array) -> jax.Array:
    """``[..., S, S, C + 1]`` per-class logits, ``[...]`` int channel -> ``[..., S, S]``."""
    idx = jnp.asarray(labels, jnp.int32)[..., None, None, None]
    return jnp.take_along_axis(mask_logits, idx, axis=-1)[..., 0]


def mask_loss(
    mask_logits: jax.Array, labels: jax.Array, targets: jax.Array, positive: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """torchvision's ``maskrcnn_loss`` as float32 ``(sum, count)``: pixel-mean BCE of each positive
    RoI's gt-class logits, summed, and the number of positives. ``mask_logits``
    ``[..., R, S, S, C + 1]``, ``labels`` ``[..., R]`` channel ``c + 1``, ``targets``
    ``[..., R, S, S]``, ``positive`` ``[..., R]``; others add nothing, zero gradient.
    """
    x = select_class(mask_logits.astype(jnp.float32), jnp.where(positive, labels, 0))
    return class_mask_loss(x, targets, positive)


def class_mask_loss(
    class_logits: jax.Array, targets: jax.Array, positive: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """:func:`mask_loss` of logits already selected per RoI (``[..., R, S, S]``, e.g.
    :class:`MaskRCNNPredictor` called with ``classes``)."""
    x = jnp.where(positive[..., None, None], class_logits.astype(jnp.float32), 0.0)
    t = targets.astype(jnp.float32)
    bce = jnp.maximum(x, 0.0) - x * t + jnp.log1p(jnp.exp(-jnp.abs(x)))
    per_roi = jnp.mean(bce, axis=(-2, -1))
    return (jnp.sum(jnp.where(positive, per_roi, 0.0)),
            jnp.sum(positive, dtype=jnp.float32))


def _training_chunk(batch: int, slots_per_image: int) -> int:
    chunk = MASK_SLOT_CHUNK * batch
    return chunk if (batch * slots_per_image) % chunk == 0 else batch * slots_per_image


def training_head_slots(num_positive: int, batch: int, slots_per_image: int) -> int:
    """RoI slots :meth:`MaskBranch.loss_terms` runs the head on for a batch of ``batch`` images
    with ``slots_per_image`` slots (:attr:`MaskBranch.num_rois`) holding ``num_positive``
    positives: whole chunks of ``MASK_SLOT_CHUNK * batch`` slots (one chunk of all slots where
    they do not divide evenly), at least one. Under ``vmap`` (e.g. a one-program sweep) and at
    initialisation every chunk runs: ``batch * slots_per_image``."""
    chunk = _training_chunk(batch, slots_per_image)
    return chunk * max(1, -(-num_positive // chunk))


# ---------------------------------------------------------------------------------------------
# Head
# ---------------------------------------------------------------------------------------------


class MaskRCNNHeads(nn.Module):
    """torchvision's ``MaskRCNNHeads``: ``num_convs`` x (3x3 conv ``width`` + ReLU), submodules
    ``"0"`` .. ``"3"``. Call: ``[R, 14, 14, Ch]`` NHWC -> ``[R, 14, 14, width]`` in ``dtype``.
    """

    width: int = 256
    num_convs: int = 4
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i in range(self.num_convs):
            x = SameConv(self.width, (3, 3), dtype=self.dtype, kernel_init=_KAIMING_FAN_OUT,
                         name=str(i))(x)
            x = nn.relu(x)
        return x


class MaskRCNNPredictor(nn.Module):
    """torchvision's ``MaskRCNNPredictor``: ``conv5_mask`` (2x2 stride-2 transpose conv,
    ``width``, :class:`~jaxdet.models.conv.BlockConvTranspose`) + ReLU, ``mask_fcn_logits``
    (1x1, ``C + 1``).

    Call: ``[R, 14, 14, Ch]`` -> ``[R, 28, 28, C + 1]`` float32 logits; with ``classes``
    (``[R]`` int channels) -> ``[R, 28, 28]``, each RoI's channel only (``mask_fcn_logits``
    evaluated for that channel: ``1 / (C + 1)`` of its work, the same values).
    """

    num_classes: int
    width: int = 256
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, classes: jax.Array | None = None) -> jax.Array:
        x = BlockConvTranspose(self.width, 2, dtype=self.dtype, kernel_init=_KAIMING_FAN_OUT,
                               name="conv5_mask")(x)
        x = nn.relu(x)
        logits = SameConv(self.num_classes + 1, (1, 1), dtype=self.dtype,
                          kernel_init=_KAIMING_FAN_OUT, name="mask_fcn_logits")
        if classes is None or self.is_initializing():
            x = logits(x).astype(jnp.float32)
            return x if classes is None else select_class(x, classes)
        params = logits.variables["params"]
        idx = jnp.asarray(classes, jnp.int32)
        kernel = params["kernel"][0, 0].T[idx].astype(self.dtype)  # [R, Ch]
        x = jnp.einsum("rhwc,rc->rhw", x.astype(self.dtype), kernel,
                       preferred_element_type=jnp.float32)
        return (x + params["bias"][idx][:, None, None].astype(self.dtype)).astype(jnp.float32)


class MaskBranch(nn.Module):
    """Mask R-CNN's branch of a two-stage detector. Its parameters sit at the detector's root
    (``mask_head``, ``mask_predictor``) when the detector shares its scope
    (:func:`flax.linen.share_scope`). ``roi``: the detector's RoI sampling (foreground budget,
    sampling ratio of the targets; ``DetectorSpec`` checks ``spec.rois_per_image`` against its
    ``batch_size_per_image``).
    """

    spec: MaskSpec
    num_classes: int
    roi: RoiSpec
    dtype: Any = jnp.float32

    def setup(self) -> None:
        self.mask_head = MaskRCNNHeads(self.spec.width, dtype=self.dtype)
        self.mask_predictor = MaskRCNNPredictor(self.num_classes, self.spec.width,
                                                dtype=self.dtype)

    @property
    def num_rois(self) -> int:
        """RoI slots per image sent to the head in training."""
        return self.spec.rois_per_image or self.roi.num_foreground_slots

    def logits(self, pool: RoiPool, rois: jax.Array, classes: jax.Array | None = None,
               image_index: jax.Array | None = None) -> jax.Array:
        """``[B, R, 4]`` RoIs -> ``[B, R, 28, 28, C + 1]`` float32 mask logits; with ``classes``
        (``[B, R]`` int channels) -> ``[B, R, 28, 28]``, each RoI's channel only. With
        ``image_index`` (``[K]``): RoIs ``[K, 4]`` and ``classes`` ``[K]`` -> ``[K, ...]``."""
        lead = rois.shape[:-1]
        pooled = pool(rois, self.spec.roi_output_size, image_index)
        x = self.mask_head(pooled.reshape((-1,) + pooled.shape[len(lead):]))
        x = self.mask_predictor(x, None if classes is None else classes.reshape(-1))
        return x.reshape(lead + x.shape[1:])

    def loss_terms(self, pool: RoiPool, roi_t: RoiTargets,
                   targets: Mapping[str, jax.Array]) -> dict[str, tuple[jax.Array, jax.Array]]:
        """``{"roi_mask": (sum, count)}`` over the first :attr:`num_rois` sampled RoI slots of
        each image; ``targets`` needs ``gt_boxes`` and ``gt_masks`` ``[B, G, M, M]`` uint8 (else
        ValueError). The batch's positives are packed first and the head runs on chunks of
        ``MASK_SLOT_CHUNK * B`` of them (:func:`training_head_slots`); a chunk without a positive
        costs nothing (where not vmapped).
        """
        if "gt_masks" not in targets:
            raise ValueError("the mask branch's training needs targets['gt_masks'] [B, G, M, M] "
                             "uint8 (gt masks cropped to their boxes)")
        n = self.num_rois
        b = roi_t.rois.shape[0]
        labels, matched = roi_t.labels[:, :n], roi_t.matched_gt[:, :n]
        positive = (roi_t.valid[:, :n] & (labels > 0) & (matched >= 0)).reshape(-1)
        # Positives of all images first (stable: image-major): the head's work follows the
        # batch's positives as torchvision's does, whatever their split among the images.
        order = jnp.argsort(~positive, stable=True)
        image = (order // n).astype(jnp.int32)
        rois = roi_t.rois[:, :n].reshape(-1, 4)[order]
        labels = labels.reshape(-1)[order]
        positive = positive[order]
        num_gt = targets["gt_boxes"].shape[1]
        gt_index = jnp.where(positive, image * num_gt + matched.reshape(-1)[order], -1)
        gt_boxes = targets["gt_boxes"].reshape(b * num_gt, 4)
        gt_masks = targets["gt_masks"].reshape(b * num_gt, *targets["gt_masks"].shape[2:])
        size = 2 * self.spec.roi_output_size

        def chunk_loss(branch, rois, labels, gt_index, positive, image):
            mask_t = mask_targets(rois, gt_index, gt_boxes, gt_masks, mask_size=size,
                                  sampling_ratio=branch.roi.sampling_ratio)
            logits = branch.logits(pool, rois, jnp.where(positive, labels, 0), image)
            return class_mask_loss(logits, mask_t, positive)

        def no_positives(branch, *_):
            return jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32)

        total_slots, chunk = b * n, _training_chunk(b, n)
        total, count = jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32)
        for start in range(0, total_slots, chunk):
            part = tuple(a[start:start + chunk] for a in (rois, labels, gt_index, positive,
                                                           image))
            if start == 0 or self.is_initializing():
                s, c = chunk_loss(self, *part)
            else:
                # Rematerialised: a skipped chunk would otherwise fill the computed branch's
                # activations (saved for the backward pass) with zeros.
                s, c = nn.cond(jnp.any(part[3]), nn.checkpoint(chunk_loss), no_positives,
                               self, *part)
            total, count = total + s, count + c
        return {"roi_mask": (total, count)}

    def predict(self, pool: RoiPool, detections: Detections) -> dict[str, jax.Array]:
        """``{"masks": [B, K, 28, 28]}`` float32 probabilities of each detection's class."""
        logits = self.logits(pool, detections.boxes, detections.classes + 1)
        return {"masks": jax.nn.sigmoid(logits)}
