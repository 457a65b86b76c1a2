"""ResNet backbones: output shapes/dtypes for both stems, torchvision's parameter counts and
layout (names, v1.5 strides), frozen/group/batch norm behaviour, zero-init residuals, config
errors. Shape-only checks use ``jax.eval_shape`` (no compilation)."""

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import traverse_util

from jaxdet.models import resnet


def _images(b=2, hw=32, seed=0):
    return jnp.asarray(np.random.default_rng(seed).uniform(size=(b, hw, hw, 3)), jnp.float32)


def _shapes(model, x, **kw):
    """(output, variables) as ShapeDtypeStructs, without compiling."""
    init = functools.partial(model.init_with_output, jax.random.key(0), train=False, **kw)
    return jax.eval_shape(init, x)


def _count(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


@pytest.mark.parametrize(
    "depth,stem,hw", [(18, "imagenet", 64), (50, "imagenet", 64), (18, "small", 16),
                      (50, "small", 16)]
)
def test_output_shapes_and_strides(depth, stem, hw):
    model = resnet.ResNet(depth=depth, width=8, stem=stem)
    out, variables = _shapes(model, _images(hw=hw))
    strides = {"imagenet": (4, 8, 16, 32), "small": (1, 2, 4, 8)}[stem]
    e = 1 if depth == 18 else 4
    assert model.output_strides() == dict(zip(("C2", "C3", "C4", "C5"), strides, strict=True))
    assert model.output_channels() == {"C2": 8 * e, "C3": 16 * e, "C4": 32 * e, "C5": 64 * e}
    assert list(out) == ["C2", "C3", "C4", "C5"]
    for key, stride in model.output_strides().items():
        chex.assert_shape(out[key], (2, hw // stride, hw // stride, model.output_channels()[key]))
        chex.assert_type(out[key], jnp.float32)
    assert set(variables) == {"params", "batch_stats"}


def test_real_forward_train_and_eval():
    model = resnet.ResNet(depth=18, width=4, stem="small")
    x = _images(hw=16)

    @jax.jit
    def run(x):
        variables = model.init(jax.random.key(0), x, train=False)
        train_out, updated = model.apply(variables, x, train=True, mutable=["batch_stats"])
        return variables, train_out, updated, model.apply(variables, x, train=False)

    variables, train_out, updated, eval_out = run(x)
    for out in (train_out, eval_out):
        chex.assert_shape(out["C5"], (2, 2, 2, 32))
        chex.assert_type(out["C5"], jnp.float32)
        chex.assert_tree_all_finite(out)
        assert float(jnp.min(out["C5"])) >= 0.0  # every block ends with a ReLU
    moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()),
                         updated["batch_stats"], variables["batch_stats"])
    assert max(jax.tree.leaves(moved)) > 1e-3  # BatchNorm statistics update in training


# torchvision's resnet18/34/50 `sum(p.numel() for p in model.parameters())` is
# 11,689,512 / 21,797,672 / 25,557,032 with the 1000-class fc layer, which the backbone does
# not have: fc has 512 * 1000 + 1000 = 513,000 (ResNet-18/34) or 2048 * 1000 + 1000 =
# 2,049,000 (ResNet-50) parameters. BatchNorm weight/bias are torchvision parameters and Flax
# `params`; running statistics are buffers in torchvision and `batch_stats` in Flax.
@pytest.mark.parametrize(
    "depth,with_fc,fc",
    [(18, 11_689_512, 513_000), (34, 21_797_672, 513_000), (50, 25_557_032, 2_049_000)],
)
def test_parameter_count_equals_torchvision_without_fc(depth, with_fc, fc):
    expected = {18: 11_176_512, 34: 21_284_672, 50: 23_508_032}[depth]
    assert with_fc - fc == expected
    _, variables = _shapes(resnet.ResNet(depth=depth, width=64), _images(b=1, hw=32))
    assert _count(variables["params"]) == expected
    # 2 running statistics per BatchNorm channel; BatchNorm has 2 parameters per channel too
    norm_params = sum(_count(v) for k, v in traverse_util.flatten_dict(variables["params"]).items()
                      if k[-1] in ("scale", "bias"))
    assert _count(variables["batch_stats"]) == norm_params


def test_torchvision_layout_names_and_v15_strides():
    x = _images(b=1, hw=64)
    for depth, downsampled in ((18, ("layer2_0", "layer3_0", "layer4_0")),
                               (50, ("layer1_0", "layer2_0", "layer3_0", "layer4_0"))):
        model = resnet.ResNet(depth=depth, width=4)
        sizes, block = model.stages()
        variables = jax.eval_shape(functools.partial(model.init, jax.random.key(0), train=False), x)
        is_conv = lambda mdl, _: isinstance(mdl, nn.Conv)
        run = functools.partial(model.apply, train=False, capture_intermediates=is_conv,
                                mutable=["intermediates"])
        _, state = jax.eval_shape(run, variables, x)
        params = variables["params"]
        blocks = [f"layer{i + 1}_{j}" for i, n in enumerate(sizes) for j in range(n)]
        assert sorted(params) == sorted(["conv1", "bn1", *blocks])
        convs = ["conv1", "bn1", "conv2", "bn2"] + (["conv3", "bn3"] if block == "bottleneck"
                                                    else [])
        for name in blocks:
            extra = ["downsample_conv", "downsample_bn"] if name in downsampled else []
            assert sorted(params[name]) == sorted(convs + extra), name
        assert params["conv1"]["kernel"].shape == (7, 7, 3, 4)
        got = {name: state["intermediates"]["layer2_0"][name]["__call__"][0].shape
               for name in params["layer2_0"] if name.startswith(("conv", "downsample_conv"))}
        # layer2_0 sees the 16x16 C2 map; only its 3x3 conv (and the shortcut) halve it.
        if block == "basic":
            assert params["layer2_0"]["conv1"]["kernel"].shape[:2] == (3, 3)
            assert got == {"conv1": (1, 8, 8, 8), "conv2": (1, 8, 8, 8),
                           "downsample_conv": (1, 8, 8, 8)}
        else:
            assert params["layer2_0"]["conv1"]["kernel"].shape == (1, 1, 16, 8)
            assert params["layer2_0"]["conv2"]["kernel"].shape == (3, 3, 8, 8)
            assert got == {"conv1": (1, 16, 16, 8), "conv2": (1, 8, 8, 8),
                           "conv3": (1, 8, 8, 32), "downsample_conv": (1, 8, 8, 32)}


def _randomize(tree, seed):
    """Replace every leaf with positive-ish random values (non-trivial norm statistics)."""
    leaves, treedef = jax.tree.flatten(tree)
    rng = np.random.default_rng(seed)
    return treedef.unflatten(
        [jnp.asarray(rng.uniform(0.5, 1.5, size=leaf.shape), jnp.float32) for leaf in leaves]
    )


def test_frozen_norm_is_batchnorm_with_fixed_running_statistics():
    x = _images(hw=16)
    small = dict(stage_sizes=(1, 2), block="basic", width=4, stem="small")  # has downsample_bn
    frozen = resnet.ResNet(**small, norm="frozen")
    variables = frozen.init(jax.random.key(0), x, train=False)
    # conv kernels are the only parameters; scale/bias/mean/var are non-trainable buffers
    assert {k[-1] for k in traverse_util.flatten_dict(variables["params"])} == {"kernel"}
    assert {k[-1] for k in traverse_util.flatten_dict(variables["batch_stats"])} == {
        "scale", "bias", "mean", "var"}
    variables = {"params": variables["params"],
                 "batch_stats": _randomize(variables["batch_stats"], seed=1)}
    train_out, updated = frozen.apply(variables, x, train=True, mutable=["batch_stats"])
    eval_out = frozen.apply(variables, x, train=False)
    chex.assert_trees_all_equal(train_out, eval_out)
    chex.assert_trees_all_equal(updated["batch_stats"], variables["batch_stats"])
    # The same numbers as torchvision's BatchNorm2d in eval mode: scale/bias moved to params.
    flat = traverse_util.flatten_dict(variables["batch_stats"])
    params = traverse_util.flatten_dict(variables["params"])
    params.update({k: v for k, v in flat.items() if k[-1] in ("scale", "bias")})
    stats = {k: v for k, v in flat.items() if k[-1] in ("mean", "var")}
    bn_vars = {"params": traverse_util.unflatten_dict(params),
               "batch_stats": traverse_util.unflatten_dict(stats)}
    bn_out = resnet.ResNet(**small).apply(bn_vars, x, train=False)
    chex.assert_trees_all_close(bn_out, eval_out, rtol=1e-5, atol=1e-5)


def test_frozen_batch_norm_formula():
    c = 3
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 4, c)).astype(np.float32)
    stats = {k: rng.uniform(0.2, 2.0, size=c).astype(np.float32)
             for k in ("scale", "bias", "mean", "var")}
    y = resnet.FrozenBatchNorm().apply({"batch_stats": stats}, jnp.asarray(x))
    ref = (x - stats["mean"]) / np.sqrt(stats["var"] + 1e-5) * stats["scale"] + stats["bias"]
    np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-5, atol=1e-6)


def test_group_norm_has_no_batch_stats_and_bfloat16_compute():
    x = _images(hw=16)
    out, variables = _shapes(resnet.ResNet(depth=18, width=8, stem="small", norm="group"), x)
    assert set(variables) == {"params"}
    out, variables = _shapes(resnet.ResNet(depth=50, width=4, stem="small",
                                           dtype=jnp.bfloat16), x)
    assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
    assert {v.dtype for v in out.values()} == {jnp.dtype(jnp.bfloat16)}


@pytest.mark.parametrize("block,norm", [("basic", "batch"), ("bottleneck", "group")])
def test_zero_init_residual(block, norm):
    model = resnet.ResNet(stage_sizes=(1, 1), block=block, width=4, stem="small", norm=norm,
                          zero_init_residual=True)
    x = _images(b=1, hw=8)
    params = jax.jit(functools.partial(model.init, train=False))(jax.random.key(0), x)["params"]
    last = "bn2" if block == "basic" else "bn3"
    for name in ("layer1_0", "layer2_0"):
        np.testing.assert_array_equal(params[name][last]["scale"], 0.0)
        np.testing.assert_array_equal(params[name]["bn1"]["scale"], 1.0)
        if "downsample_bn" in params[name]:  # not in a basic layer1_0 of equal widths
            np.testing.assert_array_equal(params[name]["downsample_bn"]["scale"], 1.0)


def test_config_errors():
    x = _images(b=1, hw=16)
    for kw, match in [
        (dict(depth=101), "depth=101"),
        (dict(stage_sizes=(1, 1)), "block must be given"),
        (dict(stage_sizes=(1, 1, 1, 1, 1), block="basic"), "1 to 4 stages"),
        (dict(depth=18, block="bottleneck"), "contradicts"),
        (dict(stage_sizes=(1,), block="wide"), r"block='wide'"),
        (dict(norm="instance"), r"norm='instance'"),
        (dict(stem="cifar"), r"stem='cifar'"),
        (dict(input_norm="zscore"), r"input_norm='zscore'"),
    ]:
        with pytest.raises(ValueError, match=match):
            _shapes(resnet.ResNet(width=4, **kw), x)


def test_create_resnet_from_flat_config():
    config = ml_collections.ConfigDict(
        {"backbone": "resnet", "depth": 0, "stage_sizes": (1, 1, 1, 1), "block": "basic",
         "width": 4, "stem": "small", "norm": "group", "dtype": "bfloat16", "hidden": 16})
    model = resnet.create_resnet(config, bn_axis_name="batch")
    assert (model.stages(), model.width, model.stem, model.norm) == (
        ((1, 1, 1, 1), "basic"), 4, "small", "group")
    assert (model.bn_axis_name, model.dtype, model.input_norm) == (
        "batch", jnp.dtype(jnp.bfloat16), "imagenet")
    out, _ = _shapes(model, _images(b=1, hw=16))
    assert out["C5"].shape == (1, 2, 2, 32) and out["C5"].dtype == jnp.bfloat16
    default = resnet.create_resnet({})
    assert (default.stages(), default.width, default.dtype) == (((2, 2, 2, 2), "basic"), 64, None)


@pytest.mark.parametrize("path, frozen_stages, expected", [
    (("body", "conv1", "kernel"), 1, True),
    (("body", "bn1", "scale"), 1, True),
    (("body", "conv1", "kernel"), 0, False),
    (("body", "layer1_0", "conv1", "kernel"), 1, False),  # a block's conv1 is no stem
    (("body", "layer1_1", "bn2", "bias"), 2, True),
    (("body", "layer2_0", "downsample_conv", "kernel"), 2, False),
    (("body", "layer2_0", "downsample_conv", "kernel"), 3, True),
    (("fpn", "inner_0", "kernel"), 5, False),
    (("conv1", "kernel"), 1, True),  # a ResNet at the root
])
def test_is_frozen_names_the_stem_and_the_first_stages(path, frozen_stages, expected):
    assert resnet.is_frozen(path, frozen_stages) is expected


def test_frozen_stages_get_zero_gradients_and_the_rest_do_not():
    model = resnet.ResNet(stage_sizes=(1, 1), block="basic", width=4, norm="frozen",
                          frozen_stages=2)
    x = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3))
    variables = model.init(jax.random.key(1), x, train=False)

    def loss(params):
        out = model.apply({**variables, "params": params}, x, train=True)
        return sum(jnp.sum(v ** 2) for v in out.values())

    grads = traverse_util.flatten_dict(jax.grad(loss)(variables["params"]))
    for path, g in grads.items():
        if resnet.is_frozen(path, 2):
            np.testing.assert_array_equal(g, 0.0, err_msg=str(path))
        else:
            assert np.abs(g).max() > 0, path
    assert any(resnet.is_frozen(p, 2) for p in grads) and any(
        not resnet.is_frozen(p, 2) for p in grads)
    with pytest.raises(ValueError, match="frozen_stages=4"):
        resnet.ResNet(stage_sizes=(1, 1), block="basic", width=4, frozen_stages=4).init(
            jax.random.key(1), x, train=False)
