"""jaxdet.train.compile_guard: counts compilations, warns or fails on a recompile."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet.train import compile_guard


def _double():
    return compile_guard.count_compilations(lambda x: 2 * x, jax.jit)


def test_counted_step_counts_one_compilation_per_input_signature():
    f = _double()
    assert compile_guard.compilations(f) == 0
    np.testing.assert_array_equal(f(jnp.ones(3)), [2, 2, 2])
    f(jnp.zeros(3))
    assert compile_guard.compilations(f) == 1
    f(jnp.ones(4))
    assert compile_guard.compilations(f) == 2
    f(jnp.ones(4, jnp.int32))  # a new dtype is a new program
    assert compile_guard.compilations(f) == 3
    assert compile_guard.compilations(print) == 0


def test_counted_step_keeps_donation_and_shard_map():
    from jaxdet.train import step as step_lib

    mesh = step_lib.make_mesh(jax.devices()[:1])
    step = step_lib.shard_map_step(lambda s, b: s + jax.lax.psum(b.sum(), "batch"), mesh)
    out = step(jnp.float32(1.0), jnp.ones((4,)))
    assert float(out) == 5.0 and step.compilations == 1


def test_compiles_during_warm_up_are_allowed_then_fail():
    guard = compile_guard.CompilationGuard("fail", after_steps=2)
    f = _double()
    f(jnp.ones(3))
    assert guard.check_train(f, 1) == 1
    f(jnp.ones(4))  # a second shape inside the warm-up: allowed
    assert guard.check_train(f, 2) == 2
    f(jnp.ones(4))
    assert guard.check_train(f, 3) == 2
    f(jnp.ones(5))
    with pytest.raises(compile_guard.RecompilationError, match="train_step compiled again at "
                       "step 4 \\(3 compilations, 2 after warm-up\\)"):
        guard.check_train(f, 4)


def test_warn_policy_logs_each_new_compilation_once(caplog):
    guard = compile_guard.CompilationGuard("warn")
    g = _double()
    g(jnp.ones(2))
    guard.check("eval_step", g, 10)  # first call: its warm-up
    g(jnp.ones(2))
    with caplog.at_level(logging.WARNING, logger=compile_guard.__name__):
        guard.check("eval_step", g, 20)
        assert not caplog.records
        g(jnp.ones(7))
        guard.check("eval_step", g, 30)
        guard.check("eval_step", g, 40)
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
        "eval_step compiled again at step 30"]
    assert guard.counts == {"eval_step": 2}


def test_unknown_policy_is_a_clear_error():
    with pytest.raises(ValueError, match="recompile_policy='loud'"):
        compile_guard.CompilationGuard("loud")
