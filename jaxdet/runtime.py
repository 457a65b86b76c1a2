"""Process-wide JAX settings shared by the command-line entry points."""

from __future__ import annotations

import os

import jax

DEFAULT_CACHE_DIR = os.path.join("~", ".cache", "jaxdet", "jax_compilation_cache")


def enable_compilation_cache(directory: str | None = None) -> str:
    """Turns on JAX's persistent compilation cache so reruns do not recompile.

    The directory is, in order: the argument, ``$JAXDET_COMPILATION_CACHE``, or
    ``~/.cache/jaxdet/jax_compilation_cache``. Returns the directory used.
    """
    directory = directory or os.environ.get("JAXDET_COMPILATION_CACHE") or DEFAULT_CACHE_DIR
    directory = os.path.abspath(os.path.expanduser(directory))
    os.makedirs(directory, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return directory
