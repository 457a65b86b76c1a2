"""Preemption and faults on one process: SIGTERM saves and stops, SIGKILL mid-save resumes
from the last finished checkpoint, a corrupt latest checkpoint falls back to the previous one.

The multi-process versions (SIGTERM to one of two processes) are in
``tests/train/test_multiprocess.py``.
"""

import json
import logging
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jaxdet.train import checkpointing, loop, preemption
from jaxdet.train import workdir as workdir_lib
from tests.helpers import REPO, corrupt_checkpoint
from tests.train.test_loop import _config, _restored_params

_MANY_STEPS = "--config.num_train_steps=100000"


def _popen(workdir, data_dir, *overrides):
    cmd = [
        sys.executable, "-m", "jaxdet.main", "--config=configs/segmentation.py:runlocal",
        f"--workdir={workdir}", f"--config.data.data_dir={data_dir}",
        "--config.optimizer.schedule=constant", "--config.progress_bar=False",
        "--config.log_every_steps=1", *overrides,
    ]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _wait_for_step(proc, workdir: pathlib.Path, step: int, timeout: float = 300) -> None:
    """Until the run has logged ``step`` (its metrics.jsonl is flushed every row)."""
    path = workdir / "metrics.jsonl"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"run ended early: {proc.communicate()[1][-3000:]}")
        if path.exists():
            rows = [json.loads(line) for line in path.read_text().splitlines() if line]
            if any(r["step"] >= step and "train/loss" in r for r in rows):
                return
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"no step {step} within {timeout} s")


def _checkpoint_steps(workdir: pathlib.Path) -> list[int]:
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def test_sigterm_saves_then_sigkill_mid_save_resumes_to_the_straight_run(tmp_path, data_dir):
    workdir = tmp_path / "run"
    # 1. SIGTERM (a preemption notice): the run saves the step it is at and exits cleanly.
    proc = _popen(workdir, data_dir, _MANY_STEPS, "--config.checkpoint_every_steps=100000")
    _wait_for_step(proc, workdir, 3)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert "preempted: saved the checkpoint of step" in out
    preempted_at = _checkpoint_steps(workdir)[-1]
    assert preempted_at >= 3 and f"step {preempted_at} " in out
    assert not (workdir / "eval_results.json").exists()  # stopped before evaluating
    # 2. Resumed, saving (asynchronously) every step, then SIGKILL: most likely mid-save.
    proc = _popen(workdir, data_dir, _MANY_STEPS, "--config.checkpoint_every_steps=1")
    _wait_for_step(proc, workdir, preempted_at + 4)
    proc.kill()
    proc.communicate(timeout=60)
    finished = _checkpoint_steps(workdir)  # asynchronous saves may lag the steps
    assert finished[-1] > preempted_at
    # 3. The same command resumes from the newest readable checkpoint and finishes.
    final = finished[-1] + 2
    proc = _popen(workdir, data_dir, f"--config.num_train_steps={final}",
                  "--config.checkpoint_every_steps=1")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert json.loads((workdir / "eval_results.json").read_text())["step"] == final
    # Same params as one uninterrupted run of `final` steps.
    straight = _config(data_dir, num_train_steps=final, checkpoint_every_steps=final)
    loop.train_and_evaluate(straight, str(tmp_path / "straight"))
    a = _restored_params(straight, str(tmp_path / "straight"))
    b = _restored_params(straight, str(workdir))
    assert int(a.step) == int(b.step) == final
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, atol=1e-6, rtol=0)


def test_corrupt_latest_checkpoint_falls_back_with_a_warning(tmp_path, data_dir, caplog):
    workdir = tmp_path / "run"
    config = _config(data_dir, num_train_steps=4, checkpoint_every_steps=2)
    loop.train_and_evaluate(config, str(workdir))
    assert _checkpoint_steps(workdir) == [2, 4]
    at_two = tmp_path / "two"
    shutil.copytree(workdir / "checkpoints" / "2", at_two)
    corrupt_checkpoint(workdir / "checkpoints" / "4")
    # an unfinished save that a killed process left behind is never listed
    os.makedirs(workdir / "checkpoints" / "6.orbax-checkpoint-tmp-1234567" / "state")
    with caplog.at_level(logging.WARNING, logger=checkpointing.__name__):
        state = _restored_params(config, str(workdir))
    assert int(state.step) == 2
    assert any("step 4" in r.getMessage() and "trying an older one" in r.getMessage()
               for r in caplog.records)
    # the params restored are step 2's, bit for bit (compare with a clean copy of step 2)
    clean = tmp_path / "clean"
    (clean / "checkpoints").mkdir(parents=True)
    shutil.copytree(at_two, clean / "checkpoints" / "2")
    expected = _restored_params(config, str(clean))
    for x, y in zip(jax.tree.leaves(expected), jax.tree.leaves(state), strict=True):
        np.testing.assert_array_equal(x, y)


def test_watch_turns_sigterm_into_a_flag_and_restores_the_handler():
    before = signal.getsignal(signal.SIGTERM)
    watch = preemption.PreemptionWatch()
    try:
        assert not watch.reached(1)
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.monotonic() + 5
        while not watch.reached(2) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert watch.reached(2)
    finally:
        watch.close()
    assert signal.getsignal(signal.SIGTERM) == before


def test_first_ctrl_c_is_a_flag_the_second_interrupts_and_handlers_come_back():
    before = signal.getsignal(signal.SIGINT)
    watch = preemption.PreemptionWatch()
    try:
        signal.raise_signal(signal.SIGINT)
        assert watch.reached(1)
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    finally:
        watch.close()
    assert signal.getsignal(signal.SIGINT) == before


def test_ctrl_c_saves_the_step_and_stops_cleanly(tmp_path, data_dir):
    workdir = tmp_path / "run"
    proc = _popen(workdir, data_dir, _MANY_STEPS, "--config.checkpoint_every_steps=1",
                  "--config.keep_checkpoints=1")  # old checkpoints deleted every step
    _wait_for_step(proc, workdir, 3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert "Ctrl-C: saving a checkpoint after this step" in err
    stopped_at = int(out.split("saved the checkpoint of step ")[1].split()[0])
    assert _checkpoint_steps(workdir) == [stopped_at]
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == [str(stopped_at)]


def test_watch_with_several_processes_asks_the_sync_point(tmp_path):
    asked = []
    watch = preemption.PreemptionWatch(sync_point=lambda s: asked.append(s) or s == 5,
                                       multiprocess=True)
    assert [watch.reached(s) for s in (4, 5)] == [False, True] and asked == [4, 5]
    with pytest.raises(ValueError, match="needs sync_point"):
        preemption.PreemptionWatch(multiprocess=True)
    # Orbax's wrapper answers False (no preemption) where JAX's service is not running.
    ckpt = checkpointing.Checkpointer(str(tmp_path / "c"), save_every=1)
    try:
        assert ckpt.reached_preemption(3) is False
    finally:
        ckpt.close()


def test_a_workdir_whose_checkpoints_are_all_unreadable_is_not_trained_over(tmp_path, data_dir):
    workdir = tmp_path / "run"
    config = _config(data_dir, num_train_steps=2, checkpoint_every_steps=2)
    loop.train_and_evaluate(config, str(workdir))
    steps = _checkpoint_steps(workdir)
    for step in steps:
        corrupt_checkpoint(workdir / "checkpoints" / str(step))
    rows = (workdir / "metrics.jsonl").read_text()
    with pytest.raises(workdir_lib.WorkdirMismatchError, match="no checkpoint in .* can be "
                       "restored"):
        loop.train_and_evaluate(config, str(workdir))
    assert (workdir / "metrics.jsonl").read_text() == rows
    assert _checkpoint_steps(workdir) == steps


def test_corrupt_latest_checkpoint_is_set_aside_and_that_step_trained_and_saved_again(
        tmp_path, data_dir):
    config = _config(data_dir, num_train_steps=4, checkpoint_every_steps=2)
    loop.train_and_evaluate(config, str(tmp_path / "straight"))
    workdir = tmp_path / "run"
    loop.train_and_evaluate(config, str(workdir))
    corrupt_checkpoint(workdir / "checkpoints" / "4")
    results = loop.train_and_evaluate(config, str(workdir))  # resumes from step 2
    assert results["step"] == 4
    assert _checkpoint_steps(workdir) == [2, 4]
    [aside] = list((workdir / checkpointing.UNREADABLE_DIR).iterdir())
    assert aside.name.startswith("4-")
    a = _restored_params(config, str(tmp_path / "straight"))
    b = _restored_params(config, str(workdir))  # step 4 is readable again: the retrained one
    assert int(b.step) == 4
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, atol=1e-6, rtol=0)
