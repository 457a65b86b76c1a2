"""Test-wide setup: 8 simulated CPU devices and the persistent compilation cache.

Both must be set before jax is imported anywhere, which is why they live here.
"""

import os
import pathlib

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
_REPO = pathlib.Path(__file__).resolve().parents[1]
os.environ.setdefault("JAXDET_COMPILATION_CACHE", str(_REPO / ".jax_cache"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402

jax.config.update("jax_compilation_cache_dir", os.environ["JAXDET_COMPILATION_CACHE"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

import importlib.util  # noqa: E402

import pytest  # noqa: E402


def load_config(name: str, arg: str | None = None):
    """``configs/<name>.py``'s ``get_config(arg)``, as the launcher loads it."""
    spec = importlib.util.spec_from_file_location(f"_cfg_{name}", _REPO / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
    """One TFDS data dir for the whole session: each tiny dataset is built once."""
    return str(tmp_path_factory.mktemp("tensorflow_datasets"))
