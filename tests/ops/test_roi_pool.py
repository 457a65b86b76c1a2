"""RoIPool: torchvision goldens (forward, arg-max gradient), a NumPy loop reference, hand cases."""

import math
import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

from jaxdet import ops
from jaxdet.ops.fdiv import divide_by_int

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


class GoldenTest(chex.TestCase, parameterized.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.fx = dict(np.load(FIXTURES / "roi_pool.npz"))

    @chex.variants(with_jit=True, without_jit=True)
    def test_forward_and_gradient_exact(self):
        for tag, scale in (("s1", 1.0), ("s05", 0.5), ("s025", 0.25)):
            self.check_golden(tag, scale)

    def check_golden(self, tag, scale):
        feats = jnp.asarray(self.fx["features"])
        boxes = self.fx[f"boxes_{tag}"]
        # The scale is traced: one compilation for the three fixtures.
        f = self.variant(lambda f, b, s: ops.roi_pool(f, b, (5, 4), s))
        out, vjp = jax.vjp(lambda x: f(x, boxes, jnp.float32(scale)), feats)
        chex.assert_shape(out, (len(boxes), 5, 4, 2))
        # Max pooling copies values and the gradient adds cotangents: both bit-exact.
        np.testing.assert_array_equal(np.asarray(out), self.fx[f"out_{tag}"])
        (grad,) = vjp(jnp.asarray(self.fx[f"gout_{tag}"]))
        np.testing.assert_allclose(np.asarray(grad), self.fx[f"grad_{tag}"], rtol=1e-6, atol=1e-6)
        self.assertGreater(np.abs(self.fx[f"grad_{tag}"]).max(), 0.5)


class NumpyReferenceTest(chex.TestCase, parameterized.TestCase):
    def test_random_boxes_with_ties(self):
        f = jax.jit(lambda x, b, s: ops.roi_pool(x, b, (3, 4), s))
        for scale in (1.0, 0.5, 1 / 16):
            self.check_random(f, scale)

    def check_random(self, f, scale):
        rng = np.random.default_rng(1)
        feats = np.round(rng.standard_normal((11, 14, 3)) * 2).astype(np.float32)  # many ties
        boxes = random_boxes(rng, 40, -6 / scale, 16 / scale, 18 / scale)
        boxes[:8] = (np.round(boxes[:8] * scale * 2) / 2) / scale  # k + 0.5 after scaling
        out, vjp = jax.vjp(lambda x: f(x, boxes, jnp.float32(scale)), jnp.asarray(feats))
        ref, arg = np_roi_pool(feats, boxes, (3, 4), scale)
        np.testing.assert_array_equal(np.asarray(out), ref)
        # Gradient: every output's cotangent lands on its arg-max (first maximum).
        g = rng.standard_normal(ref.shape).astype(np.float32)
        (grad,) = vjp(jnp.asarray(g))
        expect = np.zeros(feats.shape, np.float64)
        for idx in np.ndindex(arg.shape):
            if arg[idx] >= 0:
                expect[arg[idx] // 14, arg[idx] % 14, idx[3]] += g[idx]
        np.testing.assert_allclose(np.asarray(grad), expect, rtol=1e-5, atol=1e-5)

    def test_vmap_over_batch(self):
        rng = np.random.default_rng(2)
        feats = rng.standard_normal((2, 9, 9, 2)).astype(np.float32)
        boxes = np.stack([random_boxes(rng, 7, -3, 10, 10) for _ in range(2)])
        out = jax.jit(jax.vmap(lambda f, b: ops.roi_pool(f, b, (2, 2), 1.0)))(feats, boxes)
        chex.assert_shape(out, (2, 7, 2, 2, 2))
        for i in range(2):
            np.testing.assert_array_equal(
                np.asarray(out[i]), np_roi_pool(feats[i], boxes[i], (2, 2), 1.0)[0]
            )

    def test_large_and_far_boxes_exact(self):
        # Bins of any size (here up to the whole map) use the same four table look-ups.
        rng = np.random.default_rng(3)
        feats = rng.standard_normal((13, 17, 2)).astype(np.float32)
        boxes = np.array(
            [[-500, -500, 500, 500], [-3e8, 2, 4, 3e8], [0, 0, 16, 12], [-40, -2, 60, 9]],
            np.float32,
        )
        out = ops.roi_pool(feats, boxes, (3, 2), 1.0)
        np.testing.assert_array_equal(np.asarray(out), np_roi_pool(feats, boxes, (3, 2), 1.0)[0])


class HandComputedTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_rounding_half_away_from_zero(self):
        feats = jnp.arange(10, dtype=jnp.float32).reshape(1, 10, 1)  # f[0, x] = x
        # x1 = 2.5 -> 3 (jnp.round would give 2), x2 = 4.5 -> 5: max over columns 3..5 = 5;
        # a single bin. x1 = -0.5 -> -1, x2 = 0.5 -> 1: columns -1..1 clipped -> max 1.
        boxes = jnp.array([[2.5, 0, 4.5, 0], [-0.5, 0, 0.5, 0], [2.5, 0, 2.5, 0]])
        out = self.variant(lambda f, b: ops.roi_pool(f, b, (1, 1), 1.0))(feats, boxes)
        np.testing.assert_array_equal(np.asarray(out[:, 0, 0, 0]), [5.0, 1.0, 3.0])
        # Two bins over columns 3..5 (width 3, bin 1.5): [3, 5) -> 4 and [4, 6) -> 5.
        out = ops.roi_pool(feats, boxes[:1], (1, 2), 1.0)
        np.testing.assert_array_equal(np.asarray(out[0, 0, :, 0]), [4.0, 5.0])

    def test_empty_bins_are_zero_and_get_no_gradient(self):
        feats = jnp.full((4, 4, 1), -3.0)
        # Fully outside: every bin clipped to nothing.
        out, vjp = jax.vjp(lambda f: ops.roi_pool(f, jnp.array([[10.0, 10, 12, 12]]), 2), feats)
        np.testing.assert_array_equal(np.asarray(out), 0.0)
        np.testing.assert_array_equal(np.asarray(vjp(jnp.ones_like(out))[0]), 0.0)
        # Partly outside: bins inside the map keep the (negative) max, the others are 0.
        out = ops.roi_pool(feats, jnp.array([[2.0, 2, 5, 5]]), 2)
        np.testing.assert_array_equal(np.asarray(out[0, :, :, 0]), [[-3.0, 0.0], [0.0, 0.0]])

    def test_exact_bin_edges_despite_xla_division(self):
        # roi 21 px, 7 bins: bin size must be exactly 3 (21 / 7 in XLA:CPU is 3.0000002,
        # which would make every bin 4 px wide and overlap its neighbour).
        self.assertEqual(float(jax.jit(lambda a: divide_by_int(a, 7))(jnp.float32(21))), 3.0)
        feats = jnp.arange(21, dtype=jnp.float32)[::-1].reshape(1, 21, 1)  # decreasing
        out = ops.roi_pool(feats, jnp.array([[0.0, 0, 20, 0]]), (1, 7), 1.0)
        np.testing.assert_array_equal(np.asarray(out[0, 0, :, 0]), [20, 17, 14, 11, 8, 5, 2])

    def test_compiles_once_per_shape(self):
        rng = np.random.default_rng(0)
        f = jax.jit(lambda x, b: ops.roi_pool(x, b, (2, 2), 0.5))
        for _ in range(3):
            f(rng.standard_normal((6, 7, 2)).astype(np.float32), random_boxes(rng, 5, 0, 9, 5))
        self.assertEqual(f._cache_size(), 1)


if __name__ == "__main__":
    absltest.main()
