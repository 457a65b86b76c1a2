"""RoIAlign (single-level and FPN): torchvision goldens, a NumPy loop reference, hand cases.

Tolerance: XLA:CPU contracts multiply-adds into FMAs, so sums of bilinear terms differ from
the C++ kernel by a few ulps of the *summands*; where a bin's terms cancel to almost 0 an
elementwise relative bound is meaningless. Every comparison is therefore ``|out - ref| <=
1e-5 * (|ref| + max|features|)``: 1e-5 relative to the values being averaged.
"""

import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet import ops
from tests import helpers

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
F32 = np.float32


def np_roi_align(feat, boxes, output_size, scale, ratio, aligned):
    """Loop reference written from the C++ kernel's semantics, in float32 arithmetic.

    feat ``[H, W, C]``, boxes ``[R, 4]`` (x1, y1, x2, y2) -> ``[R, h, w, C]``.
    """
    h_, w_, c_ = feat.shape
    ph_, pw_ = output_size
    out = np.zeros((len(boxes), ph_, pw_, c_), F32)
    off = F32(0.5 if aligned else 0.0)
    for r, b in enumerate(np.asarray(boxes, F32)):
        x1, y1, x2, y2 = (b[i] * F32(scale) - off for i in range(4))
        rw, rh = x2 - x1, y2 - y1
        if not aligned:
            rw, rh = max(rw, F32(1)), max(rh, F32(1))
        bh, bw = rh / F32(ph_), rw / F32(pw_)
        for ph in range(ph_):
            for pw in range(pw_):
                acc = np.zeros(c_, F32)
                for iy in range(ratio):
                    y = y1 + F32(ph) * bh + F32(iy + 0.5) * bh / F32(ratio)
                    for ix in range(ratio):
                        x = x1 + F32(pw) * bw + F32(ix + 0.5) * bw / F32(ratio)
                        if y < -1 or y > h_ or x < -1 or x > w_:
                            continue
                        yy, xx = max(y, F32(0)), max(x, F32(0))
                        yl, xl = int(yy), int(xx)
                        if yl >= h_ - 1:
                            yl = yh = h_ - 1
                            yy = F32(yl)
                        else:
                            yh = yl + 1
                        if xl >= w_ - 1:
                            xl = xh = w_ - 1
                            xx = F32(xl)
                        else:
                            xh = xl + 1
                        ly, lx = yy - F32(yl), xx - F32(xl)
                        hy, hx = F32(1) - ly, F32(1) - lx
                        acc = acc + (
                            hy * hx * feat[yl, xl]
                            + hy * lx * feat[yl, xh]
                            + ly * hx * feat[yh, xl]
                            + ly * lx * feat[yh, xh]
                        )
                out[r, ph, pw] = acc / F32(ratio * ratio)
    return out


def np_levels(boxes, k0=4, s0=224.0, lo=2, hi=5):
    area = np.maximum((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), 0)
    with np.errstate(divide="ignore"):
        lvl = np.floor(k0 + np.log2(np.sqrt(area) / s0) + 1e-6)
    return np.clip(lvl, lo, hi).astype(np.int32)


def assert_close(out, ref, scale):
    out = np.asarray(out, np.float32)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5 * float(scale))


def random_boxes(rng, n, lo, hi, max_wh):
    xy = rng.uniform(lo, hi, (n, 2))
    wh = rng.uniform(-1, max_wh, (n, 2))
    return np.concatenate([xy, xy + wh], 1).astype(np.float32)


# --- torchvision goldens (experiments/golden/make_roi_fixtures.py) ---------------------------


@pytest.fixture(scope="module")
def fx():
    return dict(np.load(FIXTURES / "roi_align.npz"))


@pytest.fixture(scope="module")
def ms():
    return dict(np.load(FIXTURES / "multiscale_roi_align.npz"))


def check_golden(fx, variant, tag, scale, aligned, ratio):
    feats = fx["features"]
    boxes = fx[f"boxes_{tag}"]
    key = f"{tag}_a{int(aligned)}_r{ratio}"

    def f(x):
        return ops.roi_align(x, boxes, (5, 4), scale, ratio, aligned)

    out, vjp = jax.vjp(variant(f), jnp.asarray(feats))
    chex.assert_shape(out, (len(boxes), 5, 4, 2))
    chex.assert_type(out, jnp.float32)
    fmax = np.abs(feats).max()
    assert_close(out, fx[f"out_{key}"], fmax)
    (grad,) = vjp(jnp.asarray(fx[f"gout_{tag}"]))
    assert_close(grad, fx[f"grad_{key}"], np.abs(fx[f"gout_{tag}"]).max())
    # The fixtures are not trivially zero: fully-outside boxes are, the rest is not.
    assert np.abs(fx[f"out_{key}"]).max() > 0.5


@helpers.with_and_without_jit
@pytest.mark.parametrize(
    "tag, scale, aligned, ratio",
    [("s1", 1.0, True, 2), ("s05", 0.5, False, 2)],
    ids=["s1_a1_r2", "s05_a0_r2"],  # the fixture keys: tag, aligned, sampling ratio
)
def test_forward_and_gradient_match_torchvision_with_and_without_jit(
    variant, fx, tag, scale, aligned, ratio
):
    check_golden(fx, variant, tag, scale, aligned, ratio)


@pytest.mark.parametrize(
    "tag, scale, aligned, ratio",
    [
        ("s1", 1.0, True, 1),
        ("s1", 1.0, True, 3),
        ("s1", 1.0, False, 1),
        ("s1", 1.0, False, 2),
        ("s1", 1.0, False, 3),
        ("s05", 0.5, True, 2),
    ],
    ids=["s1_a1_r1", "s1_a1_r3", "s1_a0_r1", "s1_a0_r2", "s1_a0_r3", "s05_a1_r2"],
)
def test_forward_and_gradient_match_torchvision(fx, tag, scale, aligned, ratio):
    check_golden(fx, lambda f: f, tag, scale, aligned, ratio)


@helpers.with_and_without_jit
def test_multiscale_forward_and_gradient_match_torchvision(variant, ms):
    feats = [jnp.asarray(ms[f"features_{i}"]) for i in range(4)]
    boxes = ms["boxes"]

    def f(fs):
        # torchvision's MultiScaleRoIAlign: aligned=False, canonical 224 / level 4.
        return ops.multilevel_roi_align(fs, boxes, (7, 7), 2, aligned=False)

    out, vjp = jax.vjp(variant(f), feats)
    chex.assert_shape(out, (len(boxes), 7, 7, 2))
    fmax = max(np.abs(np.asarray(x)).max() for x in feats)
    assert_close(out, ms["out"], fmax)
    (grads,) = vjp(jnp.asarray(ms["gout"]))
    gmax = np.abs(ms["gout"]).max()
    for i in range(4):
        assert_close(grads[i], ms[f"grad_{i}"], gmax)
        assert np.abs(ms[f"grad_{i}"]).max() > 0.0  # every level used
    np.testing.assert_array_equal(np.bincount(np_levels(boxes) - 2, minlength=4) > 0, True)


# --- NumPy loop reference --------------------------------------------------------------------


@helpers.with_and_without_jit
@pytest.mark.parametrize("scale", [1.0, 0.25], ids=lambda s: f"scale{s}")
@pytest.mark.parametrize("ratio", [1, 2], ids=lambda r: f"ratio{r}")
@pytest.mark.parametrize("aligned", [True, False], ids=["aligned", "unaligned"])
def test_random_boxes_match_numpy(variant, aligned, ratio, scale):
    rng = np.random.default_rng(7)
    feats = rng.standard_normal((9, 13, 3)).astype(np.float32)
    boxes = random_boxes(rng, 30, -8 / scale, 16 / scale, 14 / scale)
    boxes[:6] = np.round(boxes[:6] * 2) / 2  # .5 boundaries
    out = variant(lambda f, b: ops.roi_align(f, b, (3, 4), scale, ratio, aligned))(
        feats, boxes
    )
    ref = np_roi_align(feats, boxes, (3, 4), scale, ratio, aligned)
    assert_close(out, ref, np.abs(feats).max())


def test_vmap_over_batch_matches_numpy():
    rng = np.random.default_rng(3)
    feats = rng.standard_normal((3, 8, 10, 2)).astype(np.float32)
    boxes = np.stack([random_boxes(rng, 6, -4, 10, 9) for _ in range(3)])
    out = jax.jit(jax.vmap(lambda f, b: ops.roi_align(f, b, (2, 3), 0.5, 2, True)))(
        feats, boxes
    )
    chex.assert_shape(out, (3, 6, 2, 3, 2))
    for i in range(3):
        ref = np_roi_align(feats[i], boxes[i], (2, 3), 0.5, 2, True)
        assert_close(out[i], ref, np.abs(feats).max())


def _two_image_pyramid(seed):
    rng = np.random.default_rng(seed)
    shapes = [(16, 20), (8, 10), (4, 5), (2, 3)]
    feats = [rng.standard_normal((2, h, w, 3)).astype(np.float32) for h, w in shapes]
    side = np.exp(rng.uniform(np.log(10), np.log(800), (2, 12)))
    x1 = rng.uniform(-10, 60, (2, 12))
    y1 = rng.uniform(-10, 50, (2, 12))
    boxes = np.stack([x1, y1, x1 + side, y1 + side * 0.7], -1).astype(np.float32)
    return feats, boxes


@pytest.mark.parametrize("batched", ["vmap", "batch axis"])
def test_multilevel_over_images_equals_per_level_reference(batched):
    feats, boxes = _two_image_pyramid(5)
    fn = lambda f, b: ops.multilevel_roi_align(f, b, (3, 3), 2)  # noqa: E731
    out = jax.jit(jax.vmap(fn) if batched == "vmap" else fn)(feats, boxes)
    chex.assert_shape(out, (2, 12, 3, 3, 3))
    for i in range(2):
        lvls = np_levels(boxes[i])
        for r in range(12):
            f = feats[lvls[r] - 2][i]
            ref = np_roi_align(f, boxes[i, r : r + 1], (3, 3), 2.0 ** -lvls[r], 2, True)
            assert_close(out[i, r : r + 1], ref, np.abs(f).max())


def test_multilevel_batch_axis_gradient_equals_vmap():
    feats, boxes = _two_image_pyramid(6)
    cotangent = np.random.default_rng(7).standard_normal((2, 12, 3, 3, 3)).astype(np.float32)

    def grads(fn):
        return jax.jit(jax.grad(lambda f: jnp.sum(fn(f, boxes) * cotangent)))(feats)

    per_image = jax.vmap(lambda f, b: ops.multilevel_roi_align(f, b, (3, 3), 2))
    want = grads(per_image)
    got = grads(lambda f, b: ops.multilevel_roi_align(f, b, (3, 3), 2))
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_single_level_with_image_index_equals_per_image_calls():
    rng = np.random.default_rng(10)
    feats = rng.standard_normal((3, 9, 11, 2)).astype(F32)
    boxes = random_boxes(rng, 6, 0, 40, 40)
    image = np.array([2, 0, 1, 2, 0, 1])
    got = ops.roi_align(feats, boxes, (2, 3), 0.25, 2, False, image_index=image)
    want = np.stack([ops.roi_align(feats[i], boxes[k:k + 1], (2, 3), 0.25, 2, False)[0]
                     for k, i in enumerate(image)])
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="image_index"):
        ops.roi_align(feats, boxes, (2, 3), image_index=image[:2])
    with pytest.raises(ValueError, match=r"\[H, W, C\]"):
        ops.roi_align(feats, boxes, (2, 3))


def test_multilevel_with_image_index_equals_the_batch_axis():
    feats, boxes = _two_image_pyramid(9)
    want = ops.multilevel_roi_align(feats, boxes, (3, 3), 2)
    image = np.array([1, 0, 1, 1, 0])
    rows = np.array([3, 0, 11, 3, 7])
    got = jax.jit(lambda f, b, i: ops.multilevel_roi_align(f, b, (3, 3), 2, image_index=i))(
        feats, boxes[image, rows], image)
    chex.assert_shape(got, (5, 3, 3, 3))
    np.testing.assert_allclose(got, want[image, rows], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("case", ["batch size", "unbatched maps, batched boxes",
                                  "index length", "batched boxes with an index",
                                  "unbatched maps with an index", "channels"])
def test_multilevel_rejects_each_mismatched_layout(case):
    feats, boxes = _two_image_pyramid(8)
    index = None
    if case == "batch size":
        boxes = boxes[:1]
    elif case == "unbatched maps, batched boxes":
        feats = [f[0] for f in feats]
    elif case == "index length":
        boxes, index = boxes[0], np.zeros(3, np.int32)
    elif case == "batched boxes with an index":
        index = np.zeros(boxes.shape[1], np.int32)
    elif case == "unbatched maps with an index":
        feats, boxes, index = [f[0] for f in feats], boxes[0], np.zeros(12, np.int32)
    else:
        feats = [f[0] for f in feats[:-1]] + [jnp.ones((2, 2, 5))]
        boxes = boxes[0]
    with pytest.raises(ValueError, match=r"\[B, H_l, W_l, C\] with boxes \[B, R, 4\]"):
        ops.multilevel_roi_align(feats, boxes, image_index=index)


def test_bfloat16_features_with_float32_coordinates_match_numpy():
    rng = np.random.default_rng(11)
    feats = rng.standard_normal((12, 12, 4)).astype(np.float32)
    # Coordinates far from 0 would lose their fraction in bfloat16; they must not.
    boxes = np.array([[0.3, 0.6, 10.3, 9.1], [2.2, 1.1, 5.7, 11.9]], np.float32)
    out = ops.roi_align(jnp.asarray(feats, jnp.bfloat16), boxes, (4, 4), 1.0, 2, True)
    chex.assert_type(out, jnp.bfloat16)
    ref = np_roi_align(
        np.asarray(jnp.asarray(feats, jnp.bfloat16).astype(jnp.float32)),
        boxes,
        (4, 4),
        1.0,
        2,
        True,
    )
    np.testing.assert_allclose(np.asarray(out, np.float32), ref, rtol=1e-2, atol=1e-2)


# --- hand-computed cases ---------------------------------------------------------------------

# f[y, x] = 10 y + x: bilinear sampling of a linear map is exact.
_Y, _X = np.mgrid[0:6, 0:8].astype(np.float32)
LINEAR_FEATS = (10 * _Y + _X)[..., None]


@helpers.with_and_without_jit
def test_aligned_sampling_of_a_linear_map(variant):
    # aligned: start 0.5, roi 4, bins of 2, samples at 1, 2 (bin 0) and 3, 4 (bin 1).
    out = variant(lambda f, b: ops.roi_align(f, b, (2, 2), 1.0, 2, True))(
        LINEAR_FEATS, np.array([[1, 1, 5, 5]], np.float32)
    )
    np.testing.assert_allclose(out[0, :, :, 0], [[16.5, 18.5], [36.5, 38.5]], rtol=1e-6)


def test_unaligned_forces_roi_size_one():
    # Zero-size box at (2, 3): unaligned forces roi 1x1; one sample at (3.5, 2.5).
    b = np.array([[3, 2, 3, 2]], np.float32)
    out = ops.roi_align(LINEAR_FEATS, b, (1, 1), 1.0, 1, False)
    np.testing.assert_allclose(out[0, 0, 0, 0], 28.5, rtol=1e-6)
    # aligned keeps it at size 0: the sample sits at (2.5, 1.5).
    out = ops.roi_align(LINEAR_FEATS, b, (1, 1), 1.0, 1, True)
    np.testing.assert_allclose(out[0, 0, 0, 0], 17.5, rtol=1e-6)


def test_border_rules_of_the_reference_kernel():
    h, w = 6, 8
    cases = [
        # (box, expected) with aligned=False, one 1x1 bin, one sample at the box centre.
        ([2.5, h - 0.5, 3.5, h + 0.5], 10 * (h - 1) + 3.0),  # y == H: valid, row H - 1
        ([2.5, h - 0.25, 3.5, h + 0.75], 0.0),  # y = H + 0.25 > H: contributes 0
        ([2.5, -1.5, 3.5, -0.5], 3.0),  # y == -1: valid, clamped to row 0
        ([2.5, -1.75, 3.5, -0.75], 0.0),  # y < -1: 0
        ([w - 0.5, 1.5, w + 0.5, 2.5], 10 * 2 + (w - 1.0)),  # x == W
        ([-1.5, 1.5, -0.5, 2.5], 20.0),  # x == -1
        ([2.5, h - 1.1, 3.5, h - 0.1], 10 * (h - 1) + 3.0),  # y in (H-1, H): row H-1
        ([2.5, -0.9, 3.5, 0.1], 3.0),  # y in (-1, 0): clamped to 0
    ]
    boxes = np.array([c[0] for c in cases], np.float32)
    out = ops.roi_align(LINEAR_FEATS, boxes, (1, 1), 1.0, 1, False)
    np.testing.assert_allclose(out[:, 0, 0, 0], [c[1] for c in cases], rtol=1e-6, atol=1e-6)


def test_fully_outside_is_zero_and_mixed_bins_average():
    b = np.array([[20, 20, 30, 30], [-30, -30, -20, -20]], np.float32)
    out = ops.roi_align(LINEAR_FEATS, b, (2, 2), 1.0, 2, True)
    np.testing.assert_array_equal(np.asarray(out), 0.0)
    # Half the samples of the only bin out of range (x < -1): the mean counts them as 0.
    # aligned=False box x in [-4, 4]: samples at -2 (out) and 2 (in); y in [1, 3]: 1.5, 2.5.
    out = ops.roi_align(
        LINEAR_FEATS, np.array([[-4, 1, 4, 3]], np.float32), (1, 1), 1.0, 2, False
    )
    np.testing.assert_allclose(out[0, 0, 0, 0], (2 * 2.0 + 15 + 25) / 4, rtol=1e-6)


def assert_vjp_matches_finite_differences(f, x, rng, eps=1e-2):
    """<vjp(u), v> against a central difference of <u, f(x + t v)> along random directions."""
    out, vjp = jax.vjp(f, x)
    for _ in range(3):
        u = jax.tree.map(lambda a: rng.standard_normal(a.shape).astype(np.float32), out)
        v = jax.tree.map(lambda a: rng.standard_normal(a.shape).astype(np.float32), x)
        (g,) = vjp(u)
        analytic = sum(
            float(jnp.vdot(a, b))
            for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(v), strict=True)
        )
        plus = f(jax.tree.map(lambda a, b: a + eps * b, x, v))
        minus = f(jax.tree.map(lambda a, b: a - eps * b, x, v))
        numeric = float(jnp.vdot(u, (plus - minus) / (2 * eps)))
        np.testing.assert_allclose(analytic, numeric, rtol=1e-3, atol=1e-3)
        assert abs(analytic) > 1e-2, "degenerate check"


# --- gradients -------------------------------------------------------------------------------


def test_gradient_matches_finite_differences():
    rng = np.random.default_rng(2)
    feats = jnp.asarray(rng.standard_normal((7, 9, 2)).astype(np.float32))
    boxes = random_boxes(rng, 8, -4, 8, 8)
    # aligned=False here; the multi-level check below runs aligned=True.
    assert_vjp_matches_finite_differences(
        lambda x: ops.roi_align(x, boxes, (3, 2), 1.0, 2, False), feats, rng
    )


def test_multilevel_gradient_matches_finite_differences():
    rng = np.random.default_rng(4)
    feats = [
        jnp.asarray(rng.standard_normal((h, w, 2)).astype(np.float32))
        for h, w in [(8, 8), (4, 4), (2, 2), (1, 1)]
    ]
    boxes = np.array([[0, 0, 20, 20], [2, 3, 150, 90], [0, 0, 500, 400]], np.float32)
    assert_vjp_matches_finite_differences(
        lambda fs: ops.multilevel_roi_align(fs, boxes, (2, 2), 2), feats, rng
    )


def test_no_gradient_flows_to_boxes():
    feats = jnp.ones((5, 5, 1))
    g = jax.grad(lambda b: ops.roi_align(feats * 2, b, (2, 2)).sum())(
        jnp.array([[0.5, 0.5, 3.0, 3.0]])
    )
    np.testing.assert_array_equal(np.asarray(g), 0.0)


# --- FPN levels, compilation, argument checks ------------------------------------------------


def test_fpn_levels_of_boxes():
    boxes = np.array(
        [
            [0, 0, 112, 112],  # log2(0.5) = -1 -> 3
            [0, 0, 224, 224],  # 4
            [0, 0, 448, 448],  # 5
            [0, 0, 4000, 4000],  # clamped to 5
            [0, 0, 10, 10],  # clamped to 2
            [5, 5, 5, 9],  # zero area -> 2
            [9, 9, 5, 5],  # negative area (flipped): treated as 0 -> 2
            [0, 0, 111.9, 111.9],  # just under 112 -> 2
        ],
        np.float32,
    )
    np.testing.assert_array_equal(ops.fpn_levels(boxes), [3, 4, 5, 5, 2, 2, 2, 2])


def test_roi_align_and_multilevel_compile_once_per_shape():
    rng = np.random.default_rng(0)
    f = jax.jit(chex.assert_max_traces(
        lambda x, b: ops.roi_align(x, b, (2, 2), 0.5, 2, True), n=1))
    for _ in range(3):
        f(rng.standard_normal((6, 7, 2)).astype(np.float32), random_boxes(rng, 5, 0, 9, 5))
    g = jax.jit(chex.assert_max_traces(
        lambda fs, b: ops.multilevel_roi_align(fs, b, (2, 2), 2), n=1))
    for _ in range(3):
        fs = [rng.standard_normal((s, s, 2)).astype(np.float32) for s in (8, 4, 2, 1)]
        g(fs, random_boxes(rng, 5, 0, 30, 300))


def test_rejects_adaptive_sampling_and_wrong_level_count():
    with pytest.raises(ValueError):
        ops.roi_align(jnp.ones((4, 4, 1)), jnp.zeros((1, 4)), (2, 2), 1.0, 0)
    with pytest.raises(ValueError):
        ops.multilevel_roi_align([jnp.ones((4, 4, 1))] * 3, jnp.zeros((1, 4)), (2, 2), 2)



def test_gather_loops_run_over_feature_rows_when_the_consumer_flattens_them():
    # XLA:CPU: with the box head's [R, h * w * C] reshape fused in, a loop over the flattened
    # shape is ~3x slower (row arithmetic per element); the gathers must sit under a
    # concatenate, which is emitted as one loop per [..., C] operand.
    rng = np.random.default_rng(0)
    feats = [jnp.asarray(rng.random((2, 32 >> i, 32 >> i, 8), F32)) for i in range(4)]
    xy = rng.random((2, 6, 2)) * 20
    boxes = jnp.asarray(np.concatenate([xy, xy + 4 + rng.random((2, 6, 2)) * 40], -1), F32)

    def pooled_rows(features, b):
        return jax.vmap(ops.multilevel_roi_align)(features, b).reshape(12, -1)

    hlo = jax.jit(pooled_rows).lower(feats, boxes).compile().as_text()
    gathering = [body for body in hlo.split("\n\n") if " gather(" in body and "f32[" in body
                 and "slice_sizes={1,1,8}" in body]
    assert gathering
    for body in gathering:
        concats = [line for line in body.splitlines() if " concatenate(" in line
                   and line.split("=")[1].strip().startswith("f32[")]
        assert concats, body
        assert all(c.split("]")[0].endswith(",8") for c in concats), concats
