"""Test-wide setup: 8 simulated CPU devices, XLA flags for short compiles
(:mod:`tests.xla_env`) and the persistent compilation cache.

All must be set before jax is imported anywhere, which is why they live here.
"""

import os
import pathlib

from tests.xla_env import xla_flags

os.environ.setdefault("XLA_FLAGS", xla_flags(8))
os.environ.setdefault("JAX_PLATFORMS", "cpu")
_REPO = pathlib.Path(__file__).resolve().parents[1]
os.environ.setdefault("JAXDET_COMPILATION_CACHE", str(_REPO / ".jax_cache"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402

jax.config.update("jax_compilation_cache_dir", os.environ["JAXDET_COMPILATION_CACHE"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
    """One TFDS data dir for the whole session: each tiny dataset is built once."""
    return str(tmp_path_factory.mktemp("tensorflow_datasets"))


def _session_root(tmp_path_factory, worker_id: str) -> pathlib.Path:
    """A folder every xdist worker of this pytest session shares (not older sessions')."""
    base = tmp_path_factory.getbasetemp()
    return base if worker_id == "master" else base.parent


@pytest.fixture(scope="session")
def trained_runlocal(tmp_path_factory, worker_id):
    """``trained_runlocal(name) -> (workdir, data_dir)``: ``configs/<name>.py:runlocal`` trained
    once per test session by the command line on one CPU device (``helpers.run_main``), shared by
    every worker; callers read the workdir and must not write into it."""
    import filelock

    from tests import helpers

    root = _session_root(tmp_path_factory, worker_id) / "trained_runlocal"
    root.mkdir(exist_ok=True)

    def get(name: str) -> tuple[pathlib.Path, str]:
        workdir, shared_data = root / name, str(root / "tensorflow_datasets")
        with filelock.FileLock(str(root / f"{name}.lock")):
            if not (workdir / "DONE").exists():
                # no prediction picture: no caller reads it, and it is one compile more
                trained = helpers.run_main(f"--config=configs/{name}.py:runlocal",
                                           f"--workdir={workdir}",
                                           f"--config.data.data_dir={shared_data}",
                                           "--config.num_prediction_images=0")
                assert trained.returncode == 0, trained.stderr[-3000:]
                (workdir / "DONE").write_text("")
        return workdir, shared_data

    return get


# Scheduling hint for the two pytest-xdist workers. `--dist loadfile` (pyproject.toml) runs each
# module on one worker, as one unit: the units start in the order of this list, then the
# unlisted modules in collection order (`--no-loadscope-reorder`). The modules that take longest
# on a cold compilation cache start first, so that the many small modules at the end even out
# the two workers instead of one worker finishing a long module alone (with the default `load`
# scheduling the multi-process tests, collected last, ran last). Module totals measured cold on
# 2 workers, 2026-11-26 (loaded VM: ratios only): test_multiprocess 756 s, tasks/test_detection
# 728, test_sweep 449, test_faster_rcnn 350, test_loop 346, models/test_segmentation 254,
# test_sweep_script 225, test_convert 143; every other module <= 120. A stale or missing entry
# only changes the order.
LONGEST_MODULES_FIRST = (
    "tests/train/test_multiprocess.py",
    "tests/tasks/test_detection.py",
    "tests/tasks/test_detection_mask_rcnn.py",
    "tests/train/test_sweep.py",
    "tests/detection/test_faster_rcnn.py",
    "tests/train/test_loop.py",
    "tests/models/test_segmentation.py",
    "tests/experiments/test_sweep_script.py",
    "tests/test_convert.py",
    "tests/tasks/test_detection_voc_learning.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {path: i for i, path in enumerate(LONGEST_MODULES_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))
