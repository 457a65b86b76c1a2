"""Fast R-CNN on given proposals: spec, parameter names, outputs, padding, a few Adam steps.

The helpers (underscore names) are reused by ``test_rcnn.py``.
"""

from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jaxdet.detection import fast_rcnn

NUM_CLASSES = 3
SIZE = 32
P = 24  # proposals per image, the last 4 padded


def _model_config(**overrides: Any) -> ml_collections.ConfigDict:
    config = {
        "depth": 0, "stage_sizes": (1, 1, 1, 1), "block": "basic", "width": 4,
        "stem": "imagenet", "norm": "group", "gn_groups": 2, "recall_top_n": 8,
        "roi": {"representation_size": 16, "batch_size_per_image": 16},
        "postprocess": {"detections_per_img": 10}, "rcnn_crop_size": 16,
    }
    config.update(overrides)
    return ml_collections.ConfigDict(config)


def _model(**overrides: Any) -> nn.Module:
    return fast_rcnn.create_model(
        ml_collections.ConfigDict({"model": _model_config(**overrides)}), NUM_CLASSES)


def _inputs(batch: int = 2) -> tuple[jax.Array, dict[str, jax.Array], jax.Array,
                                     jax.Array, jax.Array]:
    """Images ``[B, 32, 32, 3]``, targets (2 valid gt of 3), keys ``[B]``, proposals
    ``[B, 24, 4]`` (jittered gt boxes, then random boxes, then 4 padded rows) and their
    validity ``[B, 24]``."""
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(batch, SIZE, SIZE, 3)).astype(np.float32)
    gt = np.zeros((batch, 3, 4), np.float32)
    gt[:, 0] = [2, 3, 14, 18]
    gt[:, 1] = [16, 10, 30, 28]
    images[:, 3:18, 2:14] = [1.0, 0.0, 0.0]  # make the objects visible
    images[:, 10:28, 16:30] = [0.0, 0.0, 1.0]
    targets = {"gt_boxes": jnp.asarray(gt),
               "gt_labels": jnp.asarray([[0, 2, 0]] * batch, jnp.int32),
               "gt_valid": jnp.asarray([[True, True, False]] * batch)}
    props = np.zeros((batch, P, 4), np.float32)
    props[:, :8] = np.tile(gt[:, :2], (1, 4, 1)) + rng.uniform(-2, 2, (batch, 8, 4))
    xy = rng.uniform(0, SIZE - 6, (batch, P - 12, 2))
    wh = rng.uniform(4, 16, (batch, P - 12, 2))
    props[:, 8:P - 4] = np.concatenate([xy, np.minimum(xy + wh, SIZE)], axis=-1)
    props = np.clip(props, 0, SIZE)
    valid = np.arange(P)[None, :] < P - 4
    props[:, P - 4:] = 0.0
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(1), i))(jnp.arange(batch))
    return (jnp.asarray(images), targets, keys, jnp.asarray(props),
            jnp.asarray(np.broadcast_to(valid, (batch, P))))


def _init(model: nn.Module, images: jax.Array, props: jax.Array, valid: jax.Array) -> Any:
    return jax.jit(lambda k, im, p, v: model.init(k, im, train=False, proposals=p,
                                                  proposal_valid=v))(
        jax.random.key(0), images, props, valid)


def _check_outputs(model: nn.Module) -> None:
    images, targets, keys, props, valid = _inputs()
    variables = _init(model, images, props, valid)
    out = jax.jit(lambda v: model.apply(v, images, train=True, targets=targets, rng=keys,
                                        proposals=props, proposal_valid=valid))(variables)
    assert set(out["terms"]) == set(fast_rcnn.LOSS_TERMS)
    for name, (total, count) in out["terms"].items():
        assert np.isfinite(total), name
        assert 0 < float(count) <= 2 * 16, name
        chex.assert_type([total, count], [jnp.float32, jnp.float32])
    assert float(out["num_foreground_rois"][0]) >= 2 * 2  # gt appended: always foreground
    assert float(out["num_foreground_rois"][1]) == 2
    hit, total = out["recall"]
    assert float(total) == 4 and float(hit) == 4  # the jittered gt boxes are proposals 0-7

    hw = jnp.asarray([[32, 32], [20, 24]])
    dets = jax.jit(lambda v: model.apply(v, images, hw, train=False, proposals=props,
                                         proposal_valid=valid))(variables)
    chex.assert_shape([dets["boxes"], dets["scores"], dets["classes"], dets["valid"]],
                      [(2, 10, 4), (2, 10), (2, 10), (2, 10)])
    chex.assert_shape([dets["proposals"], dets["proposal_valid"]], [(2, P, 4), (2, P)])
    chex.assert_type([dets["boxes"], dets["scores"], dets["classes"], dets["valid"],
                      dets["proposals"]],
                     [jnp.float32, jnp.float32, jnp.int32, jnp.bool_, jnp.float32])
    v = np.asarray(dets["valid"])
    assert v.any()  # untrained: scores ~ 1 / (C + 1) > score_thresh
    # sorted by score, padding last and zeroed
    assert np.all(np.diff(np.where(v, dets["scores"], -1), axis=1) <= 0)
    assert np.all(np.diff(v.astype(int), axis=1) <= 0)
    assert np.all(np.asarray(dets["boxes"])[~v] == 0) and np.all(np.asarray(dets["scores"])[~v]
                                                                  == 0)
    b = np.asarray(dets["boxes"])[1][v[1]]
    assert b[:, [0, 2]].max() <= 24 and b[:, [1, 3]].max() <= 20  # clipped to image_hw


def _check_padding(model: nn.Module) -> None:
    images, targets, keys, props, valid = _inputs(batch=3)
    variables = _init(model, images, props, valid)
    apply = jax.jit(lambda im, t, k, p, v: model.apply(
        variables, im, train=True, targets=t, rng=k, proposals=p, proposal_valid=v))
    empty = dict(targets, gt_valid=targets["gt_valid"].at[2].set(False),  # no objects
                 example_mask=jnp.ones(3))
    out = apply(images, empty, keys, props, valid)
    for name, (total, count) in out["terms"].items():
        assert np.isfinite(total) and float(count) > 0, name
    assert float(out["recall"][1]) == 4
    masked = dict(empty, example_mask=jnp.asarray([1.0, 1.0, 0.0]))
    out_masked = apply(images, masked, keys, props, valid)
    two = {k: v[:2] for k, v in masked.items()}
    out_two = apply(images[:2], two, keys[:2], props[:2], valid[:2])
    for name in fast_rcnn.LOSS_TERMS:
        np.testing.assert_allclose(out_masked["terms"][name], out_two["terms"][name],
                                   rtol=1e-5, err_msg=name)
    np.testing.assert_allclose(out_masked["num_foreground_rois"][1], 2)
    np.testing.assert_allclose(out_masked["recall"], out_two["recall"])
    with pytest.raises(ValueError, match="one key per image"):  # at trace time: no compile
        jax.eval_shape(lambda: model.apply(variables, images, train=True, targets=targets,
                                           rng=jax.random.key(0), proposals=props,
                                           proposal_valid=valid))


def _check_adam_lowers_the_loss(model: nn.Module, steps: int = 15) -> None:
    images, targets, keys, props, valid = _inputs()
    params = _init(model, images, props, valid)["params"]

    def loss(p: Any) -> jax.Array:
        terms = model.apply({"params": p}, images, train=True, targets=targets, rng=keys,
                            proposals=props, proposal_valid=valid)["terms"]
        return sum(s / jnp.maximum(n, 1) for s, n in terms.values())

    opt = optax.adam(3e-3)

    @jax.jit
    def run(p: Any) -> tuple[jax.Array, jax.Array]:
        def step(carry: Any, _: Any) -> tuple[Any, jax.Array]:
            p, s = carry
            value, grads = jax.value_and_grad(loss)(p)
            updates, s = opt.update(grads, s, p)
            return (optax.apply_updates(p, updates), s), value

        (p, _), values = jax.lax.scan(step, (p, opt.init(p)), length=steps)
        return values[0], loss(p)

    first, last = run(params)
    assert np.isfinite(float(first)) and float(last) < 0.8 * float(first)


def test_spec_reads_the_config_and_checks():
    spec = fast_rcnn.ClassicSpec.from_config(_model_config(roi_feature="C4"), NUM_CLASSES)
    assert spec.roi_feature == "C4" and spec.roi.batch_size_per_image == 16
    assert spec.roi.box_weights == (10.0, 10.0, 5.0, 5.0)
    assert spec.postprocess.detections_per_img == 10 and spec.postprocess.score_thresh == 0.05
    with pytest.raises(ValueError, match="config.model.roi_batch_size_per_image: the R-CNN"):
        fast_rcnn.ClassicSpec.from_config(_model_config(roi_batch_size_per_image=16), 3)
    with pytest.raises(ValueError, match="roi_feature"):
        fast_rcnn.ClassicSpec(num_classes=3, roi_feature="C5")


@pytest.mark.parametrize("feature, channels", [("C3", 8), ("C4", 16)])
def test_parameter_names_and_feature_map(feature, channels):
    model = _model(roi_feature=feature)
    images, _, _, props, valid = _inputs()
    params = jax.eval_shape(lambda: model.init(
        jax.random.key(0), images, train=False, proposals=props, proposal_valid=valid))["params"]
    assert sorted(params) == ["body", "roi_heads"]
    assert sorted(params["roi_heads"]) == ["box_head", "box_predictor"]
    # the backbone stops at the pooled stage: 7 x 7 x its channels feed fc6
    assert params["roi_heads"]["box_head"]["fc6"]["kernel"].shape == (7 * 7 * channels, 16)
    assert ("layer3_0" in params["body"]) == (feature == "C4")
    assert "layer4_0" not in params["body"]
    assert params["roi_heads"]["box_predictor"]["bbox_pred"]["kernel"].shape == (16, 16)


def test_train_and_inference_outputs():
    _check_outputs(_model())


def test_padded_examples_and_images_without_objects():
    _check_padding(_model())


def test_adam_steps_lower_the_loss():
    _check_adam_lowers_the_loss(_model())
