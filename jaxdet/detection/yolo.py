"""YOLO (v1): one pass over an S x S grid of cells, sum-squared loss, class-aware NMS.

Redmon et al., "You Only Look Once" (2016), detection without proposals. The
network maps the image to an ``S x S x (B * 5 + C)`` tensor: per cell, ``B`` boxes of five
numbers ``(x, y, sqrt(w), sqrt(h), confidence)`` then ``C`` class probabilities shared by the
cell's boxes. ``S = yolo_grid_size`` and ``B = yolo_boxes_per_cell`` come from the config.

One Flax module, :class:`Yolo`, with :class:`~jaxdet.detection.faster_rcnn.FasterRCNN`'s
contract:

* ``model.apply(v, images, image_hw, train=True, targets=gt, rng=keys, mutable=...)``
  returns ``{"terms": {t: (sum, count) for t in LOSS_TERMS}, "recall": (hit, total),
  "num_foreground_rois": (sum, count)}`` (``rng``: one key per image, ``[B]``, used only by
  the head's dropout, ``yolo_dropout > 0``);
* ``model.apply(v, images, image_hw, train=False)`` returns padded detections
  (:class:`~jaxdet.core.Detections` fields ``boxes`` ``[B, K, 4]``, ``scores``
  ``[B, K]``, ``classes`` ``[B, K]`` int32, ``valid`` ``[B, K]`` bool, sorted by descending
  score, padding last; ``K = detections_per_img``) plus ``"proposals"`` ``[B, P, 4]`` and
  ``"proposal_valid"`` ``[B, P]``: the ``P = S * S * B`` decoded boxes before NMS sorted by
  descending confidence (so the task's AR100@0.5 is the recall of the 100 most confident
  candidates), valid where the box clipped to ``image_hw`` has positive width and height.

Shapes and formats as in :mod:`jaxdet.detection.faster_rcnn`: ``images`` ``[B, H, W, 3]``
float32 in [0, 1] (padded to one static size); ``image_hw`` ``[B, 2]`` unpadded ``(height,
width)`` (default the padded size); ``targets``: ``gt_boxes`` ``[B, G, 4]`` float32 ``(x1, y1,
x2, y2)`` absolute pixels, ``gt_labels`` ``[B, G]`` int32 0-based classes, ``gt_valid``
``[B, G]`` bool, optional ``example_mask`` ``[B]`` (0: padded example, adds nothing to any
sum or count). Boxes, IoUs and losses are float32 whatever the compute dtype.

Parameterisation (:func:`decode_predictions`). The grid covers the padded network input of
``H x W`` pixels; cell ``(i, j)`` (row ``i``, column ``j``, flattened row-major as ``i * S +
j``) spans ``[j * W / S, (j + 1) * W / S) x [i * H / S, (i + 1) * H / S)``. A predictor's
``(x, y)`` is its box centre relative to the cell (in [0, 1]), ``(sqrt(w), sqrt(h))`` the
square roots of its width and height relative to the whole input (in [0, 1]); the box is
``cx = (j + x) W / S``, ``cy = (i + y) H / S``, ``w = sqrt(w)^2 W``, ``h = sqrt(h)^2 H``. The
network's raw outputs go through a sigmoid for these four numbers and the confidence, and a
softmax over the ``C`` class scores (the paper's last layer is linear; squashing into the
targets' ranges is a stability choice, the loss is still sum-squared on these values). Raw
channel layout per cell: predictor ``b``'s five numbers at ``5b .. 5b + 4`` in the order
``x, y, sqrt(w), sqrt(h), confidence``, then the ``C`` class scores at ``5B .. 5B + C - 1``.

Targets (:func:`yolo_targets`, one image, static shapes). A gt box belongs to the cell holding
its centre (``floor(cx * S / W)``, clipped to ``[0, S - 1]``: a centre on a cell border goes to
the right / lower cell). One cell predicts one object (the class probabilities are per cell):
when several valid gts have their centre in the same cell, **the largest by area wins (ties:
the lower gt index)** and the others get no predictor (the grid's recall ceiling; on the
default scenes' validation split that is 2.3 % of the objects with ``S = 8``, 0.5 % with
``S = 16``). In an object's cell the
*responsible* predictor is the one whose current predicted box has the highest IoU with the gt
(ties: the lower predictor index). Regression targets: ``(cx * S / W - j, cy * S / H - i,
sqrt(w_gt / W), sqrt(h_gt / H))``; confidence target the IoU of the responsible predictor's box
with its gt (darknet's ``rescore=1``, the paper's ``Pr(Object) * IOU``; ``yolo_rescore=False``:
1); class target the one-hot of the gt's class. Targets are ``stop_gradient``-ed.

Loss (:func:`yolo_losses`), the paper's five sums, summed over the cells and predictors of an
image and averaged over images (each term's count is the number of real images):

* ``yolo_coord``: responsible predictors' ``(x - x^)^2 + (y - y^)^2 + (sqrt(w) - sqrt(w)^)^2
  + (sqrt(h) - sqrt(h)^)^2`` (weight ``config.loss.yolo_coord_weight``, the paper's
  ``lambda_coord = 5``);
* ``yolo_obj``: responsible predictors' ``(C - C^)^2`` (weight 1);
* ``yolo_noobj``: every other predictor's ``C^2`` (``lambda_noobj = 0.5``);
* ``yolo_class``: per cell with an object, ``sum_c (p(c) - p^(c))^2`` (weight 1).

Test (:func:`postprocess`): each predictor's class-specific score is ``confidence * p(c)``
(``S * S * B * C`` candidates); boxes clipped to ``image_hw``; candidates with score
``> score_thresh`` and sides ``>= min_size`` go through class-aware greedy NMS
(:func:`jaxdet.ops.batched_nms`, suppress IoU ``> nms_thresh``), the best
``detections_per_img`` kept.

Architecture: the ResNet of :mod:`jaxdet.models.resnet` (backbone fields of ``config.model``),
its feature map ``yolo_feature`` (default the last stage), then the head ``yolo_head``:

* ``"conv"``: ``yolo_head_convs`` 3x3 convs of ``yolo_head_channels`` with leaky ReLU (0.1),
  dropout (``yolo_dropout``, training only), then a 1x1 conv to ``B * 5 + C``: fully
  convolutional, the feature map must be ``S x S``
  (e.g. 128 px input, ``stem="imagenet"``: C3 at stride 8 -> ``S = 16``, C4 -> ``S = 8``);
* ``"fc"`` (the paper's): the 3x3 convs as above, flatten, dense ``yolo_fc_size`` with leaky
  ReLU, dropout, dense ``S * S * (B * 5 + C)``: any ``S``.

Parameter names: ``body`` (the ResNet), ``head_conv{k}``, ``head_fc`` (fc head) and
``head_out``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from jaxdet import config_files, core, ops
from jaxdet.detection import roi_heads
from jaxdet.detection.select import select_detections
from jaxdet.models import resnet

SumCount = tuple[jax.Array, jax.Array]
LOSS_TERMS = ("yolo_coord", "yolo_obj", "yolo_noobj", "yolo_class")
HEADS = ("conv", "fc")


@dataclasses.dataclass(frozen=True)
class YoloSpec:
    """Every static number of the YOLO detector (from ``config.model``, keys of the same
    names; unknown keys are ignored)."""

    num_classes: int
    yolo_grid_size: int = 8  # S
    yolo_boxes_per_cell: int = 2  # B
    yolo_feature: str = ""  # backbone map feeding the head, e.g. "C4"; "": the last
    yolo_head: str = "conv"  # "conv" (fully convolutional) or "fc" (the paper's)
    yolo_head_convs: int = 2
    yolo_head_channels: int = 128
    yolo_fc_size: int = 512  # "fc" head only
    yolo_dropout: float = 0.0  # dropout rate before the output layer in training (paper: 0.5)
    yolo_rescore: bool = True  # confidence target IoU (True) or 1 (False)
    score_thresh: float = 0.01
    nms_thresh: float = 0.5
    detections_per_img: int = 100
    min_size: float = 1e-2

    def __post_init__(self) -> None:
        if self.yolo_grid_size < 1 or self.yolo_boxes_per_cell < 1:
            raise ValueError("model.yolo_grid_size and model.yolo_boxes_per_cell must be >= 1")
        if self.yolo_head not in HEADS:
            raise ValueError(f"model.yolo_head={self.yolo_head!r}; expected one of {HEADS}")
        if not 0.0 <= self.yolo_dropout < 1.0:
            raise ValueError(f"model.yolo_dropout={self.yolo_dropout} not in [0, 1)")

    @property
    def channels(self) -> int:
        """Raw outputs per cell, ``B * 5 + C``."""
        return self.yolo_boxes_per_cell * 5 + self.num_classes

    @classmethod
    def from_config(cls, model: Mapping[str, Any], num_classes: int) -> YoloSpec:
        """The spec from a flat ``config.model`` section (unknown keys are ignored)."""
        return config_files.dataclass_from_section(cls, model, num_classes=num_classes)


class Predictions(NamedTuple):
    """Decoded network outputs of ONE image (``vmap`` adds ``[N, ...]``); ``S2 = S * S``.

    Attributes:
      xywh: ``[S2, B, 4]`` float32 ``(x, y, sqrt(w), sqrt(h))`` in [0, 1] (module docstring).
      confidence: ``[S2, B]`` float32 in [0, 1].
      class_probs: ``[S2, C]`` float32, each row sums to 1.
      boxes: ``[S2, B, 4]`` float32 ``(x1, y1, x2, y2)`` absolute pixels of the padded input
        (not clipped).
    """

    xywh: jax.Array
    confidence: jax.Array
    class_probs: jax.Array
    boxes: jax.Array


class YoloTargets(NamedTuple):
    """Training targets of ONE image (``vmap`` adds ``[N, ...]``), ``stop_gradient``-ed.

    Attributes:
      cell_gt: ``[S2]`` int32 index of the gt the cell predicts, -1 for none.
      responsible: ``[S2, B]`` bool, the predictor that answers for the cell's gt.
      xywh: ``[S2, 4]`` float32 regression targets ``(x, y, sqrt(w), sqrt(h))`` (zeros in
        cells without an object).
      labels: ``[S2]`` int32 0-based class of the cell's gt (0 where ``cell_gt < 0``).
      iou: ``[S2, B]`` float32 IoU of each predictor's box with the cell's gt (0 where none).
    """

    cell_gt: jax.Array
    responsible: jax.Array
    xywh: jax.Array
    labels: jax.Array
    iou: jax.Array


def decode_predictions(
    raw: jax.typing.ArrayLike, boxes_per_cell: int, image_size: tuple[int, int]
) -> Predictions:
    """Raw head outputs of ONE image -> :class:`Predictions`.

    Args:
      raw: ``[S, S, B * 5 + C]`` (or ``[S * S, B * 5 + C]``, cells row-major) raw outputs in
        the channel layout of the module docstring.
      boxes_per_cell: ``B``.
      image_size: ``(H, W)`` of the padded network input (static numbers).

    Returns:
      :class:`Predictions`.
    """
    raw = jnp.asarray(raw, jnp.float32)
    grid = raw.shape[0] if raw.ndim == 3 else math.isqrt(raw.shape[0])
    if grid * grid != raw.shape[0] * (raw.shape[1] if raw.ndim == 3 else 1):
        raise ValueError(f"raw outputs {raw.shape}: expected [S, S, ch] or [S * S, ch]")
    raw = raw.reshape(-1, raw.shape[-1])
    b = boxes_per_cell
    per_box = jax.nn.sigmoid(raw[:, : 5 * b].reshape(-1, b, 5))
    xywh, confidence = per_box[..., :4], per_box[..., 4]
    class_probs = jax.nn.softmax(raw[:, 5 * b:], axis=-1)
    return Predictions(xywh, confidence, class_probs,
                       xywh_to_boxes(xywh, grid, image_size))


def xywh_to_boxes(xywh: jax.Array, grid_size: int, image_size: tuple[int, int]) -> jax.Array:
    """``[S2, ..., 4]`` ``(x, y, sqrt(w), sqrt(h))`` -> ``(x1, y1, x2, y2)`` absolute pixels
    of the ``(H, W)`` input (cell ``k = i * S + j`` along the first axis)."""
    height, width = float(image_size[0]), float(image_size[1])
    s = grid_size
    k = jnp.arange(s * s)
    col = (k % s).astype(jnp.float32).reshape((-1,) + (1,) * (xywh.ndim - 2))
    row = (k // s).astype(jnp.float32).reshape(col.shape)
    cx = (col + xywh[..., 0]) * (width / s)
    cy = (row + xywh[..., 1]) * (height / s)
    w = jnp.square(xywh[..., 2]) * width
    h = jnp.square(xywh[..., 3]) * height
    return jnp.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)


def yolo_targets(
    pred_boxes: jax.typing.ArrayLike,
    gt_boxes: jax.typing.ArrayLike,
    gt_labels: jax.typing.ArrayLike,
    gt_valid: jax.typing.ArrayLike,
    grid_size: int,
    image_size: tuple[int, int],
) -> YoloTargets:
    """Assign the gt boxes of ONE image to cells and predictors (module docstring).

    Args:
      pred_boxes: ``[S * S, B, 4]`` float32 ``(x1, y1, x2, y2)`` absolute pixels: the
        predictors' current boxes (they choose the responsible predictor).
      gt_boxes: ``[G, 4]`` float32 ``(x1, y1, x2, y2)`` absolute pixels of the padded input.
      gt_labels: ``[G]`` int 0-based classes.
      gt_valid: ``[G]`` bool, False for padding.
      grid_size: ``S``.
      image_size: ``(H, W)`` of the padded network input (static numbers).

    Returns:
      :class:`YoloTargets`.
    """
    pred_boxes = jax.lax.stop_gradient(jnp.asarray(pred_boxes, jnp.float32))
    gt_boxes = jnp.asarray(gt_boxes, jnp.float32)
    gt_valid = jnp.asarray(gt_valid, bool)
    height, width = float(image_size[0]), float(image_size[1])
    s = grid_size
    g = gt_boxes.shape[0]

    cx = (gt_boxes[:, 0] + gt_boxes[:, 2]) / 2 * (s / width)  # in cell units
    cy = (gt_boxes[:, 1] + gt_boxes[:, 3]) / 2 * (s / height)
    col = jnp.clip(jnp.floor(cx), 0, s - 1)
    row = jnp.clip(jnp.floor(cy), 0, s - 1)
    cell = (row * s + col).astype(jnp.int32)  # [G]
    gw = jnp.maximum(gt_boxes[:, 2] - gt_boxes[:, 0], 0.0)
    gh = jnp.maximum(gt_boxes[:, 3] - gt_boxes[:, 1], 0.0)
    gt_xywh = jnp.stack([cx - col, cy - row, jnp.sqrt(gw / width), jnp.sqrt(gh / height)], 1)

    # One gt per cell: the largest area wins, ties to the lower index.
    area = gw * gh
    idx = jnp.arange(g)
    same = (cell[:, None] == cell[None, :]) & gt_valid[:, None] & gt_valid[None, :]
    beats = (area[None, :] > area[:, None]) | ((area[None, :] == area[:, None])
                                               & (idx[None, :] < idx[:, None]))
    wins = gt_valid & ~jnp.any(same & beats, axis=1)  # [G]
    assign = wins[:, None] & (cell[:, None] == jnp.arange(s * s)[None, :])  # [G, S2]
    has = jnp.any(assign, axis=0)
    cell_gt = jnp.where(has, jnp.argmax(assign, axis=0), -1).astype(jnp.int32)
    safe = jnp.maximum(cell_gt, 0)

    matched = gt_boxes[safe]  # [S2, 4]
    iou = jax.vmap(lambda p, m: ops.box_iou(p, m[None])[:, 0])(pred_boxes, matched)  # [S2, B]
    iou = jnp.where(has[:, None], jnp.nan_to_num(iou, nan=0.0), 0.0)
    best = jnp.argmax(iou, axis=1)
    responsible = has[:, None] & (jnp.arange(pred_boxes.shape[1])[None, :] == best[:, None])
    out = YoloTargets(
        cell_gt=cell_gt,
        responsible=responsible,
        xywh=jnp.where(has[:, None], gt_xywh[safe], 0.0),
        labels=jnp.where(has, jnp.asarray(gt_labels).astype(jnp.int32)[safe], 0),
        iou=iou,
    )
    return jax.tree.map(jax.lax.stop_gradient, out)


def yolo_losses(pred: Predictions, targets: YoloTargets, rescore: bool = True
                ) -> dict[str, jax.Array]:
    """The four sum-squared sums of ONE image (unweighted; module docstring).

    Args:
      pred: :class:`Predictions` of the image.
      targets: :class:`YoloTargets` of the image.
      rescore: confidence target is the IoU (True) or 1 (False).

    Returns:
      ``{term: float32 scalar}`` for each term of :data:`LOSS_TERMS`.
    """
    resp = targets.responsible.astype(jnp.float32)  # [S2, B]
    has = (targets.cell_gt >= 0).astype(jnp.float32)  # [S2]
    coord = jnp.sum(jnp.square(pred.xywh - targets.xywh[:, None, :]), axis=-1)  # [S2, B]
    conf_target = targets.iou if rescore else jnp.ones_like(targets.iou)
    obj = jnp.square(pred.confidence - conf_target)
    noobj = jnp.square(pred.confidence)
    onehot = jax.nn.one_hot(targets.labels, pred.class_probs.shape[-1], dtype=jnp.float32)
    cls = jnp.sum(jnp.square(pred.class_probs - onehot), axis=-1)  # [S2]
    return {
        "yolo_coord": jnp.sum(resp * coord),
        "yolo_obj": jnp.sum(resp * obj),
        "yolo_noobj": jnp.sum((1.0 - resp) * noobj),
        "yolo_class": jnp.sum(has * cls),
    }


def postprocess(
    pred: Predictions,
    image_hw: jax.typing.ArrayLike,
    *,
    score_thresh: float = 0.01,
    nms_thresh: float = 0.5,
    detections_per_img: int = 100,
    min_size: float = 1e-2,
) -> tuple[core.Detections, jax.Array, jax.Array]:
    """Detections and confidence-sorted candidate boxes of ONE image.

    Args:
      pred: :class:`Predictions` of the image.
      image_hw: ``[2]`` ``(height, width)`` of the unpadded image (boxes are clipped to it).
      score_thresh: minimum class-specific score ``confidence * p(c)`` (exclusive).
      nms_thresh: per-class NMS IoU threshold.
      detections_per_img: static number ``K`` of output rows.
      min_size: minimum clipped box width and height in pixels.

    Returns:
      ``(detections, candidates, candidate_valid)``: :class:`~jaxdet.detection.roi_heads.
      Detections` with ``K`` rows; ``[S2 * B, 4]`` clipped boxes sorted by descending
      confidence and their ``[S2 * B]`` validity (positive width and height).
    """
    s2, b, _ = pred.boxes.shape
    c = pred.class_probs.shape[-1]
    boxes = ops.clip_boxes(pred.boxes.reshape(s2 * b, 4), image_hw[0], image_hw[1])
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    conf = pred.confidence.reshape(s2 * b)
    scores = (pred.confidence[:, :, None] * pred.class_probs[:, None, :]).reshape(s2 * b * c)
    dets = select_detections(
        jnp.repeat(boxes, c, axis=0),  # [S2 * B * C, 4], class fastest
        scores, jnp.tile(jnp.arange(c, dtype=jnp.int32), s2 * b), jnp.ones(scores.shape, bool),
        score_thresh=score_thresh, nms_thresh=nms_thresh,
        detections_per_img=detections_per_img, min_size=min_size)
    _, order = jax.lax.top_k(conf, s2 * b)
    return dets, boxes[order], (w > 0)[order] & (h > 0)[order]


class Yolo(nn.Module):
    """See the module docstring.

    Attributes:
      spec: the detector's static numbers.
      backbone: model config section for :func:`jaxdet.models.resnet.create_resnet`.
      bn_axis_name: mapped axis for cross-device BatchNorm (training), or None.
      dtype: compute dtype of the backbone and head convs (None: float32); the outputs are
        cast to float32 before decoding.
    """

    spec: YoloSpec
    backbone: Mapping[str, Any]
    bn_axis_name: str | None = None
    dtype: Any = None

    def setup(self) -> None:
        s = self.spec
        self.body = resnet.create_resnet(self.backbone, bn_axis_name=self.bn_axis_name)
        self.head_convs = [
            nn.Conv(s.yolo_head_channels, (3, 3), padding=1, dtype=self.dtype,
                    name=f"head_conv{k}") for k in range(s.yolo_head_convs)]
        if s.yolo_head == "fc":
            self.head_fc = nn.Dense(s.yolo_fc_size, dtype=self.dtype)
            self.head_out = nn.Dense(s.yolo_grid_size ** 2 * s.channels, dtype=jnp.float32)
        else:
            self.head_out = nn.Conv(s.channels, (1, 1), dtype=jnp.float32)

    def raw_outputs(self, images: jax.Array, train: bool,
                    rng: jax.Array | None = None) -> jax.Array:
        """``images [N, H, W, 3]`` -> raw outputs ``[N, S * S, B * 5 + C]`` float32.

        ``rng``: ``[N]`` keys, one per image, for the training dropout (``yolo_dropout``).
        """
        s = self.spec
        feats = self.body(images, train=train)
        key = s.yolo_feature or max(feats, key=lambda k: int(k[1:]))
        if key not in feats:
            raise ValueError(f"model.yolo_feature={key!r}; the backbone has {sorted(feats)}")
        x = feats[key]
        for conv in self.head_convs:
            x = nn.leaky_relu(conv(x), 0.1)
        n = x.shape[0]
        if s.yolo_head == "fc":
            x = nn.leaky_relu(self.head_fc(x.reshape(n, -1)), 0.1)
            x = self._dropout(x, train, rng)
            return self.head_out(x).reshape(n, s.yolo_grid_size ** 2, s.channels)
        if x.shape[1:3] != (s.yolo_grid_size, s.yolo_grid_size):
            raise ValueError(
                f"yolo_head='conv' needs an S x S feature map: {key} is {x.shape[1:3]} for "
                f"S = model.yolo_grid_size = {s.yolo_grid_size} (choose model.yolo_feature, "
                "the input size or S to match, or yolo_head='fc')")
        x = self._dropout(x, train, rng)
        return self.head_out(x).astype(jnp.float32).reshape(n, -1, s.channels)

    def _dropout(self, x: jax.Array, train: bool, rng: jax.Array | None) -> jax.Array:
        """Inverted dropout of ``x [N, ...]`` at ``yolo_dropout`` with one key per image
        (so a step does not depend on how the batch is split over devices)."""
        rate = self.spec.yolo_dropout
        if not train or rate == 0.0:
            return x
        if rng is None:
            raise ValueError("Yolo(train=True) with model.yolo_dropout > 0 needs rng")
        keep = jax.vmap(lambda k: jax.random.bernoulli(k, 1.0 - rate, x.shape[1:]))(rng)
        return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)

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
        batch = images.shape[0]
        image_size = tuple(int(v) for v in images.shape[1:3])
        image_hw = roi_heads.default_image_hw(images, image_hw)
        raw = self.raw_outputs(jnp.asarray(images, jnp.float32), train, rng)
        pred = jax.vmap(lambda r: decode_predictions(r, s.yolo_boxes_per_cell, image_size))(raw)
        if not train:
            post = lambda p, hw: postprocess(  # noqa: E731
                p, hw, score_thresh=s.score_thresh, nms_thresh=s.nms_thresh,
                detections_per_img=s.detections_per_img, min_size=s.min_size)
            dets, cand, cand_valid = jax.vmap(post)(pred, image_hw)
            out: dict[str, Any] = dets._asdict()
            out["proposals"] = cand
            out["proposal_valid"] = cand_valid
            return out
        if targets is None:
            raise ValueError("Yolo(train=True) needs targets")
        real = core.example_mask(targets, batch)
        gt_valid = jnp.asarray(targets["gt_valid"], bool) & real[:, None]
        t = jax.vmap(lambda p, gb, gl, gv: yolo_targets(
            p, gb, gl, gv, s.yolo_grid_size, image_size))(
            pred.boxes, targets["gt_boxes"], targets["gt_labels"], gt_valid)
        per_image = jax.vmap(lambda p, tt: yolo_losses(p, tt, s.yolo_rescore))(pred, t)
        num_real = jnp.sum(real, dtype=jnp.float32)
        terms = {k: (jnp.sum(jnp.where(real, v, 0.0)), num_real) for k, v in per_image.items()}
        hit = jnp.sum(t.responsible & (t.iou >= 0.5), dtype=jnp.float32)
        return {
            "terms": terms,
            # gts whose responsible predictor already covers them at IoU >= 0.5
            "recall": (hit, jnp.sum(gt_valid, dtype=jnp.float32)),
            "num_foreground_rois": (jnp.sum(t.responsible, dtype=jnp.float32), num_real),
        }


def create_model(config: ml_collections.ConfigDict, num_classes: int,
                 bn_axis_name: str | None = None) -> Yolo:
    """:class:`Yolo` from ``config.model`` (backbone fields + :class:`YoloSpec`)."""
    model = config.model
    return Yolo(
        spec=YoloSpec.from_config(model, num_classes),
        **resnet.backbone_fields(model, bn_axis_name),
    )
