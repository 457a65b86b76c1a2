"""jaxdet.models.conv: SameConv has flax.linen.Conv(padding="SAME")'s and BlockConvTranspose
flax.linen.ConvTranspose(kernel = stride)'s parameter names, shapes, initial values, outputs
and gradients; the compute dtype as theirs."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet.models.conv import BlockConvTranspose, SameConv, SubPixelConvTranspose
from tests.helpers import assert_same_layer


@pytest.mark.parametrize(("kernel_size", "use_bias"), [((3, 3), True), ((1, 1), True),
                                                        ((3, 3), False)])
def test_same_parameters_outputs_and_gradients_as_flax_conv(kernel_size, use_bias):
    x = jax.random.normal(jax.random.key(1), (2, 9, 7, 5))
    ours = SameConv(6, kernel_size, use_bias=use_bias)
    flax_conv = nn.Conv(6, kernel_size, padding="SAME", use_bias=use_bias)
    assert_same_layer(ours, flax_conv, x)
    v = ours.init(jax.random.key(0), x)
    half = SameConv(6, kernel_size, use_bias=use_bias, dtype=jnp.bfloat16).apply(v, x)
    assert half.dtype == jnp.bfloat16


@pytest.mark.parametrize("stride", [2, 3])
def test_block_conv_transpose_equals_flax_conv_transpose_with_its_gradients(stride):
    x = jax.random.normal(jax.random.key(1), (3, 5, 6, 7))
    ref = nn.ConvTranspose(4, (stride, stride), strides=(stride, stride), padding="VALID",
                           kernel_init=nn.initializers.variance_scaling(2.0, "fan_out", "normal"))
    block = BlockConvTranspose(4, stride, kernel_init=ref.kernel_init)
    assert_same_layer(block, ref, x)
    v = block.init(jax.random.key(0), x)
    half = BlockConvTranspose(4, stride, dtype=jnp.bfloat16).apply(v, x)
    assert half.dtype == jnp.bfloat16 and half.shape == (3, 5 * stride, 6 * stride, 4)


def test_sub_pixel_conv_transpose_equals_flax_conv_transpose_with_gradients():
    """Same parameters, same outputs and gradients as the input-dilated transpose conv it
    replaces (non-square map, bias, a non-linear loss so every tap's gradient differs)."""
    x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 5, 6, 7)), jnp.float32)
    ref = nn.ConvTranspose(4, (4, 4), strides=(2, 2), padding=((2, 2), (2, 2)))
    sub = SubPixelConvTranspose(4)
    v = sub.init(jax.random.key(0), x)
    v = {"params": {**v["params"], "bias": jnp.arange(4.0) - 1.5}}
    assert_same_layer(sub, ref, x, v)
    half = SubPixelConvTranspose(4, dtype=jnp.bfloat16).apply(v, x)
    assert half.dtype == jnp.bfloat16 and half.shape == (3, 10, 12, 4)
