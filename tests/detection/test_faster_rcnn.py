"""The Faster R-CNN module: spec checks, parameter names, outputs, losses, one SGD step."""

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jaxdet.core import ConfigError
from jaxdet.detection import faster_rcnn, rpn


def _model_config(levels="fpn"):
    return ml_collections.ConfigDict({
        "depth": 0, "stage_sizes": (1, 1, 1, 1), "block": "basic", "width": 4,
        "stem": "imagenet", "norm": "group", "gn_groups": 2, "levels": levels,
        "fpn_channels": 8, "recall_top_n": 20,
        "rpn": {"anchor_sizes": ((8,), (16,), (32,), (64,), (128,)) if levels == "fpn"
                else ((8, 16, 32),),
                "batch_size_per_image": 32, "pre_nms_top_n_train": 40,
                "post_nms_top_n_train": 30, "pre_nms_top_n_test": 40,
                "post_nms_top_n_test": 20},
        "roi": {"batch_size_per_image": 16, "canonical_size": 32.0, "representation_size": 16},
        "postprocess": {"detections_per_img": 10},
    })


def _model(levels="fpn"):
    return faster_rcnn.create_model(
        ml_collections.ConfigDict({"model": _model_config(levels)}), num_classes=3)


def _init(model, images):
    return jax.jit(model.init, static_argnames="train")(jax.random.key(0), images, train=False)


def _inputs(batch=2, size=32):
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.uniform(size=(batch, size, size, 3)), jnp.float32)
    gt_boxes = np.zeros((batch, 3, 4), np.float32)
    gt_boxes[:, 0] = [2, 3, 14, 18]
    gt_boxes[:, 1] = [16, 10, 30, 28]
    targets = {"gt_boxes": jnp.asarray(gt_boxes),
               "gt_labels": jnp.asarray([[0, 2, 0]] * batch, jnp.int32),
               "gt_valid": jnp.asarray([[True, True, False]] * batch)}
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(1), i))(jnp.arange(batch))
    return images, targets, keys


def test_spec_checks_and_reads_the_config():
    spec = faster_rcnn.DetectorSpec.from_config(_model_config(), num_classes=3)
    assert spec.rpn.num_anchors == 3 and spec.rpn.batch_size_per_image == 32
    assert spec.rpn.anchor_sizes[0] == (8.0,)
    assert spec.roi.canonical_size == 32.0 and spec.roi.fg_iou == 0.5  # given / default
    assert spec.postprocess.detections_per_img == 10 and spec.postprocess.nms_thresh == 0.5
    assert spec.mask is None and spec.keypoint is None
    assert faster_rcnn.DetectorSpec.from_config(_model_config("c4"), 3).rpn.num_anchors == 9
    with pytest.raises(ValueError, match="anchor_sizes needs 5 entries"):
        faster_rcnn.DetectorSpec(num_classes=3, rpn=rpn.RPNSpec(anchor_sizes=((32,),)))
    with pytest.raises(ValueError, match="levels"):
        faster_rcnn.DetectorSpec(num_classes=3, levels="p3")


@pytest.mark.parametrize("key, value, message", [
    ("rpn_fg_iou", 0.6, r"config.model.rpn_fg_iou: the R-CNN fields live in the sections"),
    ("score_thresh", 0.1, r"config.model.score_thresh: the R-CNN fields live in"),
    ("mask_head", True, r"config.model.mask_head: the R-CNN fields live in"),
])
def test_spec_rejects_fields_outside_their_section(key, value, message):
    config = _model_config()
    config[key] = value
    with pytest.raises(ConfigError, match=message):
        faster_rcnn.DetectorSpec.from_config(config, 3)


def test_spec_rejects_unknown_fields_inside_a_section():
    config = _model_config()
    config.rpn.fg_iuo = 0.6
    with pytest.raises(ConfigError, match=r"config.model.rpn.fg_iuo: not a field of model.rpn"):
        faster_rcnn.DetectorSpec.from_config(config, 3)


def test_sections_switch_the_branches_and_their_loss_terms():
    config = _model_config()
    assert faster_rcnn.loss_terms_for(config, 3) == faster_rcnn.LOSS_TERMS
    config.mask = {"width": 8}
    config.keypoint = {"num_keypoints": 5, "flip_pairs": ((1, 2),), "roi_scale": 1.25}
    spec = faster_rcnn.DetectorSpec.from_config(config, 3)
    assert spec.mask.width == 8 and spec.mask.roi_output_size == 14
    assert spec.keypoint.num_keypoints == 5 and spec.keypoint.roi_scale == 1.25
    assert faster_rcnn.loss_terms_for(config, 3)[-2:] == ("roi_mask", "roi_keypoint")


def test_parameter_names_follow_torchvision():
    model = _model()
    images, _, _ = _inputs()
    params = jax.eval_shape(lambda: model.init(jax.random.key(0), images, train=False))["params"]
    assert sorted(params) == ["body", "fpn", "roi_heads", "rpn"]
    assert sorted(params["rpn"]) == ["bbox_pred", "cls_logits", "conv"]
    assert sorted(params["roi_heads"]) == ["box_head", "box_predictor"]
    assert params["roi_heads"]["box_head"]["fc6"]["kernel"].shape == (7 * 7 * 8, 16)
    assert params["roi_heads"]["box_predictor"]["bbox_pred"]["kernel"].shape == (16, 16)
    assert "layer4_0" in params["body"] and "inner_blocks_3" in params["fpn"]


def test_train_and_inference_outputs():
    """C4 here (the FPN path runs through the task's loss and predict functions in
    tests/tasks/test_detection.py)."""
    model = _model("c4")
    images, targets, keys = _inputs()
    variables = _init(model, images)
    out = jax.jit(lambda v: model.apply(v, images, train=True, targets=targets, rng=keys))(
        variables)
    assert set(out["terms"]) == set(faster_rcnn.LOSS_TERMS)
    for name, (total, _) in out["terms"].items():
        assert np.isfinite(total), name
    assert float(out["terms"]["rpn_objectness"][1]) == 2 * 32  # every image fills its sample
    assert 0 < float(out["terms"]["roi_classifier"][1]) <= 2 * 16
    # the gt boxes are appended to the proposals: every image has foreground RoIs
    assert float(out["num_foreground_rois"][0]) >= 2 * 2
    dets = jax.jit(lambda v: model.apply(v, images, jnp.asarray([[32, 32], [20, 24]]),
                                         train=False))(variables)
    chex.assert_shape([dets["boxes"], dets["scores"], dets["classes"], dets["valid"]],
                      [(2, 10, 4), (2, 10), (2, 10), (2, 10)])
    chex.assert_shape([dets["proposals"], dets["proposal_valid"]], [(2, 20, 4), (2, 20)])
    chex.assert_type([dets["boxes"], dets["proposals"], dets["classes"]],
                     [jnp.float32, jnp.float32, jnp.int32])
    # clipped to each image's own (unpadded) size
    p = np.where(np.asarray(dets["proposal_valid"])[..., None], dets["proposals"], 0)
    assert p[1, :, [0, 2]].max() <= 24 and p[1, :, [1, 3]].max() <= 20
    assert np.all(np.diff(np.where(dets["valid"], dets["scores"], -1), axis=1) <= 0)


def test_padded_examples_and_images_without_objects_add_nothing_wrong():
    model = _model("c4")
    images, targets, keys = _inputs(batch=3)
    variables = _init(model, images)
    apply = jax.jit(lambda im, t, k: model.apply(variables, im, train=True, targets=t, rng=k))
    empty = dict(targets, gt_valid=targets["gt_valid"].at[2].set(False))
    masked = dict(empty, example_mask=jnp.asarray([1.0, 1.0, 0.0]))
    out_masked = apply(images, masked, keys)
    empty["example_mask"] = jnp.ones(3)
    out = apply(images, empty, keys)
    for name, (total, _) in out["terms"].items():
        assert np.isfinite(total), name
    two = {k: v[:2] for k, v in targets.items()}
    out_two = apply(images[:2], two, keys[:2])
    for name in faster_rcnn.LOSS_TERMS:
        np.testing.assert_allclose(out_masked["terms"][name], out_two["terms"][name],
                                   rtol=1e-5, err_msg=name)
    # the image without objects only contributes negatives to the RPN
    assert float(out["terms"]["rpn_objectness"][1]) == 3 * 32
    with pytest.raises(ValueError, match="one key per image"):  # at trace time: no compile
        jax.eval_shape(lambda: model.apply(variables, images, train=True, targets=targets,
                                           rng=jax.random.key(0)))


def test_sgd_steps_lower_the_loss():
    model = _model("c4")  # a single level: the smallest program to compile
    images, targets, keys = _inputs()
    params = _init(model, images)["params"]

    def loss(p):
        terms = model.apply({"params": p}, images, train=True, targets=targets,
                            rng=keys)["terms"]
        return sum(s / jnp.maximum(n, 1) for s, n in terms.values())

    opt = optax.adam(3e-3)
    opt_state = opt.init(params)

    @jax.jit
    def step(p, s):
        value, grads = jax.value_and_grad(loss)(p)
        updates, s = opt.update(grads, s)
        return optax.apply_updates(p, updates), s, value

    first = None
    for _ in range(15):
        params, opt_state, value = step(params, opt_state)
        first = value if first is None else first
    last = step(params, opt_state)[2]  # the loss at the trained params, by the compiled step
    assert float(last) < 0.8 * float(first)


def test_bfloat16_keeps_float32_boxes_and_identical_anchor_targets():
    """config.model.dtype='bfloat16': convolutions and FC layers in bfloat16, params, anchors,
    proposals, every target and the losses in float32; the RPN targets (anchors vs gt, no
    network output involved) are identical to the float32 model's, bit for bit."""
    images, targets, keys = _inputs()
    f32 = _model("c4")
    bf16 = faster_rcnn.FasterRCNN(spec=f32.spec, backbone=f32.backbone, dtype=jnp.bfloat16)
    variables = _init(f32, images)

    @jax.jit
    def run(v):
        outs = {}
        for name, model in (("f32", f32), ("bf16", bf16)):
            outs[name] = model.apply(v, images, train=True, targets=targets, rng=keys,
                                     mutable=["intermediates"])
        return outs

    outs = run(variables)
    (out32, mid32), (out16, mid16) = outs["f32"], outs["bf16"]
    mid32, mid16 = mid32["intermediates"], mid16["intermediates"]
    chex.assert_trees_all_equal(mid16["anchors"], mid32["anchors"])
    chex.assert_trees_all_equal(mid16["rpn_targets"], mid32["rpn_targets"])
    float_leaves = [x for tree in (mid16, out16["terms"]) for x in jax.tree.leaves(tree)
                    if jnp.issubdtype(x.dtype, jnp.floating)]
    assert float_leaves and all(x.dtype == jnp.float32 for x in float_leaves)
    roi16 = mid16["roi_targets"][0]
    assert roi16.rois.dtype == roi16.regression_targets.dtype == jnp.float32
    for term in out32["terms"]:  # the same losses up to bfloat16 rounding of the features
        np.testing.assert_allclose(out16["terms"][term][0] / out16["terms"][term][1],
                                   out32["terms"][term][0] / out32["terms"][term][1],
                                   rtol=0.1, err_msg=term)


@pytest.mark.parametrize("levels", ["c4", "fpn"])
def test_pool_rois_by_image_index_equals_the_batched_pool(levels):
    model = _model(levels)
    images, targets, _ = _inputs()
    variables = _init(model, images)
    features = model.apply(variables, images, False, method=lambda m, x, t: m.features(x, t))
    rois = targets["gt_boxes"]  # [2, 3, 4]
    batched = model.apply(variables, features, rois, 5,
                          method=lambda m, f, r, s: m.pool_rois(f, r, s))
    image, row = np.array([1, 0, 1]), np.array([0, 1, 1])
    indexed = model.apply(variables, features, rois[image, row], 5, jnp.asarray(image),
                          method=lambda m, f, r, s, i: m.pool_rois(f, r, s, i))
    chex.assert_shape(indexed, (3, 5, 5, batched.shape[-1]))
    np.testing.assert_allclose(indexed, batched[image, row], rtol=1e-6, atol=1e-6)
