"""jaxdet.host_memory (``JAXDET_KEEP_HOST_MEMORY=1``, applied by ``import jaxdet``): a jitted
program's temporaries are reused across calls instead of being faulted in afresh; checked in
fresh processes with and without it."""

import os
import subprocess
import sys

import pytest

from jaxdet import host_memory
from tests.helpers import REPO
from tests.xla_env import xla_flags

# One program whose 64 MiB intermediate (16 Mi float32) cannot be fused away: XLA:CPU allocates
# it with malloc on every call. Prints the fewest minor page faults of calls 4-8.
_PROGRAM = """
import resource
import jaxdet
import jax, jax.numpy as jnp
f = jax.jit(lambda x: jnp.sum(jax.lax.optimization_barrier(x * 2.0)[::-1] * x))
x = jnp.ones((1 << 24,), jnp.float32)
faults = []
for _ in range(8):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    f(x).block_until_ready()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(min(faults[3:]))
"""


def _fewest_faults(keep: bool) -> int:
    env = {k: v for k, v in os.environ.items() if k != host_memory.OPT_IN_VARIABLE}
    env.update(XLA_FLAGS=xla_flags(1), JAX_PLATFORMS="cpu",
               **({host_memory.OPT_IN_VARIABLE: "1"} if keep else {}))
    out = subprocess.run([sys.executable, "-c", _PROGRAM], cwd=REPO, capture_output=True,
                         text=True, timeout=300, check=True, env=env)
    return int(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_host_memory_is_reused_across_calls():
    # 64 MiB in 4 KiB pages: 16,384 faults on every call by default; reused memory needs none.
    assert _fewest_faults(keep=False) > 10_000
    assert _fewest_faults(keep=True) < 1_000


def test_without_opting_in_the_heap_is_left_alone(monkeypatch):
    monkeypatch.delenv(host_memory.OPT_IN_VARIABLE, raising=False)
    assert not host_memory.keep_freed_host_memory()
