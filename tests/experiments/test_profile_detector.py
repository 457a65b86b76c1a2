"""experiments/benchmarks/profile_detector.py: its HLO-metadata and trace parsing, on a small
jitted function with named scopes (the detector run itself is a benchmark, not a test)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tests.helpers import load_script


def _module():
    return load_script("experiments/benchmarks/profile_detector.py", "profile_detector")


def _model(x, w):
    with jax.named_scope("backbone"):
        h = jnp.tanh(x @ w)
    with jax.named_scope("head"):
        return jnp.sort(h, axis=-1).sum()


def test_trace_times_are_attributed_to_the_named_scopes(tmp_path):
    module = _module()
    f = jax.jit(_model)
    x, w = jnp.ones((64, 64)), jnp.ones((64, 64)) * 0.01
    scopes = module.op_scopes(f.lower(x, w).compile().as_text())
    assert {s.split("/")[0] for s in scopes.values()} >= {"backbone", "head"}
    assert not any(s.startswith("jit(") for s in scopes.values())
    f(x, w).block_until_ready()
    with jax.profiler.trace(str(tmp_path)):
        f(x, w).block_until_ready()
    times = module.op_times(str(tmp_path), "jit__model")
    assert times and all(us >= 0 for us in times.values())
    assert any(scopes.get(op, "").startswith("head") for op in times)
