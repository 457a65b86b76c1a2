"""jaxdet.data.tfds_build: a dataset is generated once, under a lock, however many runs ask."""

import fcntl
import os
import subprocess
import sys
import threading

from jaxdet.data import scenes_tfds, tfds_build
from tests.helpers import REPO

TINY = dict(image_size=32, min_objects=1, max_objects=2, num_train=4, num_val=2, seed=3)


def _config():
    return scenes_tfds.ScenesConfig.create(**TINY, min_size=0, max_size=0, person_fraction=0.0)


def test_a_build_waits_for_the_run_holding_the_lock(tmp_path):
    data_dir = str(tmp_path)
    path = tfds_build.lock_path(data_dir, scenes_tfds.JaxdetScenes.name, _config().name)
    built = []
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run is building
        worker = threading.Thread(
            target=lambda: built.append(scenes_tfds.build_scenes(data_dir, **TINY)))
        worker.start()
        worker.join(timeout=3.0)
        assert worker.is_alive() and not built  # waiting, not building beside it
        assert not os.path.isdir(tmp_path / "jaxdet_scenes" / _config().name / "1.0.0")
    worker.join(timeout=120)
    assert built and built[0].is_prepared()
    assert len(built[0].as_data_source()["train"]) == 4


def test_two_processes_building_one_dataset_both_succeed(tmp_path):
    code = (f"from jaxdet.data import scenes_tfds; b = scenes_tfds.build_scenes({str(tmp_path)!r}"
            f", **{TINY!r}); print(len(b.as_data_source()['validation']))")
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    runs = [subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    outs = [run.communicate(timeout=300) for run in runs]
    for run, (out, err) in zip(runs, outs, strict=True):
        assert run.returncode == 0, err[-2000:]
        assert out.strip().splitlines()[-1] == "2"


def test_earlier_conversions_are_other_hashes_of_the_same_folder_only(tmp_path):
    root = tmp_path / "jaxdet_voc"
    for name in ("voc_0123456789", "voc_abcdef0123", "voc_x_abcdef0123", "img64_seed0"):
        (root / name).mkdir(parents=True)
    found = tfds_build.earlier_conversions(str(tmp_path), "jaxdet_voc", "voc_fedcba9876")
    assert sorted(os.path.basename(f) for f in found) == ["voc_0123456789", "voc_abcdef0123"]
    assert tfds_build.earlier_conversions(str(tmp_path), "jaxdet_voc", "img64_seed1") == []
