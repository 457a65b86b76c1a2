"""SSD (Liu et al., 2016) on a ResNet body, static shapes.

Per map a 3x3 conv predicts ``C + 1`` logits (0 background) and 4 offsets per default box
(:mod:`jaxdet.detection.ssd_default_boxes`). :class:`SSD` has
:class:`~jaxdet.detection.faster_rcnn.FasterRCNN`'s call contract (``rng`` unused); terms
``ssd_classifier`` / ``ssd_box`` are ``(sum, N_pos)``; test ``proposals``: the
``recall_top_n`` default boxes with the highest foreground probability, decoded, clipped.

Maps: ``ssd_feature_maps`` (e.g. C3-C5), then per ``ssd_extra_channels`` entry a 1x1 conv to
half + stride-2 3x3 conv (norm + ReLU); ``ssd_head_channels > 0`` adds a 3x3 conv-norm-ReLU.

Training: a default box takes its best gt at IoU ``>= ssd_iou_threshold``; each gt is then
forced onto its best default box (the paper's rule; collisions: highest gt index). Offsets
encode with ``box_weights`` (10, 10, 5, 5) = variances (0.1, 0.1, 0.2, 0.2). Hard negatives:
the ``min(floor(ssd_neg_pos_ratio * N_pos), #negatives, ssd_negative_budget)`` unmatched boxes
with the highest ``-log p(background)`` (budget 0: all). Softmax CE over positives + mined
negatives; smooth L1 (``ssd_smooth_l1_beta``) over positives.

Inference: best ``ssd_pre_nms_top_n`` ``(box, class)`` pairs (0: all), decode, clip,
:func:`~jaxdet.detection.select.select_detections`. Parameters: ``body``, ``extra{i}``
(``conv1``/``bn1``/``conv2``/``bn2``), ``head`` (``conv{k}``/``bn{k}``, ``cls{k}``, ``box{k}``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxdet import config_files, core, ops
from jaxdet.core import ConfigError
from jaxdet.detection import roi_heads, rpn
from jaxdet.detection.select import PostprocessSpec, postprocess_from_config, select_detections
from jaxdet.detection.ssd_default_boxes import default_boxes
from jaxdet.losses.regression import smooth_l1
from jaxdet.models import resnet

SumCount = tuple[jax.Array, jax.Array]
LOSS_TERMS = ("ssd_classifier", "ssd_box")
SSD_BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)  # SSD's variances (0.1, 0.1, 0.2, 0.2)


@dataclasses.dataclass(frozen=True)
class SSDSpec:
    """Every static number of SSD, from ``config.model`` (same key names; unknown keys ignored;
    module docstring). Raises ValueError on invalid maps, scales or aspect ratios.
    """

    num_classes: int
    ssd_feature_maps: tuple[str, ...] = ("C3", "C4", "C5")
    ssd_extra_channels: tuple[int, ...] = (64,)
    ssd_head_channels: int = 0
    ssd_min_scale: float = 0.1
    ssd_max_scale: float = 0.6
    # one tuple per map (or one flat tuple for every map); height / width, never 1
    ssd_aspect_ratios: tuple[Any, ...] = (2.0, 0.5)
    ssd_clip_boxes: bool = True
    ssd_iou_threshold: float = 0.5
    ssd_neg_pos_ratio: float = 3.0
    ssd_negative_budget: int = 0  # static top-k of the mining; 0: all default boxes (exact)
    ssd_smooth_l1_beta: float = 1.0
    ssd_pre_nms_top_n: int = 400
    box_weights: tuple[float, float, float, float] = SSD_BOX_WEIGHTS
    recall_top_n: int = 100
    postprocess: PostprocessSpec = PostprocessSpec()

    def __post_init__(self) -> None:
        names = self.ssd_feature_maps
        if not names or any(n not in ("C2", "C3", "C4", "C5") for n in names):
            raise ConfigError(f"model.ssd_feature_maps={names}: non-empty, from C2..C5")
        if list(names) != sorted(set(names), key=lambda n: int(n[1:])):
            raise ConfigError(f"model.ssd_feature_maps={names} must be increasing, no repeats")
        if not 0 < self.ssd_min_scale <= self.ssd_max_scale:
            raise ConfigError("model.ssd_min_scale must be in (0, ssd_max_scale]")
        ratios = self.level_aspect_ratios
        if len(ratios) != self.num_maps:
            raise ConfigError(f"model.ssd_aspect_ratios: {len(ratios)} tuples for "
                             f"{self.num_maps} feature maps")
        if any(r <= 0 or r == 1.0 for level in ratios for r in level):
            raise ConfigError("model.ssd_aspect_ratios: positive and != 1 (the squares are "
                             f"always there), got {self.ssd_aspect_ratios}")

    @property
    def num_maps(self) -> int:
        return len(self.ssd_feature_maps) + len(self.ssd_extra_channels)

    @property
    def level_aspect_ratios(self) -> tuple[tuple[float, ...], ...]:
        """One tuple of aspect ratios per map (a flat config tuple serves every map)."""
        r = self.ssd_aspect_ratios
        if all(isinstance(x, (tuple, list)) for x in r) and r:
            return tuple(tuple(float(v) for v in x) for x in r)
        return (tuple(float(v) for v in r),) * self.num_maps

    @property
    def boxes_per_location(self) -> tuple[int, ...]:
        return tuple(2 + len(r) for r in self.level_aspect_ratios)

    @classmethod
    def from_config(cls, model: Mapping[str, Any], num_classes: int) -> SSDSpec:
        """The spec from a flat ``config.model`` section (unknown keys are ignored)."""
        return config_files.dataclass_from_section(
            cls, model, num_classes=num_classes,
            postprocess=postprocess_from_config(model, PostprocessSpec()))


# ---------------------------------------------------------------------------------------------
# Network
# ---------------------------------------------------------------------------------------------


class ExtraBlock(resnet.NormSettings):
    """``[B, h, w, c] -> [B, ceil(h / 2), ceil(w / 2), features]``: 1x1 conv to ``features // 2`` +
    norm + ReLU, then stride-2 3x3 conv + norm + ReLU.
    """

    features: int = 64

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        x = self.conv_norm_relu(x, max(self.features // 2, 1), 1, 1, "1", train=train)
        return self.conv_norm_relu(x, self.features, 3, 2, "2", train=train)


class SSDHead(resnet.NormSettings):
    """Maps ``[B, f_h, f_w, c_k]`` -> ``(logits [B, A, C + 1], offsets [B, A, 4])`` float32, map by
    map, row-major, box shape fastest.
    """

    num_classes: int = 1
    boxes_per_location: tuple[int, ...] = ()
    head_channels: int = 0

    @nn.compact
    def __call__(self, maps: Sequence[jax.Array], *, train: bool) -> tuple[jax.Array,
                                                                          jax.Array]:
        k1 = self.num_classes + 1
        logits, offsets = [], []
        for k, (x, n) in enumerate(zip(maps, self.boxes_per_location, strict=True)):
            if self.head_channels > 0:
                x = self.conv_norm_relu(x, self.head_channels, 3, 1, str(k), train=train)
            conv = lambda f, name: nn.Conv(  # noqa: E731
                f, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype,
                kernel_init=nn.initializers.xavier_uniform(), name=name)
            b = x.shape[0]
            logits.append(conv(n * k1, f"cls{k}")(x).astype(jnp.float32).reshape(b, -1, k1))
            offsets.append(conv(n * 4, f"box{k}")(x).astype(jnp.float32).reshape(b, -1, 4))
        return jnp.concatenate(logits, axis=1), jnp.concatenate(offsets, axis=1)


# ---------------------------------------------------------------------------------------------
# Training targets and losses (one image; vmapped over the batch)
# ---------------------------------------------------------------------------------------------


def match_default_boxes(
    iou: jax.Array, gt_valid: jax.Array, box_valid: jax.Array, threshold: float
) -> jax.Array:
    """SSD matching of ONE image: ``iou`` ``[G, A]`` (NaN as 0), ``gt_valid`` ``[G]``, ``box_valid``
    ``[A]`` (centre inside the unpadded image) -> ``[A]`` int32 gt index, ``-1`` background,
    ``-2`` unusable.
    """
    q = jnp.where(jnp.isnan(iou), 0.0, jnp.asarray(iou, jnp.float32))
    q = jnp.where(box_valid[None, :], q, 0.0)
    matches = ops.match(q, gt_valid, high=threshold, low=threshold,
                        allow_low_quality_matches=False)
    g, a = q.shape
    best_box = jnp.argmax(q, axis=1)  # [G], first on ties
    forced_ok = jnp.asarray(gt_valid, bool) & (jnp.max(q, axis=1) > 0)
    forced = jnp.full((a,), -1, jnp.int32).at[jnp.where(forced_ok, best_box, a)].max(
        jnp.arange(g, dtype=jnp.int32), mode="drop")
    matches = jnp.where(forced >= 0, forced, matches)
    return jnp.where(box_valid, matches, ops.BETWEEN_THRESHOLDS).astype(jnp.int32)


def hard_negative_mask(
    conf_loss: jax.Array, negative: jax.Array, num_pos: jax.Array, ratio: float, budget: int
) -> jax.Array:
    """Mined negatives of ONE image: ``[A]`` bool, the ``min(floor(ratio * num_pos), #negative, k)``
    candidates (``negative`` ``[A]``) with the highest ``conf_loss`` ``[A]`` (ties: lower index);
    ``k = budget`` (``<= 0`` or ``>= A``: all). No gradient through the selection.
    """
    a = conf_loss.shape[0]
    k = a if budget <= 0 else min(int(budget), a)
    score = jnp.where(negative, jax.lax.stop_gradient(conf_loss), -jnp.inf)
    _, idx = jax.lax.top_k(score, k)
    want = jnp.floor(ratio * jnp.asarray(num_pos, jnp.float32)).astype(jnp.int32)
    num_neg = jnp.minimum(want, jnp.sum(negative, dtype=jnp.int32))
    take = jnp.arange(k) < num_neg
    return jnp.zeros((a,), bool).at[idx].max(take)


def ssd_image_losses(
    logits: jax.Array,
    offsets: jax.Array,
    boxes: jax.Array,
    box_valid: jax.Array,
    gt_boxes: jax.Array,
    gt_labels: jax.Array,
    gt_valid: jax.Array,
    spec: SSDSpec,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """SSD's loss sums of ONE image: float32 ``(classifier_sum, box_sum, num_pos)`` from ``logits``
    ``[A, C + 1]``, ``offsets`` ``[A, 4]``, default ``boxes`` ``[A, 4]`` + ``box_valid``, and the
    gt (``[G, 4]`` pixels, ``[G]`` 0-based labels, ``[G]`` valid).
    """
    gt_boxes = jnp.asarray(gt_boxes, jnp.float32)
    matches = jax.lax.stop_gradient(match_default_boxes(
        ops.box_iou(gt_boxes, boxes), gt_valid, box_valid, spec.ssd_iou_threshold))
    pos = matches >= 0
    safe = jnp.maximum(matches, 0)
    labels = jnp.where(pos, jnp.asarray(gt_labels, jnp.int32)[safe] + 1, 0)
    logp = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), axis=-1)
    ce = -jnp.take_along_axis(logp, labels[:, None], axis=-1)[:, 0]  # [A]
    num_pos = jnp.sum(pos, dtype=jnp.int32)
    negative = (matches == ops.BELOW_LOW_THRESHOLD)
    mined = hard_negative_mask(ce, negative, num_pos, spec.ssd_neg_pos_ratio,
                               spec.ssd_negative_budget)
    cls_sum = jnp.sum(jnp.where(pos | mined, ce, 0.0))
    unit = jnp.asarray([0.0, 0.0, 1.0, 1.0], jnp.float32)
    target = ops.encode_boxes(jnp.where(pos[:, None], gt_boxes[safe], unit),
                              jnp.where(pos[:, None], boxes, unit), spec.box_weights)
    target = jax.lax.stop_gradient(jnp.where(pos[:, None], target, 0.0))
    pred = jnp.where(pos[:, None], jnp.asarray(offsets, jnp.float32), 0.0)
    box_sum = jnp.sum(jnp.where(pos[:, None], smooth_l1(pred - target,
                                                          spec.ssd_smooth_l1_beta), 0.0))
    return cls_sum, box_sum, num_pos.astype(jnp.float32)


# ---------------------------------------------------------------------------------------------
# Inference
# ---------------------------------------------------------------------------------------------


def candidates(
    logits: jax.Array, offsets: jax.Array, boxes: jax.Array, box_valid: jax.Array,
    image_hw: jax.Array, spec: SSDSpec,
) -> tuple[jax.Array, jax.Array]:
    """The ``P = min(recall_top_n, A)`` default boxes of ONE image with the highest foreground
    probability, decoded and clipped: ``([P, 4], valid [P])``.
    """
    probs = jax.nn.softmax(jnp.asarray(logits, jnp.float32), axis=-1)
    fg = jnp.where(box_valid, jnp.max(probs[:, 1:], axis=-1), -1.0)
    p = min(int(spec.recall_top_n), fg.shape[0])
    _, idx = jax.lax.top_k(fg, p)
    dec = ops.decode_boxes(offsets[idx], boxes[idx], spec.box_weights)
    return ops.clip_boxes(dec, image_hw[0], image_hw[1]), box_valid[idx]


def postprocess(
    logits: jax.Array, offsets: jax.Array, boxes: jax.Array, box_valid: jax.Array,
    image_hw: jax.Array, spec: SSDSpec, min_size: float = 1e-2,
) -> core.Detections:
    """Detections of ONE image: ``logits [A, C + 1]``, ``offsets [A, 4]``, default ``boxes [A, 4]``,
    ``box_valid [A]``, ``image_hw [2]`` -> ``K`` padded rows (module docstring).
    """
    logits = jnp.asarray(logits, jnp.float32)
    a, k1 = logits.shape
    c = k1 - 1
    probs = jnp.where(box_valid[:, None], jax.nn.softmax(logits, axis=-1)[:, 1:], 0.0)
    flat = probs.reshape(a * c)
    n = a * c if spec.ssd_pre_nms_top_n <= 0 else min(int(spec.ssd_pre_nms_top_n), a * c)
    scores, idx = jax.lax.top_k(flat, n)
    box_idx, classes = idx // c, (idx % c).astype(jnp.int32)
    dec = ops.decode_boxes(jnp.asarray(offsets, jnp.float32)[box_idx], boxes[box_idx],
                           spec.box_weights)
    dec = ops.clip_boxes(dec, image_hw[0], image_hw[1])
    return select_detections(
        dec, scores, classes, jnp.ones(scores.shape, bool), **dataclasses.asdict(spec.postprocess),
        min_size=min_size)


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------


class SSD(nn.Module):
    """See the module docstring. ``backbone``: config section for
    :func:`jaxdet.models.resnet.create_resnet` (also norm settings of extra layers and head);
    ``bn_axis_name``: cross-device BatchNorm axis or None; ``dtype``: conv compute dtype (None:
    float32; outputs float32).
    """

    spec: SSDSpec
    backbone: Mapping[str, Any]
    bn_axis_name: str | None = None
    dtype: Any = None

    def setup(self) -> None:
        s = self.spec
        deepest = max(int(n[1:]) for n in s.ssd_feature_maps)
        self.body = resnet.create_resnet(resnet.truncated_config(self.backbone, deepest - 1),
                                         bn_axis_name=self.bn_axis_name)
        norm = dict(norm=self.backbone.get("norm", "batch"),
                    bn_momentum=float(self.backbone.get("bn_momentum", 0.9)),
                    gn_groups=int(self.backbone.get("gn_groups", 32)),
                    bn_axis_name=self.bn_axis_name, dtype=self.dtype)
        self.extras = [ExtraBlock(features=int(c), name=f"extra{i}", **norm)
                       for i, c in enumerate(s.ssd_extra_channels)]
        self.head = SSDHead(num_classes=s.num_classes,
                            boxes_per_location=s.boxes_per_location,
                            head_channels=s.ssd_head_channels, **norm)

    def feature_maps(self, images: jax.Array, train: bool) -> list[jax.Array]:
        """The ``m`` maps, finest first: ``ssd_feature_maps`` then the extra layers."""
        c = self.body(images, train=train)
        maps = [c[n] for n in self.spec.ssd_feature_maps]
        for extra in self.extras:
            maps.append(extra(maps[-1], train=train))
        return maps

    def default_boxes(self, feature_sizes: Sequence[tuple[int, int]],
                      image_size: tuple[int, int]) -> np.ndarray:
        """The static default boxes ``[A, 4]`` for the maps' sizes and a padded input."""
        s = self.spec
        return default_boxes(feature_sizes, image_size, s.ssd_min_scale, s.ssd_max_scale,
                             s.level_aspect_ratios, clip=s.ssd_clip_boxes)

    def __call__(
        self,
        images: jax.Array,
        image_hw: jax.Array | None = None,
        *,
        train: bool,
        targets: Mapping[str, jax.Array] | None = None,
        rng: jax.Array | None = None,
    ) -> dict[str, Any]:
        del rng  # nothing is sampled
        s = self.spec
        batch = images.shape[0]
        image_size = images.shape[1:3]
        image_hw = roi_heads.default_image_hw(images, image_hw)
        maps = self.feature_maps(jnp.asarray(images, jnp.float32), train)
        logits, offsets = self.head(maps, train=train)
        boxes = jnp.asarray(self.default_boxes([m.shape[1:3] for m in maps], image_size))
        cx = 0.5 * (boxes[:, 0] + boxes[:, 2])
        cy = 0.5 * (boxes[:, 1] + boxes[:, 3])
        box_valid = (cx[None] < image_hw[:, 1:2]) & (cy[None] < image_hw[:, 0:1])  # [B, A]
        cand = lambda lg, of, v, hw: candidates(lg, of, boxes, v, hw, s)  # noqa: E731
        proposals, proposal_valid = jax.vmap(cand)(logits, offsets, box_valid, image_hw)
        proposals = jax.lax.stop_gradient(proposals)
        if not train:
            post = lambda lg, of, v, hw: postprocess(lg, of, boxes, v, hw, s)  # noqa: E731
            out: dict[str, Any] = jax.vmap(post)(logits, offsets, box_valid, image_hw)._asdict()
            out["proposals"] = proposals
            out["proposal_valid"] = proposal_valid
            return out
        if targets is None:
            raise ValueError("SSD(train=True) needs targets")
        real = core.example_mask(targets, batch)
        gt_boxes = jnp.asarray(targets["gt_boxes"], jnp.float32)
        gt_valid = jnp.asarray(targets["gt_valid"], bool) & real[:, None]
        loss = lambda lg, of, v, g, lab, gv: ssd_image_losses(  # noqa: E731
            lg, of, boxes, v, g, lab, gv, s)
        cls_sum, box_sum, num_pos = jax.vmap(loss)(
            logits, offsets, box_valid, gt_boxes, targets["gt_labels"], gt_valid)
        n = jnp.sum(num_pos)
        hit, total = jax.vmap(rpn.proposal_recall)(proposals, proposal_valid, gt_boxes,
                                                   gt_valid)
        return {
            "terms": {"ssd_classifier": (jnp.sum(cls_sum), n), "ssd_box": (jnp.sum(box_sum), n)},
            "recall": (jnp.sum(hit).astype(jnp.float32), jnp.sum(total).astype(jnp.float32)),
            "num_foreground_rois": (n, jnp.sum(real, dtype=jnp.float32)),
        }


def create_model(config: ml_collections.ConfigDict, num_classes: int,
                 bn_axis_name: str | None = None) -> SSD:
    """:class:`SSD` from ``config.model`` (backbone fields + :class:`SSDSpec`)."""
    model = config.model
    return SSD(
        spec=SSDSpec.from_config(model, num_classes),
        **resnet.backbone_fields(model, bn_axis_name),
    )
