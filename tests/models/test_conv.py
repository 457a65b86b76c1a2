"""jaxdet.models.conv.SameConv: flax.linen.Conv(padding="SAME")'s parameter names, shapes,
initial values, outputs and gradients; the compute dtype as nn.Conv's."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from jaxdet.models.conv import SameConv
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
