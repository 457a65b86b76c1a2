"""model_apply: uint8 -> [0, 1] input, BatchNorm statistics updated in training only."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxdet.tasks.model_apply import apply_model, model_input


class _BNNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        return nn.BatchNorm(use_running_average=not train, momentum=0.5)(x)


def test_model_input_scales_uint8_to_unit_range():
    batch = {"image": jnp.asarray([[[[0, 128, 255]]]], jnp.uint8)}
    np.testing.assert_allclose(model_input(batch)[0, 0, 0], [0.0, 128 / 255, 1.0], rtol=1e-6)
    assert model_input(batch).dtype == jnp.float32


def test_batch_stats_change_in_training_only():
    model = _BNNet()
    x = jnp.arange(8.0).reshape(2, 2, 2, 1)
    variables = model.init(jax.random.key(0), x, train=False)
    params, stats = variables["params"], variables["batch_stats"]
    _, new_stats = apply_model(model, params, stats, x, train=True)
    np.testing.assert_allclose(new_stats["BatchNorm_0"]["mean"], [0.5 * 3.5], rtol=1e-6)
    out, same = apply_model(model, params, stats, x, train=False)
    assert same is stats
    np.testing.assert_allclose(out, x / np.sqrt(1 + 1e-5), rtol=1e-5)  # running mean 0, var 1
