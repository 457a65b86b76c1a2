"""Process-wide JAX settings shared by the command-line entry points."""

from __future__ import annotations

import os

import jax

DEFAULT_CACHE_DIR = os.path.join("~", ".cache", "jaxdet", "jax_compilation_cache")


def enable_compilation_cache(directory: str | None = None) -> str:
    """Turn on JAX's persistent compilation cache in ``directory``, else
    ``$JAXDET_COMPILATION_CACHE``, else ``~/.cache/jaxdet/jax_compilation_cache``; returns it.
    """
    directory = directory or os.environ.get("JAXDET_COMPILATION_CACHE") or DEFAULT_CACHE_DIR
    directory = os.path.abspath(os.path.expanduser(directory))
    os.makedirs(directory, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return directory


def initialize_distributed(
    coordinator_address: str = "", num_processes: int = 0, process_id: int = -1,
    auto: bool = False,
) -> bool:
    """Join a multi-process JAX job; returns whether one was joined. Call before any device use.

    ``coordinator_address`` (``host:port`` of process 0): explicit job of ``num_processes``, this
    one ``process_id`` (else ValueError); ``auto``: ``jax.distributed.initialize()`` detects it
    (Cloud TPU, SLURM, Open MPI); neither: single process. On CPU, collectives use gloo.
    """
    if not coordinator_address and not auto:
        return False
    platforms = os.environ.get("JAX_PLATFORMS", "") or str(jax.config.jax_platforms or "")
    if "cpu" in platforms.split(","):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if coordinator_address:
        if num_processes < 1 or not 0 <= process_id < num_processes:
            raise ValueError(
                f"--coordinator_address={coordinator_address} needs --num_processes >= 1 and "
                f"0 <= --process_id < --num_processes (got {num_processes}, {process_id})")
        jax.distributed.initialize(coordinator_address=coordinator_address,
                                   num_processes=num_processes, process_id=process_id)
    else:
        jax.distributed.initialize()
    return True
