"""Optimizers from config: hand-computed first updates, weight decay, clipping, bad names."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxdet.train import state as state_lib


def _config(**optimizer) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.num_train_steps = 10
    config.optimizer = ml_collections.ConfigDict(
        {"learning_rate": 0.1, "schedule": "constant", **optimizer})
    return config


def _two_updates(config, params, grads):
    tx = state_lib.make_optimizer(config)
    opt_state = tx.init(params)
    u1, opt_state = tx.update(grads, opt_state, params)
    u2, _ = tx.update(grads, opt_state, params)
    return np.asarray(u1), np.asarray(u2)


@pytest.mark.parametrize("optimizer, first, second", [
    # plain SGD: -lr * g
    (dict(name="sgd"), -0.1 * 2.0, -0.1 * 2.0),
    # L2 decay adds wd * p = 0.5 to the gradient: -lr * (g + wd p)
    (dict(name="sgd", weight_decay=0.25), -0.1 * 2.5, -0.1 * 2.5),
    # heavy ball (torch.optim.SGD): v1 = g', v2 = m v1 + g'; update -lr v
    (dict(name="momentum", nesterov=False, weight_decay=0.25), -0.25, -0.1 * (0.9 * 2.5 + 2.5)),
    # Nesterov: update -lr (g' + m v) with v1 = g'
    (dict(name="momentum", weight_decay=0.25), -0.1 * (2.5 + 0.9 * 2.5),
     -0.1 * (2.5 + 0.9 * (0.9 * 2.5 + 2.5))),
    # clipping to norm 1 happens before the decay term is added: g -> 1, then + 0.5
    (dict(name="sgd", weight_decay=0.25, grad_clip_norm=1.0), -0.1 * 1.5, -0.1 * 1.5),
])
def test_first_two_updates_by_hand(optimizer, first, second):
    u1, u2 = _two_updates(_config(**optimizer), jnp.array([2.0]), jnp.array([2.0]))
    np.testing.assert_allclose(u1, [first], rtol=1e-6)
    np.testing.assert_allclose(u2, [second], rtol=1e-6)


def test_adamw_decay_is_decoupled():
    # First Adam step is -lr * sign(g); AdamW subtracts lr * wd * p on top of it.
    u1, _ = _two_updates(_config(name="adamw", weight_decay=0.5), jnp.array([2.0]),
                         jnp.array([3.0]))
    np.testing.assert_allclose(u1, [-0.1 * (1.0 + 0.5 * 2.0)], rtol=1e-5)


@pytest.mark.parametrize("optimizer, message", [
    (dict(name="lamb"), "config.optimizer.name='lamb'"),
    (dict(name="sgd", weight_decay=-1.0), "weight_decay=-1.0"),
])
def test_bad_optimizer_fields_are_named(optimizer, message):
    with pytest.raises(ValueError, match=message):
        state_lib.make_optimizer(_config(**optimizer))


def test_frozen_resnet_parameters_get_no_update_not_even_weight_decay():
    config = _config(name="momentum", weight_decay=0.1)
    config.model = ml_collections.ConfigDict({"frozen_stages": 2})
    params = {"body": {"conv1": {"kernel": jnp.ones(3)},
                       "layer1_0": {"conv1": {"kernel": jnp.ones(3)}},
                       "layer2_0": {"conv1": {"kernel": jnp.ones(3)}}},
              "fpn": {"kernel": jnp.ones(2)}}
    grads = jax.tree.map(jnp.ones_like, params)
    tx = state_lib.make_optimizer(config)
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_array_equal(updates["body"]["conv1"]["kernel"], 0.0)
    np.testing.assert_array_equal(updates["body"]["layer1_0"]["conv1"]["kernel"], 0.0)
    # trained: -lr * (1 + m) * (g + wd p) for Nesterov's first step
    np.testing.assert_allclose(updates["body"]["layer2_0"]["conv1"]["kernel"], -0.1 * 1.9 * 1.1,
                               rtol=1e-6)
    np.testing.assert_allclose(updates["fpn"]["kernel"], -0.1 * 1.9 * 1.1, rtol=1e-6)
