"""jaxdet.ops.conv.conv2d_same: lax.conv_general_dilated's outputs and both gradients (the kernel
gradient by matmul on CPU, Winograd for wide 3x3 kernels), odd and even kernels and maps, float32
and bfloat16, under jit and vmap."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet.ops.conv import (
    WINOGRAD_MIN_CHANNELS,
    WINOGRAD_MIN_PIXELS,
    conv2d_same,
    winograd_conv3x3,
)


def _reference(x, kernel):
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.mark.parametrize("kernel_size", [(1, 1), (3, 3), (2, 2), (1, 3)])
def test_outputs_and_gradients_equal_the_convolution(kernel_size):
    x = jax.random.normal(jax.random.key(0), (2, 7, 6, 5))
    kernel = jax.random.normal(jax.random.key(1), (*kernel_size, 5, 4))
    loss = lambda conv: lambda x, k: jnp.sum(jnp.sin(conv(x, k)))  # noqa: E731
    np.testing.assert_allclose(jax.jit(conv2d_same)(x, kernel), _reference(x, kernel),
                               rtol=1e-5, atol=1e-5)
    got = jax.jit(jax.grad(loss(conv2d_same), (0, 1)))(x, kernel)
    want = jax.grad(loss(_reference), (0, 1))(x, kernel)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


def test_bfloat16_and_vmap():
    x = jax.random.normal(jax.random.key(0), (3, 2, 5, 5, 4))
    kernel = jax.random.normal(jax.random.key(1), (3, 3, 4, 6))
    grads = jax.vmap(jax.grad(lambda x, k: jnp.sum(conv2d_same(x, k) ** 2), 1),
                     in_axes=(0, None))(x, kernel)
    want = jax.vmap(jax.grad(lambda x, k: jnp.sum(_reference(x, k) ** 2), 1),
                    in_axes=(0, None))(x, kernel)
    np.testing.assert_allclose(grads, want, rtol=1e-4, atol=1e-3)
    half = jax.grad(lambda k: jnp.sum(conv2d_same(x[0].astype(jnp.bfloat16), k)))(
        kernel.astype(jnp.bfloat16))
    assert half.dtype == jnp.bfloat16 and half.shape == kernel.shape


@pytest.mark.parametrize("hw", [(6, 8), (7, 5), (1, 1), (2, 3)])
def test_winograd_equals_the_convolution_with_its_gradients(hw):
    x = jax.random.normal(jax.random.key(0), (2, *hw, 5))
    kernel = jax.random.normal(jax.random.key(1), (3, 3, 5, 4))
    loss = lambda conv: lambda x, k: jnp.sum(jnp.sin(conv(x, k)))  # noqa: E731
    out = jax.jit(winograd_conv3x3)(x, kernel)
    chex.assert_shape(out, (2, *hw, 4))
    np.testing.assert_allclose(out, _reference(x, kernel), rtol=1e-5, atol=1e-5)
    got = jax.jit(jax.grad(loss(winograd_conv3x3), (0, 1)))(x, kernel)
    want = jax.grad(loss(_reference), (0, 1))(x, kernel)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("channels, side, winograd", [
    (WINOGRAD_MIN_CHANNELS, 12, True), (WINOGRAD_MIN_CHANNELS // 2, 12, False),
    (WINOGRAD_MIN_CHANNELS, 11, False)])
def test_wide_3x3_kernels_on_large_maps_go_through_winograd_on_cpu(channels, side, winograd):
    assert 11 * 11 < WINOGRAD_MIN_PIXELS <= 12 * 12
    x = jax.random.normal(jax.random.key(0), (1, side, side, channels))
    kernel = jax.random.normal(jax.random.key(1), (3, 3, channels, channels)) * 0.05
    step = jax.jit(jax.value_and_grad(lambda x, k: jnp.sum(conv2d_same(x, k) ** 2), (0, 1)))
    hlo = step.lower(x, kernel).compile().as_text()
    assert ("convolution(" not in hlo) == winograd
    (value, grads) = step(x, kernel)
    want_value, want_grads = jax.value_and_grad(
        lambda x, k: jnp.sum(_reference(x, k) ** 2), (0, 1))(x, kernel)
    np.testing.assert_allclose(value, want_value, rtol=1e-5)
    for g, w in zip(grads, want_grads, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(w))))
