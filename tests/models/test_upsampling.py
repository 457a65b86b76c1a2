"""NumPy references for the unpooling ops and the lecture's "matrix view" of transpose conv."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet.models import upsampling
from tests import helpers

DN_1D = ("NWC", "WIO", "NWC")
DN_2D = ("NHWC", "HWIO", "NHWC")


def _np_max_pool_with_argmax(x, window, stride):
    b, h, w, c = x.shape
    ho, wo = (h - window) // stride + 1, (w - window) // stride + 1
    pooled = np.zeros((b, ho, wo, c), x.dtype)
    switches = np.zeros((b, ho, wo, c), np.int64)
    for n in range(b):
        for i in range(ho):
            for j in range(wo):
                for ch in range(c):
                    y0, x0 = i * stride, j * stride
                    win = x[n, y0 : y0 + window, x0 : x0 + window, ch]
                    k = int(np.argmax(win))  # row-major, first maximum wins
                    switches[n, i, j, ch] = k
                    pooled[n, i, j, ch] = win.reshape(-1)[k]
    return pooled, switches


def _np_max_unpool(values, switches, hw, window, stride):
    b, ho, wo, c = values.shape
    out = np.zeros((b, *hw, c), values.dtype)
    for n in range(b):
        for i in range(ho):
            for j in range(wo):
                for ch in range(c):
                    dy, dx = divmod(int(switches[n, i, j, ch]), window)
                    out[n, i * stride + dy, j * stride + dx, ch] += values[n, i, j, ch]
    return out


def _x(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


# --- max pooling with switches and max unpooling ---------------------------------------------


@helpers.with_and_without_jit
@pytest.mark.parametrize(
    "window, stride, hw",
    [(2, 2, (6, 8)), (2, 2, (7, 5)), (3, 2, (7, 9)), (3, 3, (9, 6))],
    ids=["w2s2_6x8", "w2s2_7x5", "w3s2_7x9", "w3s3_9x6"],
)
def test_max_pool_with_argmax_matches_numpy(variant, window, stride, hw):
    x = _x((2, *hw, 3))
    x[0, :2, :2, 0] = 1.5  # a tie: the first maximum (row-major) must win
    pool = variant(lambda a: upsampling.max_pool_with_argmax(a, window, stride))
    pooled, switches = pool(jnp.asarray(x))
    ref_pooled, ref_switches = _np_max_pool_with_argmax(x, window, stride)
    chex.assert_type(switches, jnp.int32)
    chex.assert_shape([pooled, switches], ref_pooled.shape)
    np.testing.assert_array_equal(np.asarray(switches), ref_switches)
    np.testing.assert_array_equal(np.asarray(pooled), ref_pooled)
    assert int(switches[0, 0, 0, 0]) == 0


@helpers.with_and_without_jit
@pytest.mark.parametrize(
    "window, stride, hw",
    [(2, 2, (6, 8)), (2, 2, (7, 5)), (3, 2, (7, 9))],
    ids=["w2s2_6x8", "w2s2_7x5", "w3s2_7x9"],
)
def test_max_unpool_matches_numpy(variant, window, stride, hw):
    x = _x((2, *hw, 3), seed=1)
    pooled, switches = upsampling.max_pool_with_argmax(jnp.asarray(x), window, stride)
    values = _x(pooled.shape, seed=2)  # decoder features, not the pooled values
    unpool = variant(
        lambda v, s: upsampling.max_unpool(v, s, hw, window=window, stride=stride)
    )
    out = unpool(jnp.asarray(values), switches)
    ref = _np_max_unpool(values, np.asarray(switches), hw, window, stride)
    chex.assert_shape(out, (2, *hw, 3))
    np.testing.assert_allclose(np.asarray(out), ref, rtol=0, atol=1e-6)
    # Exactly one non-zero per window when windows do not overlap.
    if window == stride:
        assert np.count_nonzero(np.asarray(out)) == values.size


def test_pool_unpool_round_trip_restores_maxima_and_zeros_elsewhere():
    x = np.abs(_x((1, 6, 6, 2), seed=3)) + 0.1
    pooled, switches = upsampling.max_pool_with_argmax(jnp.asarray(x))
    restored = np.asarray(upsampling.max_unpool(pooled, switches, (6, 6)))
    is_max = restored != 0
    np.testing.assert_array_equal(restored[is_max], x[is_max])
    assert is_max.sum() == 9 * 2
    # Each 2x2 window keeps its maximum only.
    blocks = restored.reshape(1, 3, 2, 3, 2, 2).max(axis=(2, 4))
    np.testing.assert_array_equal(blocks, np.asarray(pooled))
    again, again_switches = upsampling.max_pool_with_argmax(jnp.asarray(restored))
    np.testing.assert_array_equal(np.asarray(again), np.asarray(pooled))
    np.testing.assert_array_equal(np.asarray(again_switches), np.asarray(switches))


def test_max_pool_gradient_is_max_unpool():
    x = jnp.asarray(_x((2, 6, 8, 3), seed=4))
    w = jnp.asarray(_x((2, 3, 4, 3), seed=5))
    grad = jax.grad(lambda a: jnp.sum(upsampling.max_pool_with_argmax(a)[0] * w))(x)
    _, switches = upsampling.max_pool_with_argmax(x)
    np.testing.assert_allclose(grad, upsampling.max_unpool(w, switches, (6, 8)), atol=1e-6)


def test_max_unpool_rejects_mismatched_shape():
    pooled, switches = upsampling.max_pool_with_argmax(jnp.zeros((1, 6, 6, 1)))
    with pytest.raises(ValueError, match="does not pool"):
        upsampling.max_unpool(pooled, switches, (8, 8))


# --- fixed upsampling ------------------------------------------------------------------------


@helpers.with_and_without_jit
@pytest.mark.parametrize("f", [2, 3], ids=["x2", "x3"])
def test_bed_of_nails_upsample_matches_numpy(variant, f):
    x = _x((2, 3, 4, 5))
    out = np.asarray(variant(lambda a: upsampling.bed_of_nails_upsample(a, f))(x))
    ref = np.zeros((2, 3 * f, 4 * f, 5), np.float32)
    ref[:, ::f, ::f] = x
    np.testing.assert_array_equal(out, ref)


@helpers.with_and_without_jit
@pytest.mark.parametrize("f", [2, 3], ids=["x2", "x3"])
def test_nearest_upsample_matches_numpy(variant, f):
    x = _x((2, 3, 4, 5))
    out = np.asarray(variant(lambda a: upsampling.nearest_upsample(a, f))(x))
    np.testing.assert_array_equal(out, np.repeat(np.repeat(x, f, axis=1), f, axis=2))


def test_bilinear_upsample_matches_half_pixel_reference():
    x = _x((1, 4, 5, 2))

    def up1d(a, axis):  # x2 with half-pixel centres, edge clamped
        a = np.moveaxis(a, axis, 0)
        prev = np.concatenate([a[:1], a[:-1]])
        nxt = np.concatenate([a[1:], a[-1:]])
        out = np.stack([0.75 * a + 0.25 * prev, 0.75 * a + 0.25 * nxt], axis=1)
        return np.moveaxis(out.reshape(-1, *a.shape[1:]), 0, axis)

    ref = up1d(up1d(x, 1), 2)
    out = upsampling.bilinear_upsample(jnp.asarray(x), 2)
    np.testing.assert_allclose(np.asarray(out), ref, atol=1e-5)


def _grad_padding(n, k, s, p):
    """lax.conv_transpose padding that makes it the gradient of a conv (size n, pad p)."""
    return (k - 1 - p, k - 1 - p + (n + 2 * p - k) % s)


# --- the matrix view: a convolution is y = M x; a transpose convolution is y = M^T x -------
# (overlaps sum)


@pytest.mark.parametrize(
    "n, s, p", [(7, 2, 0), (8, 2, 1), (9, 1, 1)], ids=["n7s2p0", "n8s2p1", "n9s1p1"]
)
def test_conv_matrix_is_the_convolution(n, s, p):
    k = np.array([1.0, -2.0, 0.5], np.float32)
    x = _x((n,))
    m = upsampling.conv_matrix(k, n, s, p)
    y = jax.lax.conv_general_dilated(
        x[None, :, None], k[:, None, None], (s,), [(p, p)], dimension_numbers=DN_1D
    )[0, :, 0]
    np.testing.assert_allclose(m @ x, y, atol=1e-5)
    k2 = _x((3, 3), seed=7)
    x2 = _x((n, n + 1), seed=8)
    m2 = upsampling.conv_matrix(k2, (n, n + 1), s, p)
    y2 = jax.lax.conv_general_dilated(
        x2[None, :, :, None], k2[:, :, None, None], (s, s), [(p, p)] * 2,
        dimension_numbers=DN_2D,
    )[0, :, :, 0]
    np.testing.assert_allclose(m2 @ x2.reshape(-1), np.asarray(y2).reshape(-1), atol=1e-5)


@pytest.mark.parametrize("n, p", [(7, 0), (8, 1)], ids=["n7p0", "n8p1"])
def test_1d_transpose_conv_is_the_matrix_transpose(n, p):
    k, s = np.array([1.0, 2.0, 4.0], np.float32), 2  # asymmetric kernel, stride 2, size 3
    m = upsampling.conv_matrix(k, n, s, p)
    a = _x((m.shape[0],), seed=9)
    pad = _grad_padding(n, 3, s, p)
    y = jax.lax.conv_transpose(
        a[None, :, None], k[:, None, None], (s,), [pad], dimension_numbers=DN_1D,
        transpose_kernel=True,
    )[0, :, 0]
    np.testing.assert_allclose(np.asarray(y), m.T @ a, atol=1e-5)
    # Overlap summing, spelled out: with all-ones inputs an output pixel hit by two kernel
    # placements gets k[2] + k[0] = 5, one hit by a single placement gets k[1] = 2.
    ones = jax.lax.conv_transpose(
        np.ones((1, m.shape[0], 1), np.float32), k[:, None, None], (s,), [pad],
        dimension_numbers=DN_1D, transpose_kernel=True,
    )[0, :, 0]
    np.testing.assert_allclose(np.asarray(ones), m.T @ np.ones(m.shape[0]))
    assert set(np.round(np.asarray(ones)[1:-1], 5)) == {5.0, 2.0}


@pytest.mark.parametrize("n, p", [(7, 0), (8, 1)], ids=["n7p0", "n8p1"])
def test_2d_transpose_conv_is_the_matrix_transpose(n, p):
    k, s = _x((3, 3), seed=10), 2
    m = upsampling.conv_matrix(k, (n, n), s, p)
    ho = (n + 2 * p - 3) // s + 1
    a = _x((ho, ho), seed=11)
    pad = _grad_padding(n, 3, s, p)
    y = jax.lax.conv_transpose(
        a[None, :, :, None], k[:, :, None, None], (s, s), [pad, pad],
        dimension_numbers=DN_2D, transpose_kernel=True,
    )[0, :, :, 0]
    np.testing.assert_allclose(np.asarray(y).reshape(-1), m.T @ a.reshape(-1), atol=1e-5)
    # Flax's module with transpose_kernel=True is the same operator.
    layer = nn.ConvTranspose(1, (3, 3), strides=(s, s), padding=[pad, pad],
                             transpose_kernel=True, use_bias=False)
    yf = layer.apply({"params": {"kernel": k[:, :, None, None]}}, a[None, :, :, None])
    np.testing.assert_allclose(np.asarray(yf).reshape(-1), m.T @ a.reshape(-1), atol=1e-5)
    # The overlap pattern of stride 2, kernel 3: counts 1, 2 and 4 (the checkerboard).
    counts = (upsampling.conv_matrix(np.ones((3, 3)), (n, n), s, p) != 0).sum(axis=0)
    assert set(counts.reshape(n, n)[1:-1, 1:-1].ravel()) == {1, 2, 4}


def test_flax_default_transpose_kernel_false_is_not_the_transpose():
    n, s = 7, 2
    k = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [-1.0, 0.5, 4.0]], np.float32)
    a = _x((3, 3), seed=12)
    m = upsampling.conv_matrix(k, (n, n), s, 0)
    m_flipped = upsampling.conv_matrix(k[::-1, ::-1], (n, n), s, 0)
    layer = nn.ConvTranspose(1, (3, 3), strides=(s, s), padding="VALID", use_bias=False)
    assert not layer.transpose_kernel  # the default
    y = layer.apply({"params": {"kernel": k[:, :, None, None]}}, a[None, :, :, None])
    y = np.asarray(y).reshape(-1)
    assert np.abs(y - m.T @ a.reshape(-1)).max() > 1.0
    np.testing.assert_allclose(y, m_flipped.T @ a.reshape(-1), atol=1e-5)


@pytest.mark.parametrize("k", [2, 3, 4], ids=["k2", "k3", "k4"])
def test_transpose_conv_is_the_gradient_of_the_same_conv(k):
    x = _x((2, 4, 5, 3), seed=13)
    kernel = _x((k, k, 3, 6), seed=14)
    y = upsampling.transpose_conv(jnp.asarray(x), jnp.asarray(kernel), 2)
    chex.assert_shape(y, (2, 8, 10, 6))
    conv = lambda z: jax.lax.conv_general_dilated(  # [2, 8, 10, 6] -> [2, 4, 5, 3]
        z, jnp.swapaxes(kernel, 2, 3), (2, 2), "SAME", dimension_numbers=DN_2D
    )
    _, vjp = jax.vjp(conv, jnp.zeros((2, 8, 10, 6)))
    np.testing.assert_allclose(np.asarray(y), np.asarray(vjp(jnp.asarray(x))[0]), atol=1e-5)
    if k == 2:  # no overlap: single-channel result is M^T x with the 2x2 conv matrix
        m = upsampling.conv_matrix(kernel[:, :, 0, 0], (8, 10), 2, 0)
        y1 = upsampling.transpose_conv(jnp.asarray(x[:1, :, :, :1]), kernel[:, :, :1, :1])
        np.testing.assert_allclose(np.asarray(y1).reshape(-1), m.T @ x[0, :, :, 0].ravel(),
                                   atol=1e-5)
