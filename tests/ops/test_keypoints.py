"""Keypoint heatmap encode/decode against torchvision's Keypoint R-CNN helpers."""

import math
import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest

from jaxdet import ops

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


class EncodeTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_matches_torchvision(self):
        fx = dict(np.load(FIXTURES / "keypoints.npz"))
        s = int(fx["heatmap_size"])
        targets, valid = self.variant(lambda k, r: ops.keypoints_to_heatmap(k, r, s))(
            fx["keypoints"], fx["rois"]
        )
        chex.assert_type(targets, jnp.int32)
        chex.assert_shape(valid, fx["valid"].shape)
        np.testing.assert_array_equal(np.asarray(valid), fx["valid"])
        np.testing.assert_array_equal(np.asarray(targets), fx["targets"])
        self.assertTrue(0 < fx["valid"].mean() < 1)

    def test_hand_computed(self):
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


class DecodeTest(chex.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.fx = dict(np.load(FIXTURES / "keypoints.npz"))

    @chex.variants(with_jit=True, without_jit=True)
    def test_small_rois_match_torchvision(self):
        # RoIs up to 30 px: the 32-pixel window covers the whole resized map -> exact.
        fx = self.fx
        out = self.variant(ops.heatmaps_to_keypoints)(fx["maps"], fx["rois"])
        chex.assert_shape(out, fx["maps"].shape[:2] + (3,))
        np.testing.assert_allclose(np.asarray(out[..., :2]), fx["decoded_xy"], rtol=1e-5)
        np.testing.assert_allclose(
            np.asarray(out[..., 2]), fx["decoded_scores"], rtol=1e-5, atol=1e-5
        )

    def test_large_rois_with_peaked_maps_match_torchvision(self):
        fx = self.fx
        out = ops.heatmaps_to_keypoints(fx["big_maps"], fx["big_rois"])
        np.testing.assert_allclose(np.asarray(out[..., :2]), fx["big_decoded_xy"], rtol=1e-5)
        np.testing.assert_allclose(
            np.asarray(out[..., 2]), fx["big_decoded_scores"], rtol=1e-5, atol=1e-5
        )

    def test_window_approximation_is_bounded(self):
        # Noise heatmaps on RoIs larger than the window: the documented approximation.
        # Bound: the score is a value of the same resized map, so it never exceeds the
        # full-search maximum, and on these maps it is within 15% of it (worst: 0.889); the
        # location is exact whenever the full-search arg-max lies inside the searched window.
        rng = np.random.default_rng(0)
        maps = rng.standard_normal((3, 4, 8, 8)).astype(np.float32)
        rois = np.array([[0, 0, 60, 50], [5, 5, 45, 100], [3, 2, 20, 15]], np.float32)
        out = np.asarray(ops.heatmaps_to_keypoints(maps, rois, window=16))
        ref = np_decode(maps, rois)
        self.assertTrue(np.all(out[..., 2] <= ref[..., 2] + 1e-4))
        self.assertTrue(np.all(out[..., 2] >= 0.85 * ref[..., 2]))
        exact = np.all(np.abs(out[..., :2] - ref[..., :2]) < 1e-3, axis=-1)
        self.assertGreater(exact.mean(), 0.7)
        self.assertTrue(np.all(exact[2]))  # 17 x 13 px RoI: inside the window -> exact
        # With a window as large as the RoIs, decoding is exact everywhere.
        full = np.asarray(ops.heatmaps_to_keypoints(maps, rois, window=100))
        np.testing.assert_allclose(full[..., :2], ref[..., :2], rtol=1e-5)
        np.testing.assert_allclose(full[..., 2], ref[..., 2], rtol=1e-4, atol=1e-4)

    def test_vmap_and_compiles_once(self):
        rng = np.random.default_rng(1)
        f = jax.jit(jax.vmap(ops.heatmaps_to_keypoints))
        for _ in range(3):
            maps = rng.standard_normal((2, 3, 2, 6, 6)).astype(np.float32)
            xy = rng.uniform(0, 30, (2, 3, 2))
            rois = np.concatenate([xy, xy + rng.uniform(2, 20, (2, 3, 2))], -1).astype(F32)
            out = np.asarray(f(maps, rois))
            chex.assert_shape(out, (2, 3, 2, 3))
            for i in range(2):
                ref = np_decode(maps[i], rois[i])
                np.testing.assert_allclose(out[i, ..., :2], ref[..., :2], rtol=1e-5)
        self.assertEqual(f._cache_size(), 1)


if __name__ == "__main__":
    absltest.main()
