"""R-CNN on given proposals: the warp, parameter names, outputs, padding, a few Adam steps."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxdet.detection import rcnn
from tests.detection.test_fast_rcnn import (
    NUM_CLASSES,
    _check_adam_lowers_the_loss,
    _check_outputs,
    _check_padding,
    _inputs,
    _model_config,
)


def _model(**overrides: Any) -> nn.Module:
    # 16 x 16 crops through a two-stage ResNet with the stride-1 stem: C3 is 8 x 8 x 8.
    config = _model_config(stage_sizes=(1, 1), stem="small", **overrides)
    return rcnn.create_model(ml_collections.ConfigDict({"model": config}), NUM_CLASSES)


def test_warp_crops_resamples_the_box():
    image = np.zeros((1, 20, 30, 3), np.float32)
    image[0, 4:12, 6:22] = [0.2, 0.5, 0.9]  # an 16 x 8 block
    boxes = jnp.asarray([[[6, 4, 22, 12], [0, 0, 30, 20]]], jnp.float32)
    crops = jax.jit(rcnn.warp_crops, static_argnums=2)(jnp.asarray(image), boxes, 8)
    assert crops.shape == (1, 2, 8, 8, 3) and crops.dtype == jnp.float32
    # warped 2:1 -> 1:1: the block fills the crop (bilinear taps blend the outer half pixel
    # with the outside along y, where one output row is one input row)
    np.testing.assert_allclose(crops[0, 0, 1:-1], np.broadcast_to([0.2, 0.5, 0.9], (6, 8, 3)),
                               atol=1e-6)
    assert np.all(np.asarray(crops[0, 0, [0, -1]]) > 0.8 * np.asarray([0.2, 0.5, 0.9]))
    whole = np.asarray(crops[0, 1])
    assert whole[0, 0].sum() == 0 and whole[4, 4].sum() > 0  # the whole image, resized
    # context padding grows the box: the block then no longer fills the crop
    padded = jax.jit(rcnn.warp_crops, static_argnums=(2, 3))(jnp.asarray(image), boxes, 8, 0.25)
    assert float(padded[0, 0, 0, 0].sum()) < 1.0 < float(padded[0, 0, 4, 4].sum())


def test_parameter_names():
    model = _model()
    images, _, _, props, valid = _inputs()
    params = jax.eval_shape(lambda: model.init(
        jax.random.key(0), images, train=False, proposals=props, proposal_valid=valid))["params"]
    assert sorted(params) == ["body", "box_predictor"]
    assert sorted(params["box_predictor"]) == ["bbox_pred", "cls_score"]
    # global average pooled deepest stage (C3, 8 channels) -> linear heads
    assert params["box_predictor"]["cls_score"]["kernel"].shape == (8, NUM_CLASSES + 1)
    assert params["box_predictor"]["bbox_pred"]["kernel"].shape == (8, 4 * (NUM_CLASSES + 1))
    assert params["body"]["conv1"]["kernel"].shape == (3, 3, 3, 4)  # runs on the crops


def test_train_and_inference_outputs():
    _check_outputs(_model())


def test_padded_examples_and_images_without_objects():
    _check_padding(_model())


def test_adam_steps_lower_the_loss():
    _check_adam_lowers_the_loss(_model(), steps=20)
