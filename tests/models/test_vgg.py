"""SmallVGG: the C2..C5 output contract, layer names, norm options and config errors."""

import functools

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxdet.models import vgg


def _images(b=2, hw=64, seed=0):
    return jnp.asarray(np.random.default_rng(seed).uniform(size=(b, hw, hw, 3)), jnp.float32)


def _shapes(model, x):
    init = functools.partial(model.init_with_output, jax.random.key(0), train=False)
    return jax.eval_shape(init, x)


def test_five_stages_give_resnet_strides():
    model = vgg.SmallVGG(stage_widths=(4, 8, 8, 16, 16), convs_per_stage=2)
    out, variables = _shapes(model, _images())
    assert model.output_strides() == {"C2": 4, "C3": 8, "C4": 16, "C5": 32}
    assert model.output_channels() == {"C2": 8, "C3": 8, "C4": 16, "C5": 16}
    assert sorted(out) == ["C2", "C3", "C4", "C5"]
    for key, stride in model.output_strides().items():
        chex.assert_shape(out[key], (2, 64 // stride, 64 // stride, model.output_channels()[key]))
        chex.assert_type(out[key], jnp.float32)
    params = variables["params"]
    assert sorted(params) == sorted(f"{kind}{s}_{j}" for kind in ("conv", "bn")
                                    for s in range(1, 6) for j in (1, 2))
    assert params["conv1_1"]["kernel"].shape == (3, 3, 3, 4)
    assert params["conv2_2"]["kernel"].shape == (3, 3, 8, 8)
    assert "bias" not in params["conv1_1"]
    assert set(variables) == {"params", "batch_stats"}


def test_real_forward_fewer_stages_and_norms():
    x = _images(hw=16)
    for norm in ("batch", "frozen", "group"):
        model = vgg.SmallVGG(stage_widths=(4, 8, 8), norm=norm)

        @jax.jit
        def run(x, model=model):
            variables = model.init(jax.random.key(0), x, train=False)
            mutable = ["batch_stats"] if "batch_stats" in variables else False
            train_out = model.apply(variables, x, train=True, mutable=mutable)
            train_out = train_out[0] if mutable else train_out
            return train_out, model.apply(variables, x, train=False)

        train_out, eval_out = run(x)
        for out in (train_out, eval_out):
            assert sorted(out) == ["C2", "C3"]
            chex.assert_shape([out["C2"], out["C3"]], [(2, 4, 4, 8), (2, 2, 2, 8)])
            chex.assert_tree_all_finite(out)
        if norm != "batch":  # batch-independent in training too
            chex.assert_trees_all_close(train_out, eval_out, atol=1e-6)


def test_bfloat16_compute_keeps_float32_params():
    out, variables = _shapes(vgg.SmallVGG(stage_widths=(4, 8), dtype=jnp.bfloat16),
                             _images(hw=8))
    assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
    assert out["C2"].dtype == jnp.bfloat16 and out["C2"].shape == (2, 2, 2, 8)


@pytest.mark.parametrize(
    "kw,match",
    [(dict(stage_widths=(8,)), "2 to 5 stages"), (dict(stage_widths=(4,) * 6), "2 to 5"),
     (dict(convs_per_stage=0), "convs_per_stage"), (dict(norm="layer"), "norm='layer'")],
)
def test_config_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        _shapes(vgg.SmallVGG(**kw), _images(hw=32))


def test_per_stage_convs_and_create_vgg():
    config = ml_collections.ConfigDict(
        {"backbone": "vgg", "vgg_widths": (4, 8, 8, 8), "vgg_convs": (1, 1, 2, 2),
         "norm": "batch", "feature": "C5"})
    model = vgg.create_vgg(config, bn_axis_name="batch")
    assert model.stage_convs() == (1, 1, 2, 2) and model.bn_axis_name == "batch"
    out, variables = _shapes(model, _images(hw=32))
    assert sorted(out) == ["C2", "C3", "C4"]  # four stages end at stride 16
    assert out["C4"].shape == (2, 2, 2, 8)
    assert sorted(k for k in variables["params"] if k.startswith("conv")) == [
        "conv1_1", "conv2_1", "conv3_1", "conv3_2", "conv4_1", "conv4_2"]
    assert vgg.create_vgg({"vgg_convs": 2}).stage_convs() == (2,) * 5
    with pytest.raises(ValueError, match="one per stage"):
        vgg.SmallVGG(stage_widths=(4, 8), convs_per_stage=(1, 1, 1)).stage_convs()
