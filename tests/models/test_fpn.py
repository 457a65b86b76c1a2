"""FPN: shapes, names, and the top-down sum against a NumPy reference."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet.models import fpn


def _features(rng, sizes, channels):
    return {f"C{k}": jnp.asarray(rng.normal(size=(2, s, s, c)), jnp.float32)
            for k, s, c in zip(range(2, 2 + len(sizes)), sizes, channels, strict=True)}


def test_shapes_names_and_p6():
    feats = _features(np.random.default_rng(0), (16, 8, 4, 2), (4, 8, 16, 32))
    model = fpn.FPN(out_channels=6)
    variables = model.init(jax.random.key(0), feats)
    out = model.apply(variables, feats)
    assert list(out) == ["P2", "P3", "P4", "P5", "P6"]
    chex.assert_shape([out["P2"], out["P3"], out["P4"], out["P5"], out["P6"]],
                      [(2, 16, 16, 6), (2, 8, 8, 6), (2, 4, 4, 6), (2, 2, 2, 6), (2, 1, 1, 6)])
    assert sorted(variables["params"]) == sorted(
        [f"inner_blocks_{i}" for i in range(4)] + [f"layer_blocks_{i}" for i in range(4)])
    assert variables["params"]["inner_blocks_0"]["kernel"].shape == (1, 1, 4, 6)
    assert variables["params"]["layer_blocks_3"]["kernel"].shape == (3, 3, 6, 6)
    np.testing.assert_array_equal(out["P6"], out["P5"][:, ::2, ::2])


def _conv_np(x, kernel, bias):
    k = kernel.shape[0]
    pad = k // 2
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    out = np.zeros(x.shape[:3] + (kernel.shape[-1],))
    for dy in range(k):
        for dx in range(k):
            out += xp[:, dy:dy + x.shape[1], dx:dx + x.shape[2]] @ kernel[dy, dx]
    return out + bias


def _nearest_np(x, h, w):  # torch.nn.functional.interpolate(mode="nearest") to (h, w)
    rows = np.floor(np.arange(h) * x.shape[1] / h).astype(int)
    cols = np.floor(np.arange(w) * x.shape[2] / w).astype(int)
    return x[:, rows][:, :, cols]


@pytest.mark.parametrize("sizes", [(16, 8, 4), (13, 7, 4)])  # odd sizes: ResNet halving
def test_top_down_sum_matches_numpy_reference(sizes):
    feats = _features(np.random.default_rng(1), sizes, (3, 5, 7))
    model = fpn.FPN(out_channels=4, extra_max_pool=False)
    variables = model.init(jax.random.key(1), feats)
    out = model.apply(variables, feats)
    p = jax.tree.map(np.asarray, variables["params"])
    c = [np.asarray(feats[f"C{k}"], np.float64) for k in (2, 3, 4)]
    inner = [_conv_np(c[i], p[f"inner_blocks_{i}"]["kernel"], p[f"inner_blocks_{i}"]["bias"])
             for i in range(3)]
    last = inner[2]
    expected = {"P4": _conv_np(last, p["layer_blocks_2"]["kernel"], p["layer_blocks_2"]["bias"])}
    for i in (1, 0):
        last = inner[i] + _nearest_np(last, *inner[i].shape[1:3])
        expected[f"P{i + 2}"] = _conv_np(
            last, p[f"layer_blocks_{i}"]["kernel"], p[f"layer_blocks_{i}"]["bias"])
    assert list(out) == ["P2", "P3", "P4"]
    for key, value in expected.items():
        np.testing.assert_allclose(out[key], value, rtol=1e-4, atol=1e-4, err_msg=key)


def test_single_level_and_bad_levels():
    feats = {"C4": jnp.ones((1, 5, 5, 3))}
    out = fpn.FPN(out_channels=2).init_with_output(jax.random.key(0), feats)[0]
    assert {k: v.shape for k, v in out.items()} == {"P4": (1, 5, 5, 2), "P5": (1, 3, 3, 2)}
    with pytest.raises(ValueError, match="contiguous"):
        fpn.level_keys({"C2": None, "C4": None})
