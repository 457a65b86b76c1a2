"""GlobalHeadsNet: head shapes/dtypes per pool mode, what flatten keeps, bad fields."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet.models import global_heads

SMALL_VGG = {"backbone": "vgg", "vgg_widths": (4, 8, 8, 8, 8), "vgg_convs": 1, "hidden": 8,
             "norm": "group", "input_norm": "none"}


def _images(b=2, hw=32):
    return jnp.asarray(np.random.default_rng(0).uniform(size=(b, hw, hw, 3)), jnp.float32)


@pytest.mark.parametrize(("pool", "features"), [("flatten", 8), ("avg", 8), ("flatten_avg", 16)])
def test_heads_shapes_and_pool_width(pool, features):
    # VGG stage 5 of a 32x32 image is C5 at stride 32: 1x1 x 8 channels.
    model = global_heads.create_model({**SMALL_VGG, "pool": pool, "hidden": 0},
                                      (("class_logits", 4), ("box", 4)))
    variables = model.init(jax.random.key(0), _images(), train=False)
    out = model.apply(variables, _images(), train=False)
    chex.assert_shape(out["class_logits"], (2, 4))
    chex.assert_shape(out["box"], (2, 4))
    chex.assert_type(out["box"], jnp.float32)
    assert variables["params"]["head_box"]["kernel"].shape == (features, 4)


def test_flatten_keeps_position():
    # C4 of a 32x32 image is 2x2: moving a blob to another quadrant moves it in the flattened
    # vector (a box head can tell where it is); the feature map itself is just permuted.
    config = {**SMALL_VGG, "feature": "C4", "hidden": 0, "pool": "flatten"}
    image = np.zeros((1, 32, 32, 3), np.float32)
    image[0, 4:12, 4:12] = 1.0
    moved = np.roll(image, 16, axis=2)  # same blob, top-right quadrant
    model = global_heads.create_model(config, (("box", 4),))
    variables = model.init(jax.random.key(0), jnp.asarray(image), train=False)
    a, b = (model.apply(variables, jnp.asarray(x), train=False)["box"] for x in (image, moved))
    assert float(jnp.max(jnp.abs(a - b))) > 1e-3


def test_bad_fields_name_themselves():
    with pytest.raises(ValueError, match="model.pool='max'"):
        global_heads.create_model({**SMALL_VGG, "pool": "max"}, (("box", 4),))
    with pytest.raises(ValueError, match="model.backbone='alexnet'"):
        global_heads.create_model({**SMALL_VGG, "backbone": "alexnet"}, (("box", 4),))
    model = global_heads.create_model({**SMALL_VGG, "feature": "C9"}, (("box", 4),))
    with pytest.raises(ValueError, match="model.feature='C9'"):
        model.init(jax.random.key(0), _images(), train=False)
