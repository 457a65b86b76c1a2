"""Two processes on 127.0.0.1 (CPU collectives over gloo), 2 simulated devices each, against
one process with 4 devices on the same global batches: params, evaluation, checkpoints, and
a preemption notice that reaches only one of the two processes.

Each run is ``python -m jaxdet.main`` with ``--coordinator_address/--num_processes/
--process_id``, i.e. exactly what a pod launch runs on every host.
"""

import json
import pathlib
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from tests.helpers import REPO, load_config
from tests.train.test_loop import _restored_params
from tests.xla_env import xla_flags

_TIMEOUT = 600


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cmd(config: str, workdir, data_dir, overrides) -> list[str]:
    return [sys.executable, "-m", "jaxdet.main", f"--config={config}", f"--workdir={workdir}",
            f"--config.data.data_dir={data_dir}", "--config.progress_bar=False",
            "--config.optimizer.schedule=constant", *overrides]


def _env(devices: int) -> dict[str, str]:
    import os

    return {**os.environ, "JAX_PLATFORMS": "cpu",
            "XLA_FLAGS": xla_flags(devices)}


def _start(config, workdir, data_dir, overrides, processes: int) -> list[subprocess.Popen]:
    """``processes`` copies of the command (2 devices each), or one process with 4 devices."""
    if processes == 1:
        return [subprocess.Popen(_cmd(config, workdir, data_dir, overrides), cwd=REPO,
                                 env=_env(4), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True)]
    address = f"127.0.0.1:{_free_port()}"
    return [
        subprocess.Popen(
            _cmd(config, workdir, data_dir, overrides) + [
                f"--coordinator_address={address}", f"--num_processes={processes}",
                f"--process_id={i}"],
            cwd=REPO, env=_env(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(processes)
    ]


def _finish(procs) -> list[str]:
    outs = []
    for i, p in enumerate(procs):
        try:
            out, err = p.communicate(timeout=_TIMEOUT)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        assert p.returncode == 0, f"process {i}: {err[-4000:]}"
        outs.append(out)
    return outs


def _run(config, workdir, data_dir, overrides, processes: int) -> list[str]:
    return _finish(_start(config, workdir, data_dir, overrides, processes))


def _assert_same_params(config, workdir_a, workdir_b, atol=1e-5, rtol=1e-3):
    """Equal up to the float rounding of another all-reduce order, which Adam's division by
    the root of the second moment enlarges on weights with tiny gradients (a wrong batch split
    or a missed all-reduce moves weights by far more)."""
    a = _restored_params(config, str(workdir_a))
    b = _restored_params(config, str(workdir_b))
    assert int(a.step) == int(b.step)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, atol=atol, rtol=rtol)
    return int(a.step)


def _results(workdir) -> dict:
    return json.loads((pathlib.Path(workdir) / "eval_results.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("name, arg, metric, overrides", [
    ("segmentation", "runlocal", "mean_iou",
     ["--config.num_train_steps=4", "--config.checkpoint_every_steps=2",
      "--config.data.num_val=6"]),
    # process 0's prediction picture is checked on segmentation (above); the detector skips it
    ("faster_rcnn_shapes", "c4,runlocal", "AP50",
     ["--config.num_train_steps=3", "--config.checkpoint_every_steps=3",
      "--config.data.num_val=6", "--config.num_prediction_images=0"]),
])
def test_two_processes_equal_one_process(tmp_path, data_dir, name, arg, metric, overrides):
    config_path = f"configs/{name}.py:{arg}"
    # one process first: it builds the dataset both runs then read
    _run(config_path, tmp_path / "one", data_dir, overrides, processes=1)
    outs = _run(config_path, tmp_path / "two", data_dir, overrides, processes=2)
    if "--config.num_prediction_images=0" not in overrides:
        assert "prediction picture" in outs[0]
    config = load_config(name, arg)
    config.data.data_dir = data_dir
    config.data.num_val = 6
    _assert_same_params(config, tmp_path / "one", tmp_path / "two")
    one, two = _results(tmp_path / "one"), _results(tmp_path / "two")
    assert one["step"] == two["step"]
    np.testing.assert_allclose(two[metric], one[metric], atol=1e-6)
    if "num_images" in one:  # detection: every validation image exactly once
        assert one["num_images"] == two["num_images"] == 6
    # the input iterator state saved with the checkpoint is the global position
    # (one JSON, written by process 0: every process's iterator is at the same index)
    checkpoints = tmp_path / "two" / "checkpoints"
    last = max(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit())
    data_state = json.loads((checkpoints / str(last) / "data" / "metadata").read_text())
    assert data_state["train"] == {"next_index": one["step"]}


def _logged_step(workdir: pathlib.Path) -> int:
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return 0
    rows = [json.loads(line) for line in path.read_text().splitlines() if line]
    return max([r["step"] for r in rows if "train/loss" in r], default=0)


@pytest.mark.slow
def test_sigterm_to_one_process_stops_both_at_the_same_step(tmp_path, data_dir):
    config_path = "configs/segmentation.py:runlocal"
    workdir = tmp_path / "two"
    procs = _start(config_path, workdir, data_dir,
                   ["--config.num_train_steps=100000", "--config.log_every_steps=1",
                    "--config.checkpoint_every_steps=100000"], processes=2)
    deadline = time.monotonic() + _TIMEOUT
    while _logged_step(workdir) < 3:
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), (
            [p.communicate()[1][-3000:] for p in procs if p.poll() is not None])
        time.sleep(0.05)
    procs[1].send_signal(signal.SIGTERM)  # the notice reaches process 1 only
    outs = _finish(procs)
    steps = [int(out.split("checkpoint of step ")[1].split()[0]) for out in outs]
    assert steps[0] == steps[1] >= 3, outs  # both stopped, at the same step, and saved it
    final = steps[0] + 2
    _run(config_path, workdir, data_dir,
         [f"--config.num_train_steps={final}", "--config.checkpoint_every_steps=100000"],
         processes=2)
    _run(config_path, tmp_path / "one", data_dir,
         [f"--config.num_train_steps={final}", "--config.checkpoint_every_steps=100000"],
         processes=1)
    config = load_config("segmentation", "runlocal")
    config.data.data_dir = data_dir
    assert _assert_same_params(config, tmp_path / "one", workdir) == final
