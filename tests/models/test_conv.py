"""jaxdet.models.conv.SameConv: flax.linen.Conv(padding="SAME")'s parameter names, shapes,
initial values, outputs and gradients; the compute dtype as nn.Conv's."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet.models.conv import SameConv


@pytest.mark.parametrize(("kernel_size", "use_bias"), [((3, 3), True), ((1, 1), True),
                                                        ((3, 3), False)])
def test_same_parameters_outputs_and_gradients_as_flax_conv(kernel_size, use_bias):
    x = jax.random.normal(jax.random.key(1), (2, 9, 7, 5))
    ours = SameConv(6, kernel_size, use_bias=use_bias)
    flax_conv = nn.Conv(6, kernel_size, padding="SAME", use_bias=use_bias)
    v = ours.init(jax.random.key(0), x)
    jax.tree.map(np.testing.assert_array_equal, v, flax_conv.init(jax.random.key(0), x))
    v = jax.tree.map(lambda a: a + 0.25, v)
    np.testing.assert_allclose(ours.apply(v, x), flax_conv.apply(v, x), rtol=1e-5, atol=1e-5)
    grads = [jax.grad(lambda v, x, m=m: jnp.sum(jnp.sin(m.apply(v, x))), (0, 1))(v, x)
             for m in (ours, flax_conv)]
    for got, want in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1]), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    half = SameConv(6, kernel_size, use_bias=use_bias, dtype=jnp.bfloat16).apply(v, x)
    assert half.dtype == jnp.bfloat16
