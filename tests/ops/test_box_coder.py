"""Box coder: torchvision goldens, hand-computed deltas, clamping and round trips."""

import math
import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet import ops
from tests import helpers

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
WEIGHTS = {"rpn": (1.0, 1.0, 1.0, 1.0), "roi": (10.0, 10.0, 5.0, 5.0)}


def np_encode(boxes: np.ndarray, anchors: np.ndarray, weights) -> np.ndarray:
    """Reference encoding in float64."""
    b, a = boxes.astype(np.float64), anchors.astype(np.float64)
    bw, bh = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    aw, ah = a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]
    wx, wy, ww, wh = weights
    return np.stack(
        [
            wx * ((b[:, 0] + bw / 2) - (a[:, 0] + aw / 2)) / aw,
            wy * ((b[:, 1] + bh / 2) - (a[:, 1] + ah / 2)) / ah,
            ww * np.log(bw / aw),
            wh * np.log(bh / ah),
        ],
        axis=1,
    )


def random_boxes(seed, shape):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(-50, 500, shape + (2,))
    wh = rng.uniform(2, 300, shape + (2,))
    return np.concatenate([xy, xy + wh], -1).astype(np.float32)


@pytest.fixture(scope="module")
def fx():
    return np.load(FIXTURES / "box_coder.npz")


# --- torchvision goldens ---------------------------------------------------------------------


@helpers.with_and_without_jit
@pytest.mark.parametrize("name", ["rpn", "roi"])
def test_encode_matches_torchvision(variant, fx, name):
    enc = variant(lambda g, p: ops.encode_boxes(g, p, WEIGHTS[name]))
    out = enc(fx["gt"], fx["proposals"])
    chex.assert_shape(out, fx["gt"].shape)
    chex.assert_type(out, jnp.float32)
    np.testing.assert_allclose(out, fx[f"encoded_{name}"], rtol=1e-5, atol=1e-6)


@helpers.with_and_without_jit
@pytest.mark.parametrize("name", ["rpn", "roi"])
def test_decode_matches_torchvision(variant, fx, name):
    dec = variant(lambda d, p: ops.decode_boxes(d, p, WEIGHTS[name]))
    out = dec(fx[f"deltas_{name}"], fx["proposals"])
    expected = fx[f"decoded_{name}"]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("name", list(WEIGHTS))
def test_encode_matches_numpy_reference(fx, name):
    w = WEIGHTS[name]
    out = ops.encode_boxes(fx["gt"], fx["proposals"], w)
    ref = np_encode(fx["gt"], fx["proposals"], w)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


# --- hand-computed deltas --------------------------------------------------------------------

ANCHOR = np.array([[0, 0, 10, 20]], np.float32)  # centre (5, 10), 10 x 20


@pytest.mark.parametrize(
    "box, expected",
    [
        ([5, 0, 15, 20], [0.5, 0.0, 0.0, 0.0]),
        ([0, 10, 10, 30], [0.0, 0.5, 0.0, 0.0]),
        ([-5, 0, 15, 20], [0.0, 0.0, math.log(2.0), 0.0]),
        ([2.5, 5, 7.5, 15], [0.0, 0.0, math.log(0.5), math.log(0.5)]),
        ([0, 0, 10, 20], [0.0, 0.0, 0.0, 0.0]),
    ],
    ids=["shift_x", "shift_y", "double_width", "half_size", "identical"],
)
def test_encode_with_unit_weights_hand_computed_and_decodes_back(box, expected):
    out = ops.encode_boxes(np.array([box], np.float32), ANCHOR)
    np.testing.assert_allclose(out[0], expected, atol=1e-6)
    back = ops.decode_boxes(out, ANCHOR)
    np.testing.assert_allclose(back[0], box, atol=1e-5)


def test_weights_scale_the_deltas():
    box = np.array([[5, 10, 25, 50]], np.float32)
    unit = ops.encode_boxes(box, ANCHOR)
    weighted = ops.encode_boxes(box, ANCHOR, (10.0, 10.0, 5.0, 5.0))
    np.testing.assert_allclose(weighted, unit * np.array([10, 10, 5, 5]), rtol=1e-6)
    np.testing.assert_allclose(
        ops.decode_boxes(weighted, ANCHOR, (10.0, 10.0, 5.0, 5.0)), box, atol=1e-4
    )


def test_decode_clamps_scale_at_log_1000_over_16():
    deltas = np.array([[0, 0, 10.0, 10.0], [0, 0, -10.0, -10.0]], np.float32)
    out = ops.decode_boxes(deltas, np.repeat(ANCHOR, 2, axis=0))
    widths, heights = out[:, 2] - out[:, 0], out[:, 3] - out[:, 1]
    # Upper clamp only: 1000/16 times the anchor; no lower clamp.
    # (the tiny box's x2 - x1 cancels near its centre, hence the absolute tolerance)
    np.testing.assert_allclose(widths, [10 * 62.5, 10 * math.exp(-10)], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(heights, [20 * 62.5, 20 * math.exp(-10)], rtol=1e-5, atol=2e-6)
    np.testing.assert_allclose(out[:, 0] + widths / 2, [5, 5], rtol=1e-6)
    assert ops.DEFAULT_SCALE_CLIP == pytest.approx(math.log(1000 / 16), abs=5e-8)


def test_decode_with_custom_clip():
    out = ops.decode_boxes(np.array([[0, 0, 3.0, 0.5]], np.float32), ANCHOR, clip=1.0)
    np.testing.assert_allclose(out[0, 2] - out[0, 0], 10 * math.e, rtol=1e-6)
    np.testing.assert_allclose(out[0, 3] - out[0, 1], 20 * math.exp(0.5), rtol=1e-6)


# --- round trips, broadcasting, transforms ---------------------------------------------------


@helpers.with_and_without_jit
def test_encode_decode_round_trip(variant):
    boxes, anchors = random_boxes(0, (64,)), random_boxes(1, (64,))
    for w in WEIGHTS.values():
        d = variant(lambda b, a, w=w: ops.encode_boxes(b, a, w))(boxes, anchors)
        back = variant(lambda d, a, w=w: ops.decode_boxes(d, a, w))(d, anchors)
        np.testing.assert_allclose(back, boxes, rtol=1e-5, atol=1e-3)


def test_decode_broadcasts_per_class_deltas():
    anchors = random_boxes(2, (5,))
    deltas = np.random.default_rng(3).normal(0, 0.5, (5, 3, 4)).astype(np.float32)
    out = ops.decode_boxes(deltas, anchors[:, None, :], (10.0, 10.0, 5.0, 5.0))
    chex.assert_shape(out, (5, 3, 4))
    for k in range(3):
        np.testing.assert_allclose(
            out[:, k], ops.decode_boxes(deltas[:, k], anchors, (10.0, 10.0, 5.0, 5.0))
        )


def test_encode_under_vmap_over_batch_matches_numpy():
    boxes, anchors = random_boxes(4, (2, 16)), random_boxes(5, (2, 16))
    out = jax.vmap(ops.encode_boxes)(boxes, anchors)
    chex.assert_shape(out, (2, 16, 4))
    for i in range(2):
        np.testing.assert_allclose(
            out[i], np_encode(boxes[i], anchors[i], (1, 1, 1, 1)), rtol=1e-5, atol=1e-5
        )


def test_decode_compiles_once_per_shape():
    traces = []

    @jax.jit
    def f(d, a):
        traces.append(1)
        return ops.decode_boxes(d, a, (10.0, 10.0, 5.0, 5.0))

    outs = [f(random_boxes(10 + i, (8,)) / 100, random_boxes(20 + i, (8,))) for i in range(3)]
    assert len(traces) == 1
    assert not np.allclose(outs[0], outs[1])
