r"""Import torchvision weights: a local ``state_dict`` file (``.pth``) -> jaxdet variables.

  python -m jaxdet.convert --input=fasterrcnn_resnet50_fpn_coco.pth \
      --config=configs/faster_rcnn_coco.py --output=weights/frcnn_r50_fpn_coco
  python -m jaxdet.convert --input=resnet50-11ad3fa6.pth \
      --config=configs/faster_rcnn_coco.py --output=weights/r50_imagenet   # backbone only
  python -m jaxdet.convert --input=keypointrcnn_resnet50_fpn_coco-fc266e95.pth \
      --config=configs/keypoint_rcnn_coco.py --output=weights/kprcnn_r50_fpn_coco

Use with ``--config.init_from=DIR`` (:func:`jaxdet.models.weights.init_from`; a workdir
checkpoint takes precedence). Input: a ``state_dict`` (or ``{"model" | "state_dict": ...}``),
``torch.load(..., weights_only=True)``; torch is imported only by
:func:`load_torch_state_dict`. Layouts (:data:`ARCHITECTURES`, :func:`detect_architecture`):
``resnet`` (ImageNet resnet18/34/50 under ``--scope``, default ``body`` for detection,
``backbone`` otherwise; ``fc.*`` unused), ``faster_rcnn`` (classes from ``cls_score``,
background counted: torchvision label ``l`` = jaxdet class ``l - 1``), ``mask_rcnn``
(a ``model.mask`` section), ``keypoint_rcnn`` (1 class, a ``model.keypoint`` section),
``keypoint_mask_rcnn``. New models: rows ``(torchvision module regex, jaxdet path template,
layer kind)`` in :data:`ARCHITECTURES`.

Layer kinds (:data:`LAYER_KINDS`), float32: ``conv`` OIHW -> HWIO; ``conv_transpose``
``[in, out, kh, kw]`` -> ``[kh, kw, in, out]`` spatially flipped (Flax ``ConvTranspose``);
``linear`` transposed; ``linear_from_nchw`` (``fc6``): rows permuted from torchvision's
channel-slowest ``[C, h, w]`` flattening; ``norm``: ``weight``, ``bias``, ``running_mean``,
``running_var`` -> ``scale``, ``bias``, ``mean``, ``var`` in the model's collections
(``norm="frozen"``: all in ``batch_stats``); ``num_batches_tracked`` ignored.

Output directory: ``variables.msgpack`` (``{"params", "batch_stats"}``,
:mod:`flax.serialization`) and ``conversion.json`` (source, architecture, scope, report).
Exit 1, nothing written, on a shape mismatch or (without ``--allow_missing``) a jaxdet leaf
without a source.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util

from jaxdet.detection import faster_rcnn
from jaxdet.models import weights

log = logging.getLogger(__name__)

COLLECTIONS = weights.COLLECTIONS

#: ``(torchvision module regex, jaxdet module path template, layer kind)``; the regex must
#: match the whole module name (the key without its last ``.weight``-like component) and the
#: template may use its groups (``\1``).
Rule = tuple[str, str, str]

RESNET_RULES: tuple[Rule, ...] = (
    (r"conv1", "conv1", "conv"),
    (r"bn1", "bn1", "norm"),
    (r"layer(\d+)\.(\d+)\.(conv\d)", r"layer\1_\2/\3", "conv"),
    (r"layer(\d+)\.(\d+)\.(bn\d)", r"layer\1_\2/\3", "norm"),
    (r"layer(\d+)\.(\d+)\.downsample\.0", r"layer\1_\2/downsample_conv", "conv"),
    (r"layer(\d+)\.(\d+)\.downsample\.1", r"layer\1_\2/downsample_bn", "norm"),
)


def prefixed(rules: tuple[Rule, ...], source: str, target: str) -> tuple[Rule, ...]:
    """``rules`` under a torchvision module prefix (a regex) and a jaxdet path prefix."""
    return tuple((source + s, target + t, kind) for s, t, kind in rules)


FASTER_RCNN_RULES: tuple[Rule, ...] = (
    *prefixed(RESNET_RULES, r"backbone\.body\.", "body/"),
    (r"backbone\.fpn\.inner_blocks\.(\d+)\.0", r"fpn/inner_blocks_\1", "conv"),
    (r"backbone\.fpn\.layer_blocks\.(\d+)\.0", r"fpn/layer_blocks_\1", "conv"),
    (r"rpn\.head\.conv\.0\.0", "rpn/conv", "conv"),
    (r"rpn\.head\.cls_logits", "rpn/cls_logits", "conv"),
    (r"rpn\.head\.bbox_pred", "rpn/bbox_pred", "conv"),
    (r"roi_heads\.box_head\.fc6", "roi_heads/box_head/fc6", "linear_from_nchw"),
    (r"roi_heads\.box_head\.fc7", "roi_heads/box_head/fc7", "linear"),
    (r"roi_heads\.box_predictor\.cls_score", "roi_heads/box_predictor/cls_score", "linear"),
    (r"roi_heads\.box_predictor\.bbox_pred", "roi_heads/box_predictor/bbox_pred", "linear"),
)

#: torchvision's ``maskrcnn_resnet50_fpn``: Faster R-CNN plus the mask branch, which jaxdet
#: keeps at the detector's root (:mod:`jaxdet.detection.mask_head`, a ``model.mask`` section).
MASK_RCNN_RULES: tuple[Rule, ...] = (
    *FASTER_RCNN_RULES,
    (r"roi_heads\.mask_head\.(\d+)\.0", r"mask_head/\1", "conv"),
    *((rf"roi_heads\.mask_head\.mask_fcn{i + 1}", f"mask_head/{i}", "conv")  # before 0.13
      for i in range(4)),
    (r"roi_heads\.mask_predictor\.conv5_mask", "mask_predictor/conv5_mask", "conv_transpose"),
    (r"roi_heads\.mask_predictor\.mask_fcn_logits", "mask_predictor/mask_fcn_logits", "conv"),
)

#: torchvision's ``keypointrcnn_resnet50_fpn``: Faster R-CNN (background, person) plus the
#: keypoint branch at the root (:mod:`jaxdet.detection.keypoint_head`): conv indices
#: ``0, 2, ..., 14`` and ``kps_score_lowres`` (``ConvTranspose2d(k=4, s=2, p=1)`` = flipped
#: kernel in a Flax ``ConvTranspose`` with padding ``k - 1 - p = 2`` per side).
KEYPOINT_RCNN_RULES: tuple[Rule, ...] = (
    *FASTER_RCNN_RULES,
    (r"roi_heads\.keypoint_head\.(\d+)", r"keypoint_head/\1", "conv"),
    (r"roi_heads\.keypoint_predictor\.kps_score_lowres",
     "keypoint_predictor/kps_score_lowres", "conv_transpose"),
)

#: Architecture name -> its key-mapping table (``keypoint_mask_rcnn``: both branches, as
#: torchvision's ``RoIHeads`` runs them when a model has both; no released weights).
ARCHITECTURES: dict[str, tuple[Rule, ...]] = {
    "resnet": RESNET_RULES,
    "faster_rcnn": FASTER_RCNN_RULES,
    "mask_rcnn": MASK_RCNN_RULES,
    "keypoint_rcnn": KEYPOINT_RCNN_RULES,
    "keypoint_mask_rcnn": MASK_RCNN_RULES + KEYPOINT_RCNN_RULES[len(FASTER_RCNN_RULES):],
}

_NORM_NAMES = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}
_IGNORED_PARAMS = ("num_batches_tracked",)


def _conv(name: str, w: np.ndarray, ctx: Mapping[str, Any]) -> dict[str, np.ndarray]:
    del ctx
    if name == "weight":
        return {"kernel": w.transpose(2, 3, 1, 0)}  # [out, in, kh, kw] -> [kh, kw, in, out]
    return {name: w}


def _conv_transpose(name: str, w: np.ndarray, ctx: Mapping[str, Any]) -> dict[str, np.ndarray]:
    del ctx
    if name == "weight":  # [in, out, kh, kw] -> [kh, kw, in, out], spatially flipped
        return {"kernel": w.transpose(2, 3, 0, 1)[::-1, ::-1]}
    return {name: w}


def _linear(name: str, w: np.ndarray, ctx: Mapping[str, Any]) -> dict[str, np.ndarray]:
    del ctx
    return {"kernel": w.T} if name == "weight" else {name: w}


def _linear_from_nchw(
    name: str, w: np.ndarray, ctx: Mapping[str, Any]
) -> dict[str, np.ndarray]:
    if name != "weight":
        return {name: w}
    h = w_ = int(ctx["pooled_size"])
    out, n_in = w.shape
    if n_in % (h * w_):
        raise ValueError(f"fc weight {w.shape} is not [out, C * {h} * {w_}]")
    c = n_in // (h * w_)
    return {"kernel": w.reshape(out, c, h, w_).transpose(2, 3, 1, 0).reshape(h * w_ * c, out)}


def _norm(name: str, w: np.ndarray, ctx: Mapping[str, Any]) -> dict[str, np.ndarray]:
    del ctx
    return {_NORM_NAMES[name]: w}


#: Layer kind -> ``f(param name, torchvision array, context) -> {jaxdet leaf name: array}``.
LAYER_KINDS: dict[str, Callable[[str, np.ndarray, Mapping[str, Any]], dict[str, np.ndarray]]] = {
    "conv": _conv,
    "conv_transpose": _conv_transpose,
    "linear": _linear,
    "linear_from_nchw": _linear_from_nchw,
    "norm": _norm,
}


def detect_architecture(keys: Mapping[str, Any] | list[str]) -> str:
    """The :data:`ARCHITECTURES` entry whose layout ``keys`` (state_dict names) follow."""
    keys = set(keys)
    if "backbone.body.conv1.weight" in keys and "roi_heads.box_head.fc6.weight" in keys:
        mask = any(k.startswith("roi_heads.mask_predictor.") for k in keys)
        keypoint = any(k.startswith("roi_heads.keypoint_predictor.") for k in keys)
        return {(False, False): "faster_rcnn", (True, False): "mask_rcnn",
                (False, True): "keypoint_rcnn", (True, True): "keypoint_mask_rcnn"}[
            (mask, keypoint)]
    if "conv1.weight" in keys and "layer1.0.conv1.weight" in keys:
        return "resnet"
    raise ValueError(
        "unrecognised state_dict layout (expected a torchvision resnet18/34/50 or "
        f"{{faster,mask,keypoint}}rcnn_resnet50_fpn); first keys: {sorted(keys)[:8]}")


@dataclasses.dataclass
class ConversionReport:
    """What :func:`convert_state_dict` did: ``converted`` ``(torchvision key, "collection/path")``;
    ``unused`` key -> reason; ``ignored`` (``num_batches_tracked``); ``missing`` jaxdet leaves
    without a source; ``mismatched`` ``(key, leaf, source shape, target shape)``.
    """

    converted: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    unused: dict[str, str] = dataclasses.field(default_factory=dict)
    ignored: list[str] = dataclasses.field(default_factory=list)
    missing: list[str] = dataclasses.field(default_factory=list)
    mismatched: list[tuple[str, str, tuple[int, ...], tuple[int, ...]]] = dataclasses.field(
        default_factory=list)

    def summary(self) -> str:
        lines = [f"converted {len(self.converted)} arrays; ignored {len(self.ignored)} "
                 f"(num_batches_tracked); unused {len(self.unused)}; jaxdet leaves without a "
                 f"source {len(self.missing)}; shape mismatches {len(self.mismatched)}"]
        lines += [f"  unused {k}: {why}" for k, why in self.unused.items()]
        lines += [f"  missing {p}" for p in self.missing]
        lines += [f"  mismatch {k} -> {p}: {a} vs {b}" for k, p, a, b in self.mismatched]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _split_key(key: str) -> tuple[str, str]:
    module, _, name = key.rpartition(".")
    return module, name


def _target_index(target: Mapping[str, Any]) -> dict[str, tuple[str, tuple[int, ...]]]:
    """``"path/leaf"`` -> ``(collection, shape)`` over the collections of ``target``."""
    index = {}
    for coll in COLLECTIONS:
        for path, leaf in traverse_util.flatten_dict(dict(target.get(coll, {}))).items():
            index["/".join(path)] = (coll, tuple(leaf.shape))
    return index


def convert_state_dict(
    state_dict: Mapping[str, np.ndarray],
    target: Mapping[str, Any],
    rules: tuple[Rule, ...],
    *,
    scope: str = "",
    pooled_size: int = 7,
    exclude: tuple[str, ...] = (),
) -> tuple[dict[str, Any], ConversionReport]:
    r"""Map a torchvision ``state_dict`` onto a jaxdet variables tree.

    Args:
      state_dict: torchvision key -> NumPy array.
      target: the model's (abstract) ``{"params", "batch_stats"}`` (leaf collections, shapes).
      rules: the architecture's table (:data:`ARCHITECTURES`).
      scope: ``"a/b"`` prefix of the mapped modules in ``target`` ("" for none).
      pooled_size: RoI side ``h = w`` for ``linear_from_nchw``.
      exclude: regexes of torchvision keys to skip (reported unused), e.g.
        ``roi_heads\.box_predictor\..*`` to fine-tune on other classes.

    Returns ``(variables, report)``: float32 NumPy nested dicts of the converted leaves at their
    full paths, and the :class:`ConversionReport` (``missing``: leaves under ``scope``).
    """
    index = _target_index(target)
    prefix = scope.strip("/") + "/" if scope.strip("/") else ""
    compiled = [(re.compile(s), t, kind) for s, t, kind in rules]
    ctx = {"pooled_size": pooled_size}
    report = ConversionReport()
    flat: dict[tuple[str, ...], np.ndarray] = {}
    for key in state_dict:
        module, name = _split_key(key)
        if name in _IGNORED_PARAMS:
            report.ignored.append(key)
            continue
        if any(re.fullmatch(x, key) for x in exclude):
            report.unused[key] = "excluded"
            continue
        rule = next(((rx, t, k) for rx, t, k in compiled if rx.fullmatch(module)), None)
        if rule is None:
            report.unused[key] = "no mapping rule"
            continue
        rx, template, kind = rule
        path = prefix + rx.fullmatch(module).expand(template)
        array = np.asarray(state_dict[key], np.float32)
        for leaf, value in LAYER_KINDS[kind](name, array, ctx).items():
            dest = f"{path}/{leaf}"
            if dest not in index:
                report.unused[key] = f"the model has no {dest}"
                continue
            coll, shape = index[dest]
            if tuple(value.shape) != shape:
                report.mismatched.append((key, f"{coll}/{dest}", tuple(value.shape), shape))
                continue
            flat[(coll, *dest.split("/"))] = np.ascontiguousarray(value)
            report.converted.append((key, f"{coll}/{dest}"))
    filled = {"/".join(p[1:]) for p in flat}
    report.missing = [f"{coll}/{dest}" for dest, (coll, _) in index.items()
                      if dest.startswith(prefix) and dest not in filled]
    return traverse_util.unflatten_dict(flat), report


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------


def load_torch_state_dict(path: str) -> dict[str, np.ndarray]:
    """torchvision ``state_dict`` file -> ``{key: float32/int NumPy array}`` (imports torch)."""
    import torch  # the only torch import in jaxdet

    obj = torch.load(os.path.expanduser(path), map_location="cpu", weights_only=True)
    for wrapper in ("model", "state_dict"):
        if isinstance(obj, Mapping) and wrapper in obj and isinstance(obj[wrapper], Mapping):
            obj = obj[wrapper]
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path}: expected a state_dict (a mapping), got {type(obj).__name__}")
    return {k: v.detach().cpu().numpy() for k, v in obj.items() if hasattr(v, "detach")}


# ---------------------------------------------------------------------------------------------
# The model a config describes
# ---------------------------------------------------------------------------------------------


def default_scope(config: ml_collections.ConfigDict, arch: str) -> str:
    """Where an architecture sits in the config's model: ImageNet ResNet under ``body``
    (detection) or ``backbone``; detectors at the root.
    """
    if arch != "resnet":
        return ""
    return "body" if config.task == "detection" else "backbone"


def create_model(config: ml_collections.ConfigDict, num_classes: int | None = None) -> Any:
    """The Flax model of ``config`` (a detector with ``num_classes`` classes when given)."""
    from jaxdet import tasks  # keeps `--help` light

    task = tasks.get_task(config.task)
    if config.task == "detection" and num_classes is not None:
        module = importlib.import_module(task.DETECTORS[task.detector_name(config)])
        return module.create_model(config, num_classes, None)
    return task.create_model(config, bn_axis_name=None)


def abstract_variables(model: Any, image_size: int = 128) -> dict[str, Any]:
    """Shapes/dtypes of ``model``'s variables (``jax.eval_shape`` of ``init``, no compute)."""
    images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
    shapes = jax.eval_shape(
        lambda x: model.init(jax.random.key(0), x, train=False), images)
    return {k: v for k, v in shapes.items() if k in COLLECTIONS}


def convert_file(
    input_path: str,
    config: ml_collections.ConfigDict,
    *,
    scope: str | None = None,
    exclude: tuple[str, ...] = (),
) -> tuple[dict[str, Any], ConversionReport, dict[str, Any]]:
    """Load ``input_path`` and convert it for ``config``'s model: ``(variables, report, info)``,
    ``info`` for ``conversion.json`` (source, architecture, scope, classes, timings, report).
    """
    t0 = time.perf_counter()
    state_dict = load_torch_state_dict(input_path)
    t_load = time.perf_counter() - t0
    arch = detect_architecture(state_dict)
    num_classes = None
    if "roi_heads.box_predictor.cls_score.weight" in state_dict:
        num_classes = int(state_dict["roi_heads.box_predictor.cls_score.weight"].shape[0]) - 1
    if scope is None:
        scope = default_scope(config, arch)
    t1 = time.perf_counter()
    model = create_model(config, num_classes if arch != "resnet" else None)
    target = abstract_variables(model)
    t_target = time.perf_counter() - t1
    t1 = time.perf_counter()
    variables, report = convert_state_dict(
        state_dict, target, ARCHITECTURES[arch], scope=scope,
        pooled_size=faster_rcnn.roi_output_size(config.model), exclude=exclude)
    t_convert = time.perf_counter() - t1
    info = {
        "source": os.path.abspath(os.path.expanduser(input_path)),
        "architecture": arch,
        "scope": scope,
        "num_classes": num_classes,
        "num_source_arrays": len(state_dict),
        "seconds": {"load": round(t_load, 3), "model_shapes": round(t_target, 3),
                    "convert": round(t_convert, 3)},
        "report": report.to_json(),
    }
    return variables, report, info


def main(argv: list[str]) -> None:
    from absl import flags

    f = flags.FLAGS
    if len(argv) > 1:
        raise SystemExit(f"unexpected arguments: {argv[1:]}")
    config = f.config
    t0 = time.perf_counter()
    variables, report, info = convert_file(
        f.input, config, scope=f.scope, exclude=tuple(f.exclude))
    print(report.summary())
    if report.mismatched or (report.missing and not f.allow_missing):
        print("not written: fix the config (or pass --allow_missing / --exclude)",
              file=sys.stderr)
        raise SystemExit(1)
    info["config"] = config.to_dict()
    info["seconds"]["total"] = round(time.perf_counter() - t0, 3)
    weights.save_variables(f.output, variables, info)
    print(f"wrote {f.output} ({info['architecture']}, scope {info['scope'] or '/'}) in "
          f"{info['seconds']['total']:.1f} s; use --config.init_from={f.output}")


def _define_flags() -> None:
    from absl import flags
    from ml_collections import config_flags

    flags.DEFINE_string("input", None, "torchvision state_dict file (.pth).")
    config_flags.DEFINE_config_file(
        "config", None, "Config of the target model, e.g. configs/faster_rcnn_coco.py[:arg]; "
        "fields overridable as --config.model.x=...")
    flags.DEFINE_string("output", None, "Output directory (variables.msgpack, conversion.json).")
    flags.DEFINE_string("scope", None, "Path of the mapped modules in the model (default: "
                        "'body'/'backbone' for an ImageNet ResNet, '' for a detector).")
    flags.DEFINE_multi_string("exclude", [], "Regex of torchvision keys to skip, e.g. "
                              r"'roi_heads\.box_predictor\..*'.")
    flags.DEFINE_bool("allow_missing", False, "Write even if some jaxdet leaves get no source.")
    flags.mark_flags_as_required(["input", "config", "output"])


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
