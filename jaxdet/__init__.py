"""jaxdet: dense prediction in JAX/Flax with static shapes end to end."""

import os as _os

import jax as _jax

__version__ = "0.1.0"

# Measured on jax/jaxlib 0.10.2, XLA CPU: with the default partitionable threefry PRNG every
# jit'd call site of jax.random (each parameter initialiser, each sampler) takes 4-7 s to
# compile; with it off, 0.3-0.5 s. jaxdet draws random numbers inside shard_map bodies on
# per-device shapes and initialises replicated params, so sharding-invariant bits are not
# needed. Set JAX_THREEFRY_PARTITIONABLE=1 to keep JAX's default.
if "JAX_THREEFRY_PARTITIONABLE" not in _os.environ:
    _jax.config.update("jax_threefry_partitionable", False)
