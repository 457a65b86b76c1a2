"""Box coder: torchvision goldens, hand-computed deltas, clamping and round trips."""

import math
import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import parameterized

from jaxdet import ops

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


class GoldenTest(chex.TestCase):
    def setUp(self):
        super().setUp()
        self.fx = np.load(FIXTURES / "box_coder.npz")

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters("rpn", "roi")
    def test_encode_matches_torchvision(self, name):
        enc = self.variant(lambda g, p: ops.encode_boxes(g, p, WEIGHTS[name]))
        out = enc(self.fx["gt"], self.fx["proposals"])
        chex.assert_shape(out, self.fx["gt"].shape)
        chex.assert_type(out, jnp.float32)
        np.testing.assert_allclose(out, self.fx[f"encoded_{name}"], rtol=1e-5, atol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters("rpn", "roi")
    def test_decode_matches_torchvision(self, name):
        dec = self.variant(lambda d, p: ops.decode_boxes(d, p, WEIGHTS[name]))
        out = dec(self.fx[f"deltas_{name}"], self.fx["proposals"])
        expected = self.fx[f"decoded_{name}"]
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())

    def test_encode_matches_numpy_reference(self):
        for name, w in WEIGHTS.items():
            with self.subTest(name):
                out = ops.encode_boxes(self.fx["gt"], self.fx["proposals"], w)
                ref = np_encode(self.fx["gt"], self.fx["proposals"], w)
                np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


class HandComputedTest(chex.TestCase):
    anchor = np.array([[0, 0, 10, 20]], np.float32)  # centre (5, 10), 10 x 20

    @parameterized.parameters(
        ([5, 0, 15, 20], [0.5, 0.0, 0.0, 0.0]),
        ([0, 10, 10, 30], [0.0, 0.5, 0.0, 0.0]),
        ([-5, 0, 15, 20], [0.0, 0.0, math.log(2.0), 0.0]),
        ([2.5, 5, 7.5, 15], [0.0, 0.0, math.log(0.5), math.log(0.5)]),
        ([0, 0, 10, 20], [0.0, 0.0, 0.0, 0.0]),
    )
    def test_encode_unit_weights(self, box, expected):
        out = ops.encode_boxes(np.array([box], np.float32), self.anchor)
        np.testing.assert_allclose(out[0], expected, atol=1e-6)
        back = ops.decode_boxes(out, self.anchor)
        np.testing.assert_allclose(back[0], box, atol=1e-5)

    def test_weights_scale_deltas(self):
        box = np.array([[5, 10, 25, 50]], np.float32)
        unit = ops.encode_boxes(box, self.anchor)
        weighted = ops.encode_boxes(box, self.anchor, (10.0, 10.0, 5.0, 5.0))
        np.testing.assert_allclose(weighted, unit * np.array([10, 10, 5, 5]), rtol=1e-6)
        np.testing.assert_allclose(
            ops.decode_boxes(weighted, self.anchor, (10.0, 10.0, 5.0, 5.0)), box, atol=1e-4
        )

    def test_decode_clamps_scale_at_log_1000_over_16(self):
        deltas = np.array([[0, 0, 10.0, 10.0], [0, 0, -10.0, -10.0]], np.float32)
        out = ops.decode_boxes(deltas, np.repeat(self.anchor, 2, axis=0))
        widths, heights = out[:, 2] - out[:, 0], out[:, 3] - out[:, 1]
        # Upper clamp only: 1000/16 times the anchor; no lower clamp.
        # (the tiny box's x2 - x1 cancels near its centre, hence the absolute tolerance)
        np.testing.assert_allclose(widths, [10 * 62.5, 10 * math.exp(-10)], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(heights, [20 * 62.5, 20 * math.exp(-10)], rtol=1e-5, atol=2e-6)
        np.testing.assert_allclose(out[:, 0] + widths / 2, [5, 5], rtol=1e-6)
        self.assertAlmostEqual(ops.DEFAULT_SCALE_CLIP, math.log(1000 / 16))

    def test_custom_clip(self):
        out = ops.decode_boxes(np.array([[0, 0, 3.0, 0.5]], np.float32), self.anchor, clip=1.0)
        np.testing.assert_allclose(out[0, 2] - out[0, 0], 10 * math.e, rtol=1e-6)
        np.testing.assert_allclose(out[0, 3] - out[0, 1], 20 * math.exp(0.5), rtol=1e-6)


class TransformTest(chex.TestCase):
    def _boxes(self, seed, shape):
        rng = np.random.default_rng(seed)
        xy = rng.uniform(-50, 500, shape + (2,))
        wh = rng.uniform(2, 300, shape + (2,))
        return np.concatenate([xy, xy + wh], -1).astype(np.float32)

    @chex.variants(with_jit=True, without_jit=True)
    def test_round_trip(self):
        boxes, anchors = self._boxes(0, (64,)), self._boxes(1, (64,))
        for w in WEIGHTS.values():
            d = self.variant(lambda b, a, w=w: ops.encode_boxes(b, a, w))(boxes, anchors)
            back = self.variant(lambda d, a, w=w: ops.decode_boxes(d, a, w))(d, anchors)
            np.testing.assert_allclose(back, boxes, rtol=1e-5, atol=1e-3)

    def test_per_class_deltas_broadcast(self):
        anchors = self._boxes(2, (5,))
        deltas = np.random.default_rng(3).normal(0, 0.5, (5, 3, 4)).astype(np.float32)
        out = ops.decode_boxes(deltas, anchors[:, None, :], (10.0, 10.0, 5.0, 5.0))
        chex.assert_shape(out, (5, 3, 4))
        for k in range(3):
            np.testing.assert_allclose(
                out[:, k], ops.decode_boxes(deltas[:, k], anchors, (10.0, 10.0, 5.0, 5.0))
            )

    def test_vmap_over_batch(self):
        boxes, anchors = self._boxes(4, (2, 16)), self._boxes(5, (2, 16))
        out = jax.vmap(ops.encode_boxes)(boxes, anchors)
        chex.assert_shape(out, (2, 16, 4))
        for i in range(2):
            np.testing.assert_allclose(
                out[i], np_encode(boxes[i], anchors[i], (1, 1, 1, 1)), rtol=1e-5, atol=1e-5
            )

    def test_compiles_once_per_shape(self):
        traces = []

        @jax.jit
        def f(d, a):
            traces.append(1)
            return ops.decode_boxes(d, a, (10.0, 10.0, 5.0, 5.0))

        outs = [f(self._boxes(10 + i, (8,)) / 100, self._boxes(20 + i, (8,))) for i in range(3)]
        self.assertEqual(len(traces), 1)
        self.assertFalse(np.allclose(outs[0], outs[1]))
