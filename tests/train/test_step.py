"""The pmap-body train/eval steps: device-count independence and shard_map == pmap."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdet import core
from jaxdet.train import state as state_lib
from jaxdet.train import step as step_lib


class TinyNet(nn.Module):
    bn_axis_name: str | None = None

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Conv(4, (3, 3))(x)
        x = nn.BatchNorm(use_running_average=not train, axis_name=self.bn_axis_name)(x)
        x = nn.relu(x)
        return nn.Conv(3, (1, 1))(x)


def _make_loss_fn(model):
    def loss_fn(params, batch_stats, batch, rng):
        del rng
        logits, updates = model.apply(
            {"params": params, "batch_stats": batch_stats},
            batch["image"], train=True, mutable=["batch_stats"],
        )
        labels = batch["label"]
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        valid = batch["mask"][:, None, None] * jnp.ones_like(ce)
        correct = (jnp.argmax(logits, -1) == labels) * valid
        return core.LossOutput(
            terms={"ce": (jnp.sum(ce * valid), jnp.sum(valid))},
            metrics={"accuracy": (jnp.sum(correct), jnp.sum(valid))},
            batch_stats=updates["batch_stats"],
        )

    return loss_fn


def _setup(num_devices):
    model = TinyNet(bn_axis_name=core.AXIS_NAME)
    init_model = TinyNet()
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.normal(size=(16, 8, 8, 2)).astype(np.float32),
        "label": rng.integers(0, 3, size=(16, 8, 8)).astype(np.int32),
        # The last 3 examples are padding: with 8 devices, device 6 is half padded, 7 fully.
        "mask": np.array([1] * 13 + [0] * 3, np.float32),
        "index": np.arange(16, dtype=np.int32),
    }
    variables = init_model.init(jax.random.key(0), batch["image"][:1], train=False)
    optimizer = optax.sgd(0.5, momentum=0.9)
    state = state_lib.create_train_state(variables, optimizer)
    body = step_lib.make_train_step_body(
        _make_loss_fn(model), optimizer, {"ce": 1.0}, jax.random.key(1)
    )
    mesh = step_lib.make_mesh(jax.devices()[:num_devices])
    return body, state, batch, mesh


def _run_shard_map(num_devices, steps=2):
    body, state, batch, mesh = _setup(num_devices)
    step = step_lib.shard_map_step(body, mesh)
    for _ in range(steps):
        state, metrics = step(state, batch)
    return state, metrics


def test_eight_devices_equal_one_device():
    assert jax.device_count() == 8
    s1, m1 = _run_shard_map(1)
    s8, m8 = _run_shard_map(8)
    for a, b in zip(jax.tree.leaves(s1), jax.tree.leaves(s8), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=0)
    for k in m1:
        np.testing.assert_allclose(m1[k], m8[k], atol=1e-5)
    assert int(s8.step) == 2


def test_step_changes_params_by_the_single_device_gradient():
    """Guards against the N×-too-large update: compare with a hand-written plain-JAX step."""
    body, state, batch, mesh = _setup(8)
    model = TinyNet()

    def plain_loss(params):
        logits, _ = model.apply(
            {"params": params, "batch_stats": state.batch_stats}, batch["image"], train=True,
            mutable=["batch_stats"],
        )
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
        valid = batch["mask"][:, None, None] * jnp.ones_like(ce)
        return jnp.sum(ce * valid) / jnp.sum(valid)

    grads = jax.grad(plain_loss)(state.params)
    expected = jax.tree.map(lambda p, g: p - 0.5 * g, state.params, grads)
    new_state, _ = step_lib.shard_map_step(body, mesh, donate=False)(state, batch)
    for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(new_state.params), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_shard_map_equals_pmap():
    body, state, batch, mesh = _setup(8)
    s_sm, m_sm = step_lib.shard_map_step(body, mesh, donate=False)(state, batch)
    pmapped = step_lib.pmap_step(body)
    per_device = jax.tree.map(lambda x: x.reshape(8, 2, *x.shape[1:]), batch)
    s_pm, m_pm = pmapped(step_lib.replicate(state, 8), per_device)
    for a, b in zip(jax.tree.leaves(s_sm), jax.tree.leaves(s_pm), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b)[0], atol=1e-6)
        np.testing.assert_allclose(np.asarray(b)[0], np.asarray(b)[-1], atol=0)
    for k in m_sm:
        np.testing.assert_allclose(m_sm[k], m_pm[k][0], atol=1e-6)


def test_nonfinite_loss_skips_update():
    body, state, batch, mesh = _setup(2)
    bad = dict(batch, image=batch["image"].copy())
    bad["image"][0, 0, 0, 0] = np.nan
    new_state, metrics = step_lib.shard_map_step(body, mesh, donate=False)(state, bad)
    assert float(metrics["nonfinite"]) == 1.0
    assert int(new_state.nonfinite_count) == 1
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(new_state.params), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("num_devices", [1, 8])
def test_eval_accumulates_over_devices(num_devices):
    body, state, batch, mesh = _setup(num_devices)

    def eval_fn(params, batch_stats, b):
        return {"count": jnp.sum(b["mask"]), "index_sum": jnp.sum(b["index"] * b["mask"])}

    ev = step_lib.shard_map_step(
        step_lib.make_eval_step_body(eval_fn), mesh, num_replicated=2, donate=False
    )
    acc = {"count": jnp.zeros(()), "index_sum": jnp.zeros(())}
    acc = ev(state, acc, batch)
    acc = ev(state, acc, batch)
    assert float(acc["count"]) == 26.0
    assert float(acc["index_sum"]) == 2 * sum(range(13))
