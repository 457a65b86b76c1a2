"""Keypoint heatmap encode/decode against torchvision's Keypoint R-CNN helpers."""

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
F32 = np.float32


def np_bicubic_resize(m, out_h, out_w):
    """PyTorch's bicubic resize (align_corners=False, A = -0.75) of one ``[S, S]`` map.

    Written as ``Wy @ m @ Wx.T`` with one row of 4 cubic weights per output pixel, taps
    clamped at the border (float64).
    """
    a = -0.75

    def near(x):
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    def matrix(out, n):
        w = np.zeros((out, n))
        for i in range(out):
            src = (i + 0.5) * (n / out) - 0.5
            base = min(math.floor(src), n - 1)
            t = min(max(src - base, 0.0), 1.0)
            for j, wt in enumerate([far(t + 1), near(t), near(1 - t), far(2 - t)]):
                w[i, min(max(base - 1 + j, 0), n - 1)] += wt
        return w

    s = m.shape[0]
    return matrix(out_h, s) @ m @ matrix(out_w, s).T


def np_decode(maps, rois):
    """torchvision's heatmaps_to_keypoints semantics with a full-size resize (float64)."""
    r, k = maps.shape[:2]
    out = np.zeros((r, k, 3))
    for i in range(r):
        w = max(rois[i, 2] - rois[i, 0], 1.0)
        h = max(rois[i, 3] - rois[i, 1], 1.0)
        ow, oh = math.ceil(w), math.ceil(h)
        for j in range(k):
            up = np_bicubic_resize(maps[i, j].astype(np.float64), oh, ow)
            y, x = np.unravel_index(np.argmax(up), up.shape)
            out[i, j] = [(x + 0.5) * w / ow + rois[i, 0], (y + 0.5) * h / oh + rois[i, 1], up[y, x]]
    return out


@pytest.fixture(scope="module")
def fx():
    return dict(np.load(FIXTURES / "keypoints.npz"))


# --- encoding: one-hot targets ---------------------------------------------------------------


@helpers.with_and_without_jit
def test_keypoints_to_heatmap_matches_torchvision(variant, fx):
    s = int(fx["heatmap_size"])
    targets, valid = variant(lambda k, r: ops.keypoints_to_heatmap(k, r, s))(
        fx["keypoints"], fx["rois"]
    )
    chex.assert_type(targets, jnp.int32)
    chex.assert_shape(valid, fx["valid"].shape)
    np.testing.assert_array_equal(np.asarray(valid), fx["valid"])
    np.testing.assert_array_equal(np.asarray(targets), fx["targets"])
    assert 0 < fx["valid"].mean() < 1


def test_keypoints_to_heatmap_hand_computed_cells_and_validity():
    rois = jnp.array([[10.0, 20.0, 30.0, 60.0]] * 5)  # 20 x 40 px, S = 4: cells 5 x 10 px
    kp = jnp.array(
        [
            [[10.0, 20.0, 1]],  # top-left corner -> cell (0, 0)
            [[30.0, 60.0, 2]],  # bottom-right edge -> forced to cell (3, 3)
            [[24.9, 49.9, 1]],  # x cell floor(14.9 / 5) = 2, y floor(29.9 / 10) = 2
            [[24.9, 49.9, 0]],  # invisible
            [[31.0, 30.0, 1]],  # right of the RoI
        ]
    )
    t, v = ops.keypoints_to_heatmap(kp, rois, 4)
    np.testing.assert_array_equal(np.asarray(v[:, 0]), [True, True, True, False, False])
    np.testing.assert_array_equal(np.asarray(t[:, 0]), [0, 15, 10, 0, 0])


# --- decoding: arg-max of the resized map ----------------------------------------------------


@helpers.with_and_without_jit
def test_heatmaps_to_keypoints_small_rois_match_torchvision(variant, fx):
    # RoIs up to 30 px: the 32-pixel window covers the whole resized map -> exact.
    out = variant(ops.heatmaps_to_keypoints)(fx["maps"], fx["rois"])
    chex.assert_shape(out, fx["maps"].shape[:2] + (3,))
    np.testing.assert_allclose(np.asarray(out[..., :2]), fx["decoded_xy"], rtol=1e-5)
    np.testing.assert_allclose(
        np.asarray(out[..., 2]), fx["decoded_scores"], rtol=1e-5, atol=1e-5
    )


def test_heatmaps_to_keypoints_large_rois_with_peaked_maps_match_torchvision(fx):
    out = ops.heatmaps_to_keypoints(fx["big_maps"], fx["big_rois"])
    np.testing.assert_allclose(np.asarray(out[..., :2]), fx["big_decoded_xy"], rtol=1e-5)
    np.testing.assert_allclose(
        np.asarray(out[..., 2]), fx["big_decoded_scores"], rtol=1e-5, atol=1e-5
    )


def test_heatmaps_to_keypoints_window_approximation_is_bounded():
    # Noise heatmaps on RoIs larger than the window: the documented approximation.
    # Bound: the score is a value of the same resized map, so it never exceeds the
    # full-search maximum, and on these maps it is within 15% of it (worst: 0.889); the
    # location is exact whenever the full-search arg-max lies inside the searched window.
    rng = np.random.default_rng(0)
    maps = rng.standard_normal((3, 4, 8, 8)).astype(np.float32)
    rois = np.array([[0, 0, 60, 50], [5, 5, 45, 100], [3, 2, 20, 15]], np.float32)
    out = np.asarray(ops.heatmaps_to_keypoints(maps, rois, window=16))
    ref = np_decode(maps, rois)
    assert np.all(out[..., 2] <= ref[..., 2] + 1e-4)
    assert np.all(out[..., 2] >= 0.85 * ref[..., 2])
    exact = np.all(np.abs(out[..., :2] - ref[..., :2]) < 1e-3, axis=-1)
    assert exact.mean() > 0.7
    assert np.all(exact[2])  # 17 x 13 px RoI: inside the window -> exact
    # With a window as large as the RoIs, decoding is exact everywhere.
    full = np.asarray(ops.heatmaps_to_keypoints(maps, rois, window=100))
    np.testing.assert_allclose(full[..., :2], ref[..., :2], rtol=1e-5)
    np.testing.assert_allclose(full[..., 2], ref[..., 2], rtol=1e-4, atol=1e-4)


def test_heatmaps_to_keypoints_under_vmap_compiles_once():
    rng = np.random.default_rng(1)
    # chex 0.1.92 refuses to wrap a transformed function (heatmaps_to_keypoints is jitted, and
    # so is its vmap): the counter wraps a plain function inside the vmap.
    decode = chex.assert_max_traces(lambda m, r: ops.heatmaps_to_keypoints(m, r), n=1)
    f = jax.jit(jax.vmap(decode))
    for _ in range(3):
        maps = rng.standard_normal((2, 3, 2, 6, 6)).astype(np.float32)
        xy = rng.uniform(0, 30, (2, 3, 2))
        rois = np.concatenate([xy, xy + rng.uniform(2, 20, (2, 3, 2))], -1).astype(F32)
        out = np.asarray(f(maps, rois))
        chex.assert_shape(out, (2, 3, 2, 3))
        for i in range(2):
            ref = np_decode(maps[i], rois[i])
            np.testing.assert_allclose(out[i, ..., :2], ref[..., :2], rtol=1e-5)


def np_bilinear_targets(kp, roi, s):
    """NumPy reference of the bilinear split of one keypoint ``(x, y)`` in one RoI:
    ``{flat cell: weight}`` over the 4 cells whose centres surround it (float64)."""
    x1, y1, x2, y2 = (float(v) for v in roi)
    u = min(max((kp[0] - x1) * s / (x2 - x1) - 0.5, 0.0), s - 1.0)
    v = min(max((kp[1] - y1) * s / (y2 - y1) - 0.5, 0.0), s - 1.0)
    bu, bv = min(math.floor(u), s - 2), min(math.floor(v), s - 2)
    fu, fv = u - bu, v - bv
    out = {}
    for dv, wv in ((0, 1 - fv), (1, fv)):
        for du, wu in ((0, 1 - fu), (1, fu)):
            cell = (bv + dv) * s + bu + du
            out[cell] = out.get(cell, 0.0) + wv * wu
    return out


# --- sub-cell option: bilinear targets and their local-mean decode ---------------------------


def test_bilinear_targets_match_numpy_and_share_the_cell_rule_validity():
    rng = np.random.default_rng(3)
    s, r, k = 8, 5, 6
    xy = rng.uniform(0, 40, (r, 2))
    rois = np.concatenate([xy, xy + rng.uniform(5, 30, (r, 2))], -1).astype(F32)
    kp = np.zeros((r, k, 3), F32)
    kp[..., 0] = rng.uniform(rois[:, :1] - 3, rois[:, 2:3] + 3, (r, k))
    kp[..., 1] = rng.uniform(rois[:, 1:2] - 3, rois[:, 3:4] + 3, (r, k))
    kp[..., 2] = rng.integers(0, 3, (r, k))
    cells, weights, valid = jax.jit(ops.keypoints_to_bilinear_heatmap,
                                    static_argnums=2)(kp, rois, s)
    chex.assert_shape([cells, weights], (r, k, 4))
    chex.assert_type([cells, weights], [jnp.int32, jnp.float32])
    _, cell_valid = ops.keypoints_to_heatmap(kp, rois, s)
    np.testing.assert_array_equal(np.asarray(valid), np.asarray(cell_valid))
    assert 0.2 < np.asarray(valid).mean() < 0.8
    for i in range(r):
        for j in range(k):
            got = {}
            for c, w in zip(np.asarray(cells[i, j]), np.asarray(weights[i, j]), strict=True):
                got[int(c)] = got.get(int(c), 0.0) + float(w)
            if not valid[i, j]:
                assert sum(got.values()) == 0.0
                continue
            want = np_bilinear_targets(kp[i, j], rois[i], s)
            for c in set(got) | set(want):
                assert got.get(c, 0.0) == pytest.approx(want.get(c, 0.0), abs=5e-6), (i, j, c)


def test_bilinear_targets_hand_computed():
    # RoI 8 px, S = 8: cell centres at 0.5, 1.5, ... -> (3.0, 5.5) is half way between the
    # centres of columns 2 and 3, on the centre of row 5.
    cells, weights, valid = ops.keypoints_to_bilinear_heatmap(
        jnp.array([[[3.0, 5.5, 2.0], [0.2, 7.9, 1.0]]]), jnp.array([[0.0, 0, 8, 8]]), 8)
    assert bool(valid.all())
    np.testing.assert_array_equal(np.asarray(cells[0, 0]), [42, 43, 50, 51])
    np.testing.assert_allclose(np.asarray(weights[0, 0]), [0.5, 0.5, 0, 0], atol=1e-6)
    # Outside the outer cell centres: clipped to them (all mass on the corner cell 56).
    np.testing.assert_allclose(np.asarray(weights[0, 1]), [0, 0, 1, 0], atol=1e-6)
    assert int(cells[0, 1, 2]) == 56


@helpers.with_and_without_jit
def test_local_mean_decode_inverts_bilinear_targets(variant):
    # Logits = log of the target weights: every keypoint between the outer cell centres
    # decodes back to itself (sub-pixel; the cell rule is off by up to a cell).
    rng = np.random.default_rng(4)
    s, r, k = 14, 3, 17
    rois = np.array([[3, 5, 27, 33], [40, 10, 100, 52], [0, 0, 9, 120]], F32)
    margin = (rois[:, 2:] - rois[:, :2]) / s * 0.5  # half a cell
    kp = np.zeros((r, k, 3), F32)
    kp[..., 0] = rng.uniform(rois[:, :1] + margin[:, :1], rois[:, 2:3] - margin[:, :1], (r, k))
    kp[..., 1] = rng.uniform(rois[:, 1:2] + margin[:, 1:], rois[:, 3:4] - margin[:, 1:], (r, k))
    kp[..., 2] = 2

    def round_trip(kp, rois):
        cells, weights, _ = ops.keypoints_to_bilinear_heatmap(kp, rois, s)
        probs = jnp.zeros((r, k, s * s)).at[
            jnp.arange(r)[:, None, None], jnp.arange(k)[None, :, None], cells].add(weights)
        maps = jnp.log(jnp.maximum(probs, 1e-12)).reshape(r, k, s, s)
        return ops.heatmaps_to_keypoints_local_mean(maps, rois)

    out = np.asarray(variant(round_trip)(kp, rois))
    chex.assert_shape(out, (r, k, 3))
    np.testing.assert_allclose(out[..., :2], kp[..., :2], atol=2e-3)
    cell_t, _ = ops.keypoints_to_heatmap(kp, rois, s)  # one-hot decode error, for scale
    cell = rois[:, None, 2:] - rois[:, None, :2]
    centre = np.stack([np.asarray(cell_t) % s, np.asarray(cell_t) // s], -1) + 0.5
    onehot_err = np.abs(rois[:, None, :2] + centre * cell / s - kp[..., :2])
    assert onehot_err.mean() > 0.5


def test_local_mean_decode_on_borders_and_under_vmap():
    # A peak in a corner cell: neighbours outside the map are left out, not clamped in.
    s = 6
    maps = np.full((1, 2, s, s), -30.0, F32)
    maps[0, 0, 0, 0] = maps[0, 0, 0, 1] = 0.0  # mass split between (0, 0) and (0, 1)
    maps[0, 1, 5, 5] = 0.0
    out = np.asarray(jax.jit(jax.vmap(ops.heatmaps_to_keypoints_local_mean))(
        maps[None], np.array([[[0.0, 0, 12, 12]]], F32)))[0]
    np.testing.assert_allclose(out[0, 0], [2.0, 1.0, 0.0], atol=1e-5)  # u 0.5, v 0
    np.testing.assert_allclose(out[0, 1], [11.0, 11.0, 0.0], atol=1e-5)
