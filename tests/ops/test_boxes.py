"""Box geometry: torchvision goldens, a NumPy reference and hand-computed cases."""

import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet import ops
from tests import helpers

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


def np_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Reference pairwise IoU in float64 (no clamping of areas, like torchvision)."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return inter / (area_a[:, None] + area_b[None, :] - inter)


def random_boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    xy = rng.uniform(-20, 100, (n, 2))
    wh = rng.uniform(1, 40, (n, 2))
    return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)


# --- torchvision goldens (experiments/golden/make_box_fixtures.py) ---------------------------


@pytest.fixture(scope="module")
def fx():
    return np.load(FIXTURES / "boxes.npz")


@helpers.with_and_without_jit
def test_box_iou_matches_torchvision(variant, fx):
    b1, b2 = fx["boxes1"], fx["boxes2"]
    iou = variant(ops.box_iou)(b1, b2)
    chex.assert_shape(iou, (b1.shape[0], b2.shape[0]))
    chex.assert_type(iou, jnp.float32)
    # Degenerate pairs give NaN in both; everything else to 1e-5 relative.
    np.testing.assert_allclose(np.asarray(iou), fx["iou"], rtol=1e-5, atol=0)
    assert np.isnan(fx["iou"]).any() == np.isnan(np.asarray(iou)).any()
    assert np.sum(fx["iou"] > 0) > 20  # the fixture has real overlaps


@helpers.with_and_without_jit
def test_area_clip_and_conversion_match_torchvision(variant, fx):
    b1 = fx["boxes1"]
    h, w = (int(v) for v in fx["image_hw"])
    np.testing.assert_allclose(variant(ops.box_area)(b1), fx["area1"], rtol=1e-6)
    clipped = variant(lambda b: ops.clip_boxes(b, h, w))(b1)
    np.testing.assert_array_equal(np.asarray(clipped), fx["clipped1"])
    np.testing.assert_allclose(
        variant(ops.xyxy_to_cxcywh)(b1), fx["cxcywh1"], rtol=1e-6, atol=1e-6
    )


# --- IoU -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "a, b, expected",
    [
        # boxes1, boxes2, expected IoU
        ([0, 0, 10, 10], [5, 5, 15, 15], 25 / 175),
        ([0, 0, 10, 10], [0, 0, 10, 10], 1.0),
        ([0, 0, 10, 10], [10, 0, 20, 10], 0.0),  # touching edge: no overlap
        ([0, 0, 10, 10], [20, 20, 30, 30], 0.0),
        ([0, 0, 10, 10], [2, 2, 4, 7], 10 / 100),  # contained
        ([0.5, 0.5, 2.5, 2.5], [1.5, 1.5, 3.5, 3.5], 1 / 7),  # .5 boundaries
        ([0, 0, 2, 1], [0, 0, 1, 1], 0.5),  # exactly representable 0.5
        ([-5, -5, 5, 5], [0, 0, 10, 10], 25 / 175),  # partly outside the image
    ],
    ids=["overlap", "identical", "touching_edge", "disjoint", "contained", "half_pixel",
         "exact_half", "partly_outside"],
)
def test_box_iou_hand_computed_and_symmetric(a, b, expected):
    iou = ops.box_iou(np.array([a], np.float32), np.array([b], np.float32))
    assert float(iou[0, 0]) == pytest.approx(expected, abs=5e-7)
    iou_t = ops.box_iou(np.array([b], np.float32), np.array([a], np.float32))
    assert float(iou[0, 0]) == float(iou_t[0, 0])  # symmetric, bit for bit


def test_zero_area_pair_is_nan_and_zero_area_vs_box_is_zero():
    point = np.array([[3, 3, 3, 3]], np.float32)
    box = np.array([[0, 0, 10, 10]], np.float32)
    assert np.isnan(float(ops.box_iou(point, point)[0, 0]))
    assert float(ops.box_iou(point, box)[0, 0]) == 0.0


@helpers.with_and_without_jit
def test_box_iou_matches_numpy_reference_on_random_boxes(variant):
    rng = np.random.default_rng(0)
    a, b = random_boxes(rng, 37), random_boxes(rng, 23)
    np.testing.assert_allclose(variant(ops.box_iou)(a, b), np_iou(a, b), rtol=1e-5)


def test_box_iou_is_bit_exact_float32_arithmetic():
    # NMS and the matcher compare IoUs with thresholds, so the compiled division must be
    # IEEE float32 (no reciprocal approximation): bit-equal to NumPy's float32 formula.
    rng = np.random.default_rng(4)
    a = random_boxes(rng, 300)
    b = np.round(random_boxes(rng, 200) * 2) / 2
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.maximum(rb - lt, np.float32(0))
    inter = wh[..., 0] * wh[..., 1]
    expected = inter / (area_a[:, None] + area_b[None, :] - inter)
    assert expected.dtype == np.float32
    assert np.sum(expected > 0) > 1000
    actual = np.asarray(jax.jit(ops.box_iou)(a, b))
    if jax.default_backend() == "cpu":
        np.testing.assert_array_equal(actual, expected)
    else:  # XLA:GPU contracts inter/union arithmetic into FMAs: seen 1 ulp off on an H200
        np.testing.assert_array_max_ulp(actual, expected, maxulp=2)


def test_box_iou_vmap_over_batch_matches_numpy():
    rng = np.random.default_rng(1)
    a = np.stack([random_boxes(rng, 11) for _ in range(3)])
    b = np.stack([random_boxes(rng, 7) for _ in range(3)])
    out = jax.vmap(ops.box_iou)(a, b)
    chex.assert_shape(out, (3, 11, 7))
    for i in range(3):
        np.testing.assert_allclose(out[i], np_iou(a[i], b[i]), rtol=1e-5)


def test_box_iou_casts_bfloat16_inputs_up():
    a = jnp.array([[0, 0, 10, 10]], jnp.bfloat16)
    b = jnp.array([[5, 5, 15, 15]], jnp.bfloat16)
    out = ops.box_iou(a, b)
    chex.assert_type(out, jnp.float32)
    assert float(out[0, 0]) == pytest.approx(1 / 7, abs=5e-7)


def test_box_iou_compiles_once_per_shape():
    traces = []

    @jax.jit
    def f(a, b):
        traces.append(1)
        return ops.box_iou(a, b)

    rng = np.random.default_rng(2)
    outs = [f(random_boxes(rng, 9), random_boxes(rng, 5)) for _ in range(4)]
    assert len(traces) == 1
    assert not np.allclose(outs[0], outs[1])  # really new values


# --- area, clipping, conversions -------------------------------------------------------------


@helpers.with_and_without_jit
def test_box_area_hand_computed(variant):
    boxes = np.array([[0, 0, 10, 5], [1.5, 2.5, 2.0, 4.5], [3, 3, 3, 9]], np.float32)
    np.testing.assert_array_equal(variant(ops.box_area)(boxes), [50.0, 1.0, 0.0])


@helpers.with_and_without_jit
def test_clip_boxes_to_traced_image_size(variant):
    boxes = np.array([[-5, -1, 50, 30], [10, 10, 20, 20], [90, 90, 99, 99.5]], np.float32)
    out = variant(ops.clip_boxes)(boxes, 25, 40)  # height 25, width 40, traced
    np.testing.assert_array_equal(out, [[0, 0, 40, 25], [10, 10, 20, 20], [40, 25, 40, 25]])


def test_clip_boxes_batched_with_per_image_sizes():
    boxes = np.tile(np.array([[[-5, -5, 100, 100]]], np.float32), (2, 1, 1))
    out = jax.vmap(ops.clip_boxes)(boxes, jnp.array([10, 20]), jnp.array([30, 40]))
    np.testing.assert_array_equal(out[:, 0], [[0, 0, 30, 10], [0, 0, 40, 20]])


@helpers.with_and_without_jit
def test_box_format_conversions_hand_computed_and_inverse(variant):
    xyxy = np.array([[1, 2, 5, 10], [-3.5, 0.5, 0.5, 1.5]], np.float32)
    cxcywh = variant(ops.xyxy_to_cxcywh)(xyxy)
    np.testing.assert_array_equal(cxcywh, [[3, 6, 4, 8], [-1.5, 1, 4, 1]])
    np.testing.assert_array_equal(variant(ops.cxcywh_to_xyxy)(cxcywh), xyxy)
    yxyx = variant(ops.xyxy_to_yxyx)(xyxy)
    np.testing.assert_array_equal(yxyx, [[2, 1, 10, 5], [0.5, -3.5, 1.5, 0.5]])
    np.testing.assert_array_equal(variant(ops.yxyx_to_xyxy)(yxyx), xyxy)


def test_box_format_conversions_keep_leading_axes():
    x = np.random.default_rng(3).uniform(0, 9, (2, 3, 5, 4)).astype(np.float32)
    for fn in (ops.xyxy_to_cxcywh, ops.cxcywh_to_xyxy, ops.xyxy_to_yxyx, ops.yxyx_to_xyxy):
        out = fn(x)
        chex.assert_shape(out, x.shape)
        chex.assert_type(out, jnp.float32)
    np.testing.assert_allclose(ops.cxcywh_to_xyxy(ops.xyxy_to_cxcywh(x)), x, atol=1e-6)
