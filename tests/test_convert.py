"""torchvision weight import (jaxdet.convert) and output parity with torchvision's detector.

The layout, report and ``init_from`` tests need no torch. The parity tests need the '.[ref]'
extra (torch, torchvision) and are skipped, with that reason, where torch is not importable:
ResNet-18 features, the full Faster R-CNN R50-FPN (features, RPN, proposals, detections), the
Mask R-CNN mask branch alone (small widths) and the mapping of a whole ``maskrcnn_resnet50_fpn``
state_dict (shapes only), ``ConvTranspose2d`` layouts, the COCO config's numbers, and the full
Keypoint R-CNN R50-FPN given a Mask R-CNN branch (``krcnn_parity_outputs``: detections,
heatmap logits, keypoints, keypoint scores, 28x28 and pasted masks; the
``keypointrcnn_resnet50_fpn`` state_dict through ``convert_file`` and
``configs/keypoint_rcnn_coco.py``).

Parity set-up (``_torchvision_frcnn``): torchvision's ``fasterrcnn_resnet50_fpn`` with random
weights (``torch.manual_seed(0)``, ``weights=None, weights_backbone=None``, eval mode), converted
into jaxdet's ``configs/faster_rcnn_coco.py`` detector. Both get the SAME normalised, zero-padded
``[2, 3, 192, 256]`` tensor (images of 192x256 and 160x224) with the unpadded sizes: jaxdet
with ``input_norm="none"``, torchvision bypassing ``GeneralizedRCNNTransform``, which by design
resizes each image (shorter side 800) and pads after normalising (jaxdet's pipeline pads the
[0, 1] image before normalising), and whose ``postprocess`` maps boxes back to the original
sizes (jaxdet's ``rescale_boxes``) — neither is compared here. Random weights are made
informative the same way in both (the torchvision weights are changed before conversion):

* BatchNorm weight/bias/running statistics random (identity statistics would hide a swapped
  mean/var);
* FPN ``layer_blocks`` x0.01: a random ResNet-50 gives pyramid levels of magnitude ~500, which
  would blow the RPN's deltas up (every proposal clipped to the image); scaled, ``P*`` are ~1;
* RPN ``cls_logits`` x30 and ``bbox_pred`` x3: objectness logits of std ~1 and deltas of std
  ~0.1-0.2, so proposals are ranked by clear margins and spread over the image;
* box predictor ``cls_score`` x20: class probabilities up to ~0.7 instead of ~1/91, so detections
  pass torchvision's score threshold 0.05.

Proposals: 200 per level before NMS and 100 after in both (torchvision's 1000 / 1000 cost more).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet import convert, predict, tasks
from jaxdet.detection import faster_rcnn
from jaxdet.models import resnet, weights
from jaxdet.train import loop
from jaxdet.train import step as step_lib
from tests.helpers import load_config

# torchvision.ops imports torch._dynamo, which imports triton (torch's GPU kernel compiler) if
# it is installed, and triton's LLVM segfaults when loaded after TensorFlow's (which jaxdet's
# TFDS code imports first). Nothing here runs on a GPU: hide triton from torch.
sys.modules.setdefault("triton", None)
try:
    import torch
    import torchvision
    from torchvision.models.detection.image_list import ImageList
except ImportError:  # pragma: no cover - CI installs the '.[ref]' extra
    torch = None

needs_torch = pytest.mark.skipif(
    torch is None, reason="torch/torchvision not importable: the parity reference is the "
    "'.[ref]' extra (pip install -e '.[dev,ref]')")

SIZES = ((192, 256), (160, 224))  # (height, width) of the two images; padded to 192x256
PRE_NMS, POST_NMS = 200, 100


# ---------------------------------------------------------------------------------------------
# Without torch
# ---------------------------------------------------------------------------------------------


def test_linear_from_nchw_permutes_rows_like_torch_flattening():
    rng = np.random.default_rng(0)
    c, h, w, out = 3, 2, 2, 5
    weight = rng.normal(size=(out, c * h * w)).astype(np.float32)  # torchvision [out, C*h*w]
    x = rng.normal(size=(h, w, c)).astype(np.float32)  # one pooled RoI, jaxdet's NHWC
    kernel = convert.LAYER_KINDS["linear_from_nchw"]("weight", weight, {"pooled_size": 2})
    kernel = kernel["kernel"]
    assert kernel.shape == (h * w * c, out)
    torch_style = weight @ x.transpose(2, 0, 1).reshape(-1)  # NCHW flatten: channel slowest
    np.testing.assert_allclose(x.reshape(-1) @ kernel, torch_style, rtol=1e-5, atol=1e-5)
    # Row (y, x, ch) of the kernel is column (ch, y, x) of the weight.
    np.testing.assert_array_equal(kernel[(1 * w + 0) * c + 2], weight[:, 2 * h * w + 1 * w + 0])


def _sds(*shape):
    return jax.ShapeDtypeStruct(shape, jnp.float32)


def test_convert_state_dict_layouts_and_report():
    rng = np.random.default_rng(1)
    target = {  # norm="batch" layout: scale/bias in params, statistics in batch_stats
        "params": {"body": {
            "conv1": {"kernel": _sds(7, 7, 3, 4)},
            "bn1": {"scale": _sds(4), "bias": _sds(3)},  # bias: wrong size on purpose
            "layer1_0": {"conv1": {"kernel": _sds(3, 3, 4, 4)}},  # no source: missing
        }},
        "batch_stats": {"body": {"bn1": {"mean": _sds(4), "var": _sds(4)}}},
    }
    sd = {
        "conv1.weight": rng.normal(size=(4, 3, 7, 7)),
        "bn1.weight": np.arange(4.0), "bn1.bias": np.ones(4), "bn1.running_mean": np.full(4, 2.0),
        "bn1.running_var": np.full(4, 3.0), "bn1.num_batches_tracked": np.asarray(7),
        "layer9.0.conv1.weight": np.zeros((4, 4, 3, 3)),  # rule matches, model has no layer9
        "fc.weight": np.zeros((10, 4)), "fc.bias": np.zeros(10),  # ImageNet classifier
    }
    variables, report = convert.convert_state_dict(sd, target, convert.RESNET_RULES,
                                                   scope="body")
    kernel = variables["params"]["body"]["conv1"]["kernel"]
    assert kernel.shape == (7, 7, 3, 4) and kernel.dtype == np.float32
    assert kernel[1, 2, 0, 3] == np.float32(sd["conv1.weight"][3, 0, 1, 2])  # OIHW -> HWIO
    np.testing.assert_array_equal(variables["params"]["body"]["bn1"]["scale"], np.arange(4.0))
    np.testing.assert_array_equal(variables["batch_stats"]["body"]["bn1"]["mean"], 2.0)
    np.testing.assert_array_equal(variables["batch_stats"]["body"]["bn1"]["var"], 3.0)
    assert "bias" not in variables["params"]["body"]["bn1"]
    assert report.ignored == ["bn1.num_batches_tracked"]
    assert report.unused == {
        "layer9.0.conv1.weight": "the model has no body/layer9_0/conv1/kernel",
        "fc.weight": "no mapping rule", "fc.bias": "no mapping rule"}
    assert report.mismatched == [("bn1.bias", "params/body/bn1/bias", (4,), (3,))]
    assert sorted(report.missing) == ["params/body/bn1/bias", "params/body/layer1_0/conv1/kernel"]
    assert len(report.converted) == 4
    # Excluded keys are reported as such.
    _, rep = convert.convert_state_dict(sd, target, convert.RESNET_RULES, scope="body",
                                        exclude=(r"bn1\..*",))
    assert rep.unused["bn1.running_var"] == "excluded" and len(rep.converted) == 1


def test_detect_architecture():
    assert convert.detect_architecture(["conv1.weight", "layer1.0.conv1.weight"]) == "resnet"
    assert convert.detect_architecture(
        ["backbone.body.conv1.weight", "roi_heads.box_head.fc6.weight"]) == "faster_rcnn"
    detector = ["backbone.body.conv1.weight", "roi_heads.box_head.fc6.weight"]
    mask = ["roi_heads.mask_predictor.conv5_mask.weight"]
    keypoint = ["roi_heads.keypoint_predictor.kps_score_lowres.weight"]
    assert convert.detect_architecture(detector + mask) == "mask_rcnn"
    assert convert.detect_architecture(detector + keypoint) == "keypoint_rcnn"
    assert convert.detect_architecture(detector + mask + keypoint) == "keypoint_mask_rcnn"
    # the keypoint table: torchvision's Sequential conv indices and the transpose conv
    rules = [(re.compile(rx), t, k) for rx, t, k in convert.KEYPOINT_RCNN_RULES]
    for module, path, kind in [("roi_heads.keypoint_head.14", "keypoint_head/14", "conv"),
                               ("roi_heads.keypoint_predictor.kps_score_lowres",
                                "keypoint_predictor/kps_score_lowres", "conv_transpose")]:
        rx, template, k = next(r for r in rules if r[0].fullmatch(module))
        assert (rx.fullmatch(module).expand(template), k) == (path, kind)
    with pytest.raises(ValueError, match="unrecognised"):
        convert.detect_architecture(["encoder.weight"])


def test_init_from_replaces_exactly_the_loaded_arrays(tmp_path):
    config = load_config("localization", "resnet,runlocal")
    task = tasks.get_task(config.task)
    size = config.data.image_size
    raw = {"image": np.zeros((size, size, 3), np.uint8),
           "objects": {"bbox": [[2.0, 2.0, 9.0, 9.0]], "label": [0]}}
    mesh = step_lib.make_mesh()
    fresh = jax.device_get(loop.initial_state(task, config, mesh, task.preprocess(raw)))
    conv1 = fresh.params["backbone"]["conv1"]["kernel"]
    mean = fresh.batch_stats["backbone"]["bn1"]["mean"]
    loaded = {"params": {"backbone": {"conv1": {"kernel": np.asarray(conv1) + 1.0}}},
              "batch_stats": {"backbone": {"bn1": {"mean": np.asarray(mean) + 0.5}}}}
    weights.save_variables(str(tmp_path / "w"), loaded, {"note": "test"})
    assert json.loads((tmp_path / "w" / weights.REPORT_FILE).read_text()) == {"note": "test"}
    config.init_from = str(tmp_path / "w")
    # Evaluation of imported weights: a workdir without checkpoints gives the init_from state
    # (predict.restore_state -> loop.initial_state, which merges the converted arrays).
    state = jax.device_get(
        predict.restore_state(task, config, str(tmp_path / "workdir"), mesh, [raw]))
    np.testing.assert_array_equal(state.params["backbone"]["conv1"]["kernel"], conv1 + 1.0)
    np.testing.assert_array_equal(state.batch_stats["backbone"]["bn1"]["mean"], mean + 0.5)
    # Everything else keeps its initialisation (same seed).
    state.params["backbone"]["conv1"]["kernel"] = conv1
    state.batch_stats["backbone"]["bn1"]["mean"] = mean
    for a, b in zip(jax.tree.leaves(fresh), jax.tree.leaves(state), strict=True):
        np.testing.assert_array_equal(a, b)
    # A loaded array that does not fit the model is an error naming it.
    bad = {"params": {"backbone": {"conv1": {"kernel": np.zeros((1, 1, 3, 4))}},
                      "head": {"nope": np.zeros(2)}}}
    with pytest.raises(ValueError, match=r"2 loaded arrays.*conv1/kernel.*head/nope: not in"):
        weights.merge_variables({"params": fresh.params}, bad)


# ---------------------------------------------------------------------------------------------
# Parity with torchvision
# ---------------------------------------------------------------------------------------------


def _randomise_norms(model, generator) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d | torchvision.ops.FrozenBatchNorm2d):
                c = m.weight.shape[0]
                m.weight.copy_(torch.rand(c, generator=generator) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(c, generator=generator) * 0.1)
                m.running_mean.copy_(torch.randn(c, generator=generator) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=generator) * 0.5 + 0.75)


def _state_dict(model) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}


def _rel(a, b) -> float:
    """max |a - b| / max |b|."""
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


@needs_torch
def test_resnet18_imagenet_backbone_matches_torchvision():
    # norm="frozen" (the detectors'); the norm="batch" placement is checked by
    # test_convert_state_dict_layouts_and_report.
    torch.manual_seed(0)
    tv = torchvision.models.resnet18(weights=None).eval()
    _randomise_norms(tv, torch.Generator().manual_seed(1))
    model = resnet.ResNet(depth=18, norm="frozen", input_norm="none")
    x = torch.randn(1, 3, 70, 90, generator=torch.Generator().manual_seed(2))  # odd sizes
    target = jax.eval_shape(
        lambda a: model.init(jax.random.key(0), a, train=False),
        jax.ShapeDtypeStruct((1, 70, 90, 3), jnp.float32))
    variables, report = convert.convert_state_dict(_state_dict(tv), target,
                                                   convert.RESNET_RULES)
    assert report.unused == {"fc.weight": "no mapping rule", "fc.bias": "no mapping rule"}
    assert len(report.ignored) == 20 and not report.missing and not report.mismatched
    assert len(report.converted) == 20 * 4 + 20  # 20 norms (4 arrays each), 20 convs
    got = jax.jit(lambda v, a: model.apply(v, a, train=False))(
        variables, jnp.asarray(x.numpy().transpose(0, 2, 3, 1)))
    with torch.no_grad():
        y = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
        for i, layer in enumerate([tv.layer1, tv.layer2, tv.layer3, tv.layer4]):
            y = layer(y)
            ref = y.numpy().transpose(0, 2, 3, 1)
            assert got[f"C{i + 2}"].shape == ref.shape
            assert _rel(got[f"C{i + 2}"], ref) < 1e-4, f"C{i + 2}"


@needs_torch
def test_convert_file_resnet_into_a_detector_body(tmp_path):
    torch.manual_seed(0)
    tv = torchvision.models.resnet18(weights=None)
    path = str(tmp_path / "resnet18.pth")
    torch.save({"model": tv.state_dict()}, path)  # a checkpoint wrapping the state_dict
    config = load_config("faster_rcnn_shapes", "runlocal")
    config.model.update(depth=18, width=64, stage_sizes=(), block="", norm="frozen")
    variables, report, info = convert.convert_file(path, config)
    assert info["architecture"] == "resnet" and info["scope"] == "body"
    assert not report.missing and not report.mismatched and len(report.unused) == 2
    weights.save_variables(str(tmp_path / "out"), variables, info)
    loaded = weights.load_variables(str(tmp_path / "out"))
    np.testing.assert_array_equal(loaded["batch_stats"]["body"]["bn1"]["var"],
                                  tv.bn1.running_var.numpy())
    np.testing.assert_array_equal(loaded["params"]["body"]["layer4_1"]["conv2"]["kernel"],
                                  tv.layer4[1].conv2.weight.detach().numpy().transpose(2, 3, 1, 0))
    detector = convert.create_model(config)
    merged, n, kept = weights.merge_variables(convert.abstract_variables(detector), loaded)
    assert n == len(report.converted) == 100
    assert kept and all(p.split("/")[1] in ("fpn", "rpn", "roi_heads") for p in kept)
    assert merged["params"]["body"]["conv1"]["kernel"].shape == (7, 7, 3, 64)


@pytest.fixture(scope="module")
def frcnn():
    return frcnn_parity_outputs()


def _normalised_batch():
    """``[2, 3, H, W]`` torch tensor: random images of ``SIZES`` normalised with ImageNet's
    mean/std and zero-padded to the first (largest) size, as torchvision's transform pads the
    normalised batch; both models are fed this same tensor."""
    g = torch.Generator().manual_seed(2)
    height, width = SIZES[0]
    x = torch.zeros(2, 3, height, width)
    mean = torch.tensor(resnet.IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(resnet.IMAGENET_STD)[:, None, None]
    for i, (h, w) in enumerate(SIZES):
        x[i, :, :h, :w] = (torch.rand(3, h, w, generator=g) - mean) / std
    return x


def frcnn_parity_outputs(mask: bool = False) -> dict:
    """torchvision's and jaxdet's outputs for the same weights and inputs (module docstring);
    also printed by experiments/torchvision_parity.py.

    ``mask=True``: the same with ``maskrcnn_resnet50_fpn`` (``mask_fcn_logits`` x5 so mask
    probabilities are not all near 0.5) and jaxdet's ``faster_rcnn_coco.py:mask``; adds ``"masks"``:
    per image ``(jaxdet [K, 28, 28], torchvision [K, 28, 28])`` probabilities and the pasted
    binary masks ``[K, H, W]`` of both (torchvision's ``paste_masks_in_image``, jaxdet's
    ``ops.paste_masks``). Too costly for the test budget (a second R50-FPN compilation): run
    by the experiment script only.
    """
    torch.manual_seed(0)
    build = (torchvision.models.detection.maskrcnn_resnet50_fpn if mask
             else torchvision.models.detection.fasterrcnn_resnet50_fpn)
    tv = build(weights=None, weights_backbone=None, num_classes=91).eval()
    _randomise_norms(tv, torch.Generator().manual_seed(1))
    scales = {"backbone.fpn.layer_blocks": 0.01, "rpn.head.cls_logits": 30.0,
              "rpn.head.bbox_pred": 3.0, "roi_heads.box_predictor.cls_score": 20.0,
              "roi_heads.mask_predictor.mask_fcn_logits": 5.0}
    with torch.no_grad():
        for name, p in tv.named_parameters():
            for prefix, factor in scales.items():
                if name.startswith(prefix):
                    p.mul_(factor)
    tv.rpn._pre_nms_top_n = {"training": PRE_NMS, "testing": PRE_NMS}
    tv.rpn._post_nms_top_n = {"training": POST_NMS, "testing": POST_NMS}

    config = load_config("faster_rcnn_coco", "mask" if mask else "")
    config.model.rpn.pre_nms_top_n_test = PRE_NMS
    config.model.rpn.post_nms_top_n_test = POST_NMS
    config.model.input_norm = "none"  # both get the normalised tensor
    model = faster_rcnn.create_model(config, num_classes=90)
    variables, report = convert.convert_state_dict(
        _state_dict(tv), convert.abstract_variables(model),
        convert.MASK_RCNN_RULES if mask else convert.FASTER_RCNN_RULES)

    x = _normalised_batch()
    with torch.no_grad():
        body = tv.backbone.body(x)
        feats = tv.backbone.fpn(body)  # = tv.backbone(x)
        objectness, deltas = tv.rpn.head(list(feats.values()))
        proposals, _ = tv.rpn(ImageList(x, list(SIZES)), feats)
        detections, _ = tv.roi_heads(feats, proposals, list(SIZES))

    def forward(v, images, image_hw):
        out, state = model.apply(
            v, images, image_hw, train=False, mutable=["intermediates"],
            capture_intermediates=lambda m, method: m.name in ("body", "fpn", "rpn")
            and method == "__call__")
        return out, state["intermediates"]

    out, inter = jax.jit(forward)(variables, jnp.asarray(x.numpy().transpose(0, 2, 3, 1)),
                                  jnp.asarray(SIZES, jnp.float32))
    nhwc = lambda t: t.numpy().transpose(0, 2, 3, 1)  # noqa: E731
    result = {
        "report": report,
        "features": [(f"C{k + 2}", inter["body"]["__call__"][0][f"C{k + 2}"], nhwc(body[str(k)]))
                     for k in range(4)]
        + [(f"P{k + 2}", inter["fpn"]["__call__"][0][f"P{k + 2}"], nhwc(f))
           for k, f in enumerate(feats.values())],
        "objectness": [(np.asarray(a), nhwc(b).reshape(2, -1))
                       for a, b in zip(inter["rpn"]["__call__"][0][0], objectness, strict=True)],
        "deltas": [(np.asarray(a), nhwc(b).reshape(2, -1, 4))
                   for a, b in zip(inter["rpn"]["__call__"][0][1], deltas, strict=True)],
        "proposals": [(np.asarray(out["proposals"][i])[np.asarray(out["proposal_valid"][i])],
                       proposals[i].numpy()) for i in range(2)],
        "detections": [
            ({k: np.asarray(out[k][i])[np.asarray(out["valid"][i])]
              for k in ("boxes", "scores", "classes")},
             {k: v.numpy() for k, v in detections[i].items()}) for i in range(2)],
    }
    if mask:
        from torchvision.models.detection.roi_heads import paste_masks_in_image

        from jaxdet import ops

        result["masks"] = []
        for i, (h, w) in enumerate(SIZES):
            valid = np.asarray(out["valid"][i])
            probs, boxes = out["masks"][i][valid], out["boxes"][i][valid]
            ref = detections[i]["masks"]  # [K, 1, 28, 28]
            pasted_ref = paste_masks_in_image(ref, detections[i]["boxes"], (h, w), padding=1)
            result["masks"].append((
                np.asarray(probs), ref[:, 0].numpy(),
                np.asarray(ops.paste_masks(probs, boxes, h, w)),
                pasted_ref[:, 0].numpy() > 0.5))
    return result


def _match(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For each row of ``a`` the index of the nearest row of ``b`` (max-abs distance)."""
    return np.abs(a[:, None, :] - b[None, :, :]).max(-1).argmin(1)


@needs_torch
def test_frcnn_conversion_maps_every_array(frcnn):
    report = frcnn["report"]
    assert len(report.converted) == 295 and len(report.ignored) == 53  # num_batches_tracked
    assert not report.unused and not report.missing and not report.mismatched


@needs_torch
def test_frcnn_backbone_and_fpn_features_match(frcnn):
    for name, got, ref in frcnn["features"]:
        assert got.shape == ref.shape, name
        assert _rel(got, ref) < 1e-4, name


@needs_torch
def test_frcnn_rpn_objectness_and_proposals_match(frcnn):
    for (obj, obj_ref), (dl, dl_ref) in zip(frcnn["objectness"], frcnn["deltas"], strict=True):
        assert obj.shape == obj_ref.shape and dl.shape == dl_ref.shape
        assert _rel(obj, obj_ref) < 1e-4 and _rel(dl, dl_ref) < 1e-4
    for got, ref in frcnn["proposals"]:
        assert len(got) == len(ref) == POST_NMS
        idx = _match(got, ref)
        assert sorted(idx) == list(range(len(ref)))  # the same set of proposals
        assert np.abs(got - ref[idx]).max() < 1e-3


@needs_torch
def test_frcnn_detections_match(frcnn):
    for got, ref in frcnn["detections"]:
        assert len(ref["boxes"]) >= 20  # the scaled classifier makes detections meaningful
        assert len(got["boxes"]) == len(ref["boxes"])
        idx = _match(got["boxes"], ref["boxes"])
        assert sorted(idx) == list(range(len(ref["boxes"])))
        assert np.abs(got["boxes"] - ref["boxes"][idx]).max() < 1e-2
        assert np.abs(got["scores"] - ref["scores"][idx]).max() < 1e-4
        np.testing.assert_array_equal(got["classes"] + 1, ref["labels"][idx])  # 0 = background


@needs_torch
def test_coco_config_has_torchvision_fasterrcnn_numbers():
    config = load_config("faster_rcnn_coco")
    m = config.model
    tv = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    tv_rpn, heads, transform = tv.rpn, tv.roi_heads, tv.transform
    spec = faster_rcnn.DetectorSpec.from_config(m, num_classes=90)
    assert spec.rpn.anchor_sizes == tv_rpn.anchor_generator.sizes
    assert all(spec.rpn.aspect_ratios == r for r in tv_rpn.anchor_generator.aspect_ratios)
    assert (spec.rpn.fg_iou, spec.rpn.bg_iou) == (tv_rpn.proposal_matcher.high_threshold,
                                                  tv_rpn.proposal_matcher.low_threshold)
    assert (spec.rpn.batch_size_per_image, spec.rpn.positive_fraction) == (
        tv_rpn.fg_bg_sampler.batch_size_per_image, tv_rpn.fg_bg_sampler.positive_fraction)
    assert (spec.rpn.pre_nms_top_n_train, spec.rpn.pre_nms_top_n_test) == (
        tv_rpn._pre_nms_top_n["training"], tv_rpn._pre_nms_top_n["testing"])
    assert (spec.rpn.post_nms_top_n_train, spec.rpn.post_nms_top_n_test) == (
        tv_rpn._post_nms_top_n["training"], tv_rpn._post_nms_top_n["testing"])
    assert (spec.rpn.nms_thresh, spec.rpn.min_size) == (tv_rpn.nms_thresh, tv_rpn.min_size)
    assert (spec.roi.fg_iou, spec.roi.bg_iou) == (heads.proposal_matcher.high_threshold,
                                                  heads.proposal_matcher.low_threshold)
    assert (spec.roi.batch_size_per_image, spec.roi.positive_fraction) == (
        heads.fg_bg_sampler.batch_size_per_image, heads.fg_bg_sampler.positive_fraction)
    post = spec.postprocess
    assert (post.score_thresh, post.nms_thresh, post.detections_per_img) == (
        heads.score_thresh, heads.nms_thresh, heads.detections_per_img)
    assert spec.roi.box_weights == heads.box_coder.weights
    assert (spec.roi.output_size,) * 2 == heads.box_roi_pool.output_size
    assert spec.roi.sampling_ratio == heads.box_roi_pool.sampling_ratio
    assert not spec.roi.aligned  # MultiScaleRoIAlign calls roi_align(aligned=False)
    assert spec.roi.representation_size == heads.box_head.fc6.out_features
    assert spec.fpn_channels == tv.backbone.out_channels
    assert (m.depth, m.width, m.norm, m.input_norm) == (50, 64, "frozen", "imagenet")
    assert list(resnet.IMAGENET_MEAN) == transform.image_mean
    assert list(resnet.IMAGENET_STD) == transform.image_std
    assert (config.data.resize_short, config.data.resize_max) == (transform.min_size[0],
                                                                  transform.max_size)
    # torchvision's 91 logits = background + COCO ids 1..90: the data keep COCO's id space
    assert config.data.category_labels == "ids"
    with pytest.raises(ValueError, match="needs --config.data.path"):
        tasks.get_task("detection").datasets(config)


@needs_torch
@pytest.mark.parametrize(("kernel", "padding", "flax_padding"),
                         [(2, 0, "VALID"), (4, 1, ((2, 2), (2, 2)))])
def test_conv_transpose_layout_matches_torch(kernel, padding, flax_padding):
    # (2, 0): Mask R-CNN's conv5_mask; (4, 1): Keypoint R-CNN's kps_score_lowres.
    import flax.linen as nn

    torch.manual_seed(0)
    tv = torch.nn.ConvTranspose2d(3, 5, kernel, stride=2, padding=padding)
    x = torch.randn(2, 3, 6, 7)
    layer = nn.ConvTranspose(5, (kernel, kernel), strides=(2, 2), padding=flax_padding)
    params = {
        "kernel": convert.LAYER_KINDS["conv_transpose"](
            "weight", tv.weight.detach().numpy(), {})["kernel"],
        "bias": tv.bias.detach().numpy()}
    got = layer.apply({"params": params}, jnp.asarray(x.numpy().transpose(0, 2, 3, 1)))
    with torch.no_grad():
        ref = tv(x).numpy().transpose(0, 2, 3, 1)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


@needs_torch
def test_mask_branch_matches_torchvision():
    import flax.linen as nn
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

    from jaxdet.detection import mask_head

    torch.manual_seed(0)
    width, classes = 8, 3  # small widths: the layouts, not the size, are under test
    heads, predictor = MaskRCNNHeads(6, [width] * 4, 1), MaskRCNNPredictor(width, width,
                                                                            classes + 1)
    sd = {f"roi_heads.mask_head.{k}": v for k, v in _state_dict(heads).items()}
    sd |= {f"roi_heads.mask_predictor.{k}": v for k, v in _state_dict(predictor).items()}

    class Branch(nn.Module):  # the two modules at the detector's root, as in FasterRCNN
        @nn.compact
        def __call__(self, x):
            x = mask_head.MaskRCNNHeads(width, name="mask_head")(x)
            return mask_head.MaskRCNNPredictor(classes, width, name="mask_predictor")(x)

    x = torch.randn(5, 6, 14, 14)
    xj = jnp.asarray(x.numpy().transpose(0, 2, 3, 1))
    target = jax.eval_shape(lambda a: Branch().init(jax.random.key(0), a), xj)
    variables, report = convert.convert_state_dict(sd, target, convert.MASK_RCNN_RULES)
    assert len(report.converted) == 12 and not report.unused and not report.missing
    with torch.no_grad():
        ref = predictor(heads(x)).numpy().transpose(0, 2, 3, 1)
    got = jax.jit(Branch().apply)(variables, xj)
    assert got.shape == ref.shape == (5, 28, 28, classes + 1)
    assert _rel(got, ref) < 1e-5


@needs_torch
def test_maskrcnn_state_dict_maps_onto_the_mask_rcnn_detector():
    torch.manual_seed(0)
    tv = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    sd = _state_dict(tv)
    assert convert.detect_architecture(sd) == "mask_rcnn"
    config = load_config("faster_rcnn_coco", "mask")
    assert config.model.mask.roi_output_size == tv.roi_heads.mask_roi_pool.output_size[0]
    target = convert.abstract_variables(faster_rcnn.create_model(config, num_classes=90))
    _, report = convert.convert_state_dict(sd, target, convert.MASK_RCNN_RULES)
    assert len(report.converted) == 295 + 12 and len(report.ignored) == 53
    assert not report.unused and not report.missing and not report.mismatched


def test_importing_jaxdet_convert_does_not_import_torch():
    code = "import sys, jaxdet.convert; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


# ---------------------------------------------------------------------------------------------
# Keypoint R-CNN (with a mask branch): detections, keypoints, heatmaps, masks
# ---------------------------------------------------------------------------------------------

KP_DETECTIONS = 6  # detections per image in both (torchvision's 100: 17x the keypoint head)
KP_NMS = 0.7  # box NMS in both (torchvision's 0.5 leaves 4-7 of the random model's big boxes)


def krcnn_parity_outputs(detections: int = KP_DETECTIONS, decode_window: int = 0) -> dict:
    """torchvision's ``keypointrcnn_resnet50_fpn`` given a Mask R-CNN branch too, and jaxdet's
    ``configs/keypoint_rcnn_coco.py`` plus a ``model.mask`` section: both branches in ONE compiled
    R50-FPN (a second and third one would each cost as much as the Faster R-CNN test).

    torchvision's ``RoIHeads`` runs a mask and a keypoint branch together when it has both,
    so the mask branch (``MaskRCNNHeads(256, [256] * 4)``, ``MaskRCNNPredictor(256, 256, 2)``,
    RoIAlign 14x14, the modules of ``maskrcnn_resnet50_fpn`` with 2 classes) is attached to the
    keypoint model. Weights made informative as in :func:`frcnn_parity_outputs`, plus
    ``kps_score_lowres`` x8 (heatmap logits of std ~1). Converted with the
    ``keypoint_mask_rcnn`` table into ``configs/keypoint_rcnn_coco.py``'s detector with
    a ``model.mask`` section; the plain ``keypointrcnn_resnet50_fpn`` keys (all but the mask
    branch's) also alone with the ``keypoint_rcnn`` table (``"plain_report"``: only the mask
    leaves left without a source). ``detections`` per image in both
    (``box_detections_per_img``; box NMS at ``KP_NMS``); keypoints decoded for all of them
    (``keypoint.detections_per_img=0``, as torchvision) with a search window ``decode_window``
    (0: 256, the largest RoI side here, so the decoding is exact whatever the heatmaps; the
    config's 32 is exact for RoIs up to 32 px and for peaked heatmaps).
    """
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.models.detection.roi_heads import paste_masks_in_image

    from jaxdet import ops

    torch.manual_seed(0)
    tv = torchvision.models.detection.keypointrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, box_detections_per_img=detections,
        box_nms_thresh=KP_NMS, rpn_pre_nms_top_n_test=PRE_NMS, rpn_post_nms_top_n_test=POST_NMS)
    _randomise_norms(tv, torch.Generator().manual_seed(1))
    heads = tv.roi_heads
    heads.mask_roi_pool = torchvision.ops.MultiScaleRoIAlign(["0", "1", "2", "3"], 14, 2)
    heads.mask_head = MaskRCNNHeads(256, [256] * 4, 1)
    heads.mask_predictor = MaskRCNNPredictor(256, 256, 2)
    tv.eval()
    scales = {"backbone.fpn.layer_blocks": 0.01, "rpn.head.cls_logits": 30.0,
              "rpn.head.bbox_pred": 3.0, "roi_heads.box_predictor.cls_score": 20.0,
              "roi_heads.mask_predictor.mask_fcn_logits": 5.0,
              "roi_heads.keypoint_predictor.kps_score_lowres": 8.0}
    with torch.no_grad():
        for name, p in tv.named_parameters():
            for prefix, factor in scales.items():
                if name.startswith(prefix):
                    p.mul_(factor)
    sd = _state_dict(tv)
    plain = {k: v for k, v in sd.items()
             if not k.startswith(("roi_heads.mask_head.", "roi_heads.mask_predictor."))}

    config = load_config("keypoint_rcnn_coco")
    config.model.input_norm = "none"
    config.model.rpn.update(pre_nms_top_n_test=PRE_NMS, post_nms_top_n_test=POST_NMS)
    config.model.postprocess.update(detections_per_img=detections, nms_thresh=KP_NMS)
    config.model.keypoint.update(detections_per_img=0,
                                 decode_window=decode_window or max(max(SIZES)))
    config.model.mask = load_config("faster_rcnn_coco", "mask").model.mask
    model = faster_rcnn.create_model(config, num_classes=1)
    target = convert.abstract_variables(model)
    variables, report = convert.convert_state_dict(
        sd, target, convert.ARCHITECTURES[convert.detect_architecture(sd)])
    _, plain_report = convert.convert_state_dict(
        plain, target, convert.ARCHITECTURES[convert.detect_architecture(plain)])

    x = _normalised_batch()
    heatmaps = []
    hook = heads.keypoint_predictor.register_forward_hook(lambda m, i, o: heatmaps.append(o))
    with torch.no_grad():
        feats = tv.backbone(x)
        proposals, _ = tv.rpn(ImageList(x, list(SIZES)), feats)
        detections_tv, _ = heads(feats, proposals, list(SIZES))
    hook.remove()
    heatmaps_tv = np.split(heatmaps[0].numpy().transpose(0, 2, 3, 1),  # [D_i, 56, 56, 17]
                           np.cumsum([len(d["boxes"]) for d in detections_tv])[:-1])

    def forward(v, images, image_hw):
        out, state = model.apply(
            v, images, image_hw, train=False, mutable=["intermediates"],
            capture_intermediates=lambda m, method: m.name == "keypoint_predictor"
            and method == "__call__")
        return out, state["intermediates"]["keypoint_predictor"]["__call__"][0]

    out, logits = jax.jit(forward)(variables, jnp.asarray(x.numpy().transpose(0, 2, 3, 1)),
                                   jnp.asarray(SIZES, jnp.float32))
    logits = np.asarray(logits).reshape((2, detections) + logits.shape[1:])
    result = {"report": report, "plain_report": plain_report,
              "architectures": (convert.detect_architecture(sd),
                                convert.detect_architecture(plain)),
              "detections": [], "keypoints": [], "heatmaps": [], "masks": []}
    for i, (h, w) in enumerate(SIZES):
        valid = np.asarray(out["valid"][i])
        ref = {k: v.numpy() for k, v in detections_tv[i].items()}
        result["detections"].append(
            ({k: np.asarray(out[k][i])[valid] for k in ("boxes", "scores", "classes")}, ref))
        result["keypoints"].append((np.asarray(out["keypoints"][i])[valid],
                                    ref["keypoints"], ref["keypoints_scores"]))
        # every detection is a person: the keypoint rows are the detections, in order
        result["heatmaps"].append((logits[i][valid], heatmaps_tv[i]))
        probs, boxes = out["masks"][i][valid], out["boxes"][i][valid]
        pasted_ref = paste_masks_in_image(detections_tv[i]["masks"], detections_tv[i]["boxes"],
                                          (h, w), padding=1)
        result["masks"].append((np.asarray(probs), ref["masks"][:, 0],
                                np.asarray(ops.paste_masks(probs, boxes, h, w)),
                                pasted_ref[:, 0].numpy() > 0.5))
    return result


@needs_torch
def test_krcnn_with_a_mask_branch_matches_torchvision():
    # One test (not one per check on a module fixture): under xdist a module fixture is built
    # again on every worker that runs one of its tests, and this one is the test file's cost.
    krcnn = krcnn_parity_outputs()
    assert krcnn["architectures"] == ("keypoint_mask_rcnn", "keypoint_rcnn")
    report = krcnn["report"]  # 8 keypoint convs + kps_score_lowres, 4 mask convs + 2
    assert len(report.converted) == 295 + 18 + 12 and len(report.ignored) == 53
    assert not report.unused and not report.missing and not report.mismatched
    # keypointrcnn_resnet50_fpn's own keys: every one used; left: the mask branch's leaves
    report = krcnn["plain_report"]
    assert len(report.converted) == 295 + 18 and not report.unused and not report.mismatched
    assert len(report.missing) == 12
    assert all(p.split("/")[1] in ("mask_head", "mask_predictor") for p in report.missing)

    for (got, ref), (kps, kps_ref, kp_scores_ref), (hm, hm_ref), (probs, probs_ref, pasted,
            pasted_ref) in zip(krcnn["detections"], krcnn["keypoints"], krcnn["heatmaps"],
                               krcnn["masks"], strict=True):
        assert len(ref["boxes"]) == KP_DETECTIONS  # the scaled classifier: enough detections
        assert len(got["boxes"]) == len(ref["boxes"])
        idx = _match(got["boxes"], ref["boxes"])
        assert sorted(idx) == list(range(len(ref["boxes"])))
        assert np.abs(got["boxes"] - ref["boxes"][idx]).max() < 1e-2
        assert np.abs(got["scores"] - ref["scores"][idx]).max() < 1e-4
        np.testing.assert_array_equal(got["classes"] + 1, ref["labels"][idx])  # 1 = person
        # heatmap logits [D, 56, 56, 17] of the same boxes, then the decoded keypoints
        assert hm.shape == hm_ref.shape == (len(idx), 56, 56, 17)
        assert _rel(hm, hm_ref[idx]) < 1e-4
        assert kps.shape == kps_ref.shape == (len(idx), 17, 3)
        assert np.abs(kps[..., :2] - kps_ref[idx, :, :2]).max() < 0.5  # pixels
        assert _rel(kps[..., 2], kp_scores_ref[idx]) < 1e-4  # the interpolated logit
        # masks: 28x28 probabilities (logits x5: sharp), and pasted + thresholded in the image
        assert np.abs(probs - probs_ref[idx]).max() < 1e-3
        inter = (pasted & pasted_ref[idx]).sum((1, 2))
        union = (pasted | pasted_ref[idx]).sum((1, 2))
        assert union.min() > 0 and (inter / union).min() >= 0.99
