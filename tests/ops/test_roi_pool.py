"""RoIPool: torchvision goldens (forward, arg-max gradient), a NumPy loop reference, hand cases."""

import math
import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxdet import ops
from jaxdet.ops.fdiv import divide_by_int
from tests import helpers

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
F32 = np.float32


def c_round(x: np.float32) -> int:
    """C's round(): half away from zero."""
    return int(math.copysign(math.floor(abs(float(x)) + 0.5), float(x)))


def np_roi_pool(feat, boxes, output_size, scale):
    """Loop reference from the kernel's semantics -> (out [R,h,w,C], argmax [R,h,w,C] or -1)."""
    h_, w_, c_ = feat.shape
    ph_, pw_ = output_size
    out = np.zeros((len(boxes), ph_, pw_, c_), F32)
    arg = np.full((len(boxes), ph_, pw_, c_), -1, np.int64)
    for r, b in enumerate(np.asarray(boxes, F32)):
        x1, y1, x2, y2 = (c_round(b[i] * F32(scale)) for i in range(4))
        rw, rh = max(x2 - x1 + 1, 1), max(y2 - y1 + 1, 1)
        bh, bw = F32(rh) / F32(ph_), F32(rw) / F32(pw_)
        for ph in range(ph_):
            hs = min(max(int(np.floor(F32(ph) * bh)) + y1, 0), h_)
            he = min(max(int(np.ceil(F32(ph + 1) * bh)) + y1, 0), h_)
            for pw in range(pw_):
                ws = min(max(int(np.floor(F32(pw) * bw)) + x1, 0), w_)
                we = min(max(int(np.ceil(F32(pw + 1) * bw)) + x1, 0), w_)
                if he <= hs or we <= ws:
                    continue
                for c in range(c_):
                    best, best_i = -np.inf, -1
                    for y in range(hs, he):
                        for x in range(ws, we):
                            if feat[y, x, c] > best:
                                best, best_i = feat[y, x, c], y * w_ + x
                    out[r, ph, pw, c], arg[r, ph, pw, c] = best, best_i
    return out, arg


def random_boxes(rng, n, lo, hi, max_wh):
    xy = rng.uniform(lo, hi, (n, 2))
    wh = rng.uniform(-1, max_wh, (n, 2))
    return np.concatenate([xy, xy + wh], 1).astype(np.float32)


@jax.jit
def pool_and_grad(feats, boxes, scale, cotangent):
    """RoIPool (5 x 4 bins) and its feature gradient for a cotangent, in one compilation.

    Every fixture-sized case below ([10, 12, 2] map, 40 boxes, traced scale) reuses it: each
    RoIPool compilation costs seconds on a loaded 2-core machine.
    """
    out, vjp = jax.vjp(lambda x: ops.roi_pool(x, boxes, (5, 4), scale), feats)
    return out, vjp(cotangent)[0]


def test_forward_and_gradient_match_torchvision_exactly():
    fx = dict(np.load(FIXTURES / "roi_pool.npz"))
    for tag, scale in (("s1", 1.0), ("s05", 0.5), ("s025", 0.25)):
        boxes = fx[f"boxes_{tag}"]
        out, grad = pool_and_grad(fx["features"], boxes, jnp.float32(scale), fx[f"gout_{tag}"])
        chex.assert_shape(out, (len(boxes), 5, 4, 2))
        # Max pooling copies values and the gradient adds cotangents: both bit-exact.
        np.testing.assert_array_equal(np.asarray(out), fx[f"out_{tag}"])
        np.testing.assert_allclose(np.asarray(grad), fx[f"grad_{tag}"], rtol=1e-6, atol=1e-6)
        assert np.abs(fx[f"grad_{tag}"]).max() > 0.5


def expected_grad(arg, g, shape):
    """Scatter each output's cotangent onto its arg-max (the reference backward)."""
    expect = np.zeros(shape, np.float64)
    for idx in np.ndindex(arg.shape):
        if arg[idx] >= 0:
            expect[arg[idx] // shape[1], arg[idx] % shape[1], idx[3]] += g[idx]
    return expect


def test_random_boxes_with_ties_match_numpy_forward_and_gradient():
    rng = np.random.default_rng(1)
    for scale in (1.0, 0.5, 1 / 16):
        feats = np.round(rng.standard_normal((10, 12, 2)) * 2).astype(np.float32)  # ties
        boxes = random_boxes(rng, 40, -6 / scale, 16 / scale, 18 / scale)
        boxes[:8] = (np.round(boxes[:8] * scale * 2) / 2) / scale  # k + 0.5 after scaling
        ref, arg = np_roi_pool(feats, boxes, (5, 4), scale)
        g = rng.standard_normal(ref.shape).astype(np.float32)
        out, grad = pool_and_grad(feats, boxes, jnp.float32(scale), g)
        np.testing.assert_array_equal(np.asarray(out), ref)
        # Gradient: every output's cotangent lands on its arg-max (first maximum).
        np.testing.assert_allclose(
            np.asarray(grad), expected_grad(arg, g, feats.shape), rtol=1e-5, atol=1e-5
        )


def test_large_and_far_boxes_match_numpy_exactly():
    # Bins of any size (here up to the whole map) use the same four table look-ups.
    rng = np.random.default_rng(3)
    feats = rng.standard_normal((10, 12, 2)).astype(np.float32)
    boxes = random_boxes(rng, 40, -5, 15, 10)
    boxes[:4] = [[-500, -500, 500, 500], [-3e8, 2, 4, 3e8], [0, 0, 11, 9], [-40, -2, 60, 9]]
    ref, arg = np_roi_pool(feats, boxes, (5, 4), 1.0)
    g = rng.standard_normal(ref.shape).astype(np.float32)
    out, grad = pool_and_grad(feats, boxes, jnp.float32(1.0), g)
    np.testing.assert_array_equal(np.asarray(out), ref)
    np.testing.assert_allclose(
        np.asarray(grad), expected_grad(arg, g, feats.shape), rtol=1e-5, atol=1e-5
    )


def test_vmap_over_batch_matches_numpy():
    rng = np.random.default_rng(2)
    feats = rng.standard_normal((2, 4, 6, 2)).astype(np.float32)
    boxes = np.stack([random_boxes(rng, 7, -3, 6, 6) for _ in range(2)])
    out = jax.jit(jax.vmap(lambda f, b: ops.roi_pool(f, b, (2, 2), 1.0)))(feats, boxes)
    chex.assert_shape(out, (2, 7, 2, 2, 2))
    for i in range(2):
        np.testing.assert_array_equal(
            np.asarray(out[i]), np_roi_pool(feats[i], boxes[i], (2, 2), 1.0)[0]
        )


@helpers.with_and_without_jit
def test_box_coordinates_round_half_away_from_zero(variant):
    feats = jnp.arange(10, dtype=jnp.float32).reshape(1, 10, 1)  # f[0, x] = x
    # x1 = 2.5 -> 3 (jnp.round would give 2), x2 = 4.5 -> 5: max over columns 3..5 = 5;
    # a single bin. x1 = -0.5 -> -1, x2 = 0.5 -> 1: columns -1..1 clipped -> max 1.
    boxes = jnp.array([[2.5, 0, 4.5, 0], [-0.5, 0, 0.5, 0], [2.5, 0, 2.5, 0]])
    out = variant(lambda f, b: ops.roi_pool(f, b, (1, 1), 1.0))(feats, boxes)
    np.testing.assert_array_equal(np.asarray(out[:, 0, 0, 0]), [5.0, 1.0, 3.0])
    # Two bins over columns 3..5 (width 3, bin 1.5): [3, 5) -> 4 and [4, 6) -> 5.
    out = ops.roi_pool(feats, boxes[:1], (1, 2), 1.0)
    np.testing.assert_array_equal(np.asarray(out[0, 0, :, 0]), [4.0, 5.0])


def test_empty_bins_are_zero_and_get_no_gradient():
    feats = np.full((10, 12, 2), -3.0, np.float32)
    boxes = random_boxes(np.random.default_rng(5), 40, 0, 8, 6)
    boxes[0] = [30, 30, 40, 40]  # fully outside: every bin clipped to nothing
    boxes[1] = [8, 6, 15, 13]  # partly outside: bins inside keep the (negative) max
    out, grad = pool_and_grad(feats, boxes, jnp.float32(1.0), np.ones((40, 5, 4, 2), F32))
    np.testing.assert_array_equal(np.asarray(out[0]), 0.0)
    # Box 1: rows 6..13 -> bins of 8/5 rows, columns 8..15 -> bins of 2 columns.
    expect = np.zeros((5, 4))
    expect[:3, :2] = -3.0  # rows [6, 10) and columns [8, 12) are inside the map
    np.testing.assert_array_equal(np.asarray(out[1, :, :, 0]), expect)
    # Each non-empty bin sends its cotangent (1) to one element; empty bins send nothing.
    assert float(np.asarray(grad).sum()) == float((np.asarray(out) != 0).sum())


def test_exact_bin_edges_despite_xla_division():
    # roi 21 px, 7 bins: bin size must be exactly 3 (21 / 7 in XLA:CPU is 3.0000002,
    # which would make every bin 4 px wide and overlap its neighbour).
    assert float(jax.jit(lambda a: divide_by_int(a, 7))(jnp.float32(21))) == 3.0
    feats = jnp.arange(21, dtype=jnp.float32)[::-1].reshape(1, 21, 1)  # decreasing
    out = ops.roi_pool(feats, jnp.array([[0.0, 0, 20, 0]]), (1, 7), 1.0)
    np.testing.assert_array_equal(np.asarray(out[0, 0, :, 0]), [20, 17, 14, 11, 8, 5, 2])


def test_roi_pool_compiles_once_per_shape():
    rng = np.random.default_rng(0)
    f = jax.jit(chex.assert_max_traces(lambda x, b: ops.roi_pool(x, b, (2, 2), 0.5), n=1))
    for _ in range(3):
        f(rng.standard_normal((6, 7, 2)).astype(np.float32), random_boxes(rng, 5, 0, 9, 5))
