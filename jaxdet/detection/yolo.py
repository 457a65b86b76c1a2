"""YOLO v1 (Redmon et al., 2016): one pass over an S x S grid, sum-squared loss, class-aware NMS.

Output ``S x S x (B * 5 + C)`` (``yolo_grid_size``, ``yolo_boxes_per_cell``): per cell,
predictor ``b`` at channels ``5b .. 5b + 4`` = ``(x, y, sqrt(w), sqrt(h), confidence)``
(sigmoid), then ``C`` class scores (softmax) shared by the cell. Cell ``(i, j)`` (flat
``i * S + j``) of the padded ``H x W`` input gives ``cx = (j + x) W / S``,
``cy = (i + y) H / S``, ``w = sqrt(w)^2 W``, ``h = sqrt(h)^2 H``.

:class:`Yolo` has :class:`~jaxdet.detection.faster_rcnn.FasterRCNN`'s call contract; terms
:data:`LOSS_TERMS` count real images; ``rng`` feeds dropout only; ``recall``: gts covered at
IoU >= 0.5 by their responsible predictor. Test ``proposals``: the ``S * S * B`` decoded
boxes by confidence (valid: positive clipped area).

Targets (:func:`yolo_targets`): a gt goes to the cell of its centre (clipped; borders go right
/ down), one gt per cell (largest area, ties lower index); the responsible predictor has the
highest IoU (ties lower index); targets ``(cx * S / W - j, cy * S / H - i, sqrt(w / W),
sqrt(h / H))``, confidence the IoU (``yolo_rescore``; else 1), classes one-hot. Loss sums
(:func:`yolo_losses`): ``yolo_coord`` (weight ``config.loss.yolo_coord_weight``, paper 5),
``yolo_obj``, ``yolo_noobj`` (paper 0.5), ``yolo_class``. Test: scores ``confidence * p(c)``.

Head ``yolo_head`` on map ``yolo_feature`` (default last): ``"conv"`` (3x3 convs, leaky ReLU
0.1, dropout, 1x1; the map must be ``S x S``) or ``"fc"`` (the paper's: dense
``yolo_fc_size``, dropout, dense). Parameters: ``body``, ``head_conv{k}``, ``head_fc``,
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
from jaxdet.core import ConfigError
from jaxdet.detection import roi_heads
from jaxdet.detection.select import PostprocessSpec, postprocess_from_config, select_detections
from jaxdet.models import resnet

SumCount = tuple[jax.Array, jax.Array]
LOSS_TERMS = ("yolo_coord", "yolo_obj", "yolo_noobj", "yolo_class")
HEADS = ("conv", "fc")


@dataclasses.dataclass(frozen=True)
class YoloSpec:
    """Every static number of YOLO, from ``config.model`` (same key names; unknown keys ignored).
    Raises ValueError on grid/boxes < 1, unknown head or dropout outside ``[0, 1)``.
    """

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
    min_size: float = 1e-2
    postprocess: PostprocessSpec = PostprocessSpec(score_thresh=0.01)

    def __post_init__(self) -> None:
        if self.yolo_grid_size < 1 or self.yolo_boxes_per_cell < 1:
            raise ConfigError("model.yolo_grid_size and model.yolo_boxes_per_cell must be >= 1")
        if self.yolo_head not in HEADS:
            raise ConfigError(f"model.yolo_head={self.yolo_head!r}; expected one of {HEADS}")
        if not 0.0 <= self.yolo_dropout < 1.0:
            raise ConfigError(f"model.yolo_dropout={self.yolo_dropout} not in [0, 1)")

    @property
    def channels(self) -> int:
        """Raw outputs per cell, ``B * 5 + C``."""
        return self.yolo_boxes_per_cell * 5 + self.num_classes

    @classmethod
    def from_config(cls, model: Mapping[str, Any], num_classes: int) -> YoloSpec:
        """The spec from a flat ``config.model`` section (unknown keys are ignored)."""
        return config_files.dataclass_from_section(
            cls, model, num_classes=num_classes,
            postprocess=postprocess_from_config(model, PostprocessSpec(score_thresh=0.01)))


class Predictions(NamedTuple):
    """Decoded outputs of ONE image (``vmap`` adds ``[N, ...]``; ``S2 = S * S``): ``xywh``
    ``[S2, B, 4]`` ``(x, y, sqrt(w), sqrt(h))`` in [0, 1], ``confidence`` ``[S2, B]`` in [0, 1],
    ``class_probs`` ``[S2, C]`` (rows sum to 1), ``boxes`` ``[S2, B, 4]`` ``(x1, y1, x2, y2)``
    absolute pixels, not clipped; all float32.
    """

    xywh: jax.Array
    confidence: jax.Array
    class_probs: jax.Array
    boxes: jax.Array


class YoloTargets(NamedTuple):
    """Targets of ONE image (``vmap`` adds ``[N, ...]``), ``stop_gradient``-ed: ``cell_gt`` ``[S2]``
    int32 (-1 none), ``responsible`` ``[S2, B]`` bool, ``xywh`` ``[S2, 4]`` float32 (zeros without
    object), ``labels`` ``[S2]`` int32 0-based (0 without object), ``iou`` ``[S2, B]`` float32 of
    each predictor's box with the cell's gt (0 where none).
    """

    cell_gt: jax.Array
    responsible: jax.Array
    xywh: jax.Array
    labels: jax.Array
    iou: jax.Array


def decode_predictions(
    raw: jax.typing.ArrayLike, boxes_per_cell: int, image_size: tuple[int, int]
) -> Predictions:
    """Raw outputs ``[S, S, B * 5 + C]`` or ``[S * S, B * 5 + C]`` (module layout) of ONE image
    -> :class:`Predictions`; ``image_size``: padded ``(H, W)``. Other shapes: ValueError.
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
    """``[S2, ..., 4]`` ``(x, y, sqrt(w), sqrt(h))`` -> ``(x1, y1, x2, y2)`` absolute pixels of the
    ``(H, W)`` input (cell ``i * S + j`` along the first axis).
    """
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
    """Assign ONE image's gts to cells and predictors (module docstring): ``pred_boxes``
    ``[S * S, B, 4]`` (current predictions), ``gt_boxes`` ``[G, 4]``, ``gt_labels`` ``[G]``,
    ``gt_valid`` ``[G]``, ``grid_size`` ``S``, ``image_size`` padded ``(H, W)``; boxes float32
    ``(x1, y1, x2, y2)`` absolute pixels. Returns :class:`YoloTargets`.
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
    """The four unweighted sum-squared sums of ONE image: ``{term: float32}`` for :data:`LOSS_TERMS`
    (``rescore``: confidence target IoU, else 1).
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
    """Detections and candidates of ONE image: ``image_hw`` ``[2]`` unpadded ``(height, width)`` to
    clip to; ``score_thresh`` on ``confidence * p(c)`` (exclusive); ``min_size`` pixels. Returns
    ``(detections (detections_per_img rows), candidates [S2 * B, 4] clipped, by descending
    confidence, candidate_valid [S2 * B])``.
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
    """See the module docstring. ``backbone``: config section for
    :func:`jaxdet.models.resnet.create_resnet`; ``bn_axis_name``: cross-device BatchNorm axis or
    None; ``dtype``: compute dtype of backbone and head convs (None: float32; outputs float32).
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
        """``images [N, H, W, 3]`` -> ``[N, S * S, B * 5 + C]`` float32; ``rng``: ``[N]`` keys for
        dropout. Raises ValueError on an unknown ``yolo_feature`` or a non-``S x S`` conv-head map.
        """
        s = self.spec
        feats = self.body(images, train=train)
        key = s.yolo_feature or max(feats, key=lambda k: int(k[1:]))
        if key not in feats:
            raise ConfigError(f"model.yolo_feature={key!r}; the backbone has {sorted(feats)}")
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
        """Inverted dropout at ``yolo_dropout``, one key per image (independent of device split)."""
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
                p, hw, **dataclasses.asdict(s.postprocess), min_size=s.min_size)
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
