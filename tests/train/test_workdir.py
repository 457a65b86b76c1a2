"""jaxdet.train.workdir: a workdir is one run; a rerun with another config is refused."""

import json

import ml_collections
import pytest

from jaxdet.train import workdir as workdir_lib
from tests.helpers import run_main


def test_differences_ignore_resumable_fields_and_name_the_others():
    saved = {"num_train_steps": 6, "model": {"width": 8, "level_widths": [4, 8]},
             "data": {"data_dir": "/a", "image_size": 32}}
    current = {"num_train_steps": 9, "model": {"width": 8, "level_widths": [8, 16]},
               "data": {"data_dir": "/b", "image_size": 64}, "sweep": {"box_weight": []},
               "loss": {"new_weight": 2.0}, "optimizer": {"learning_rate": 0.1},
               "seed": 1}
    assert workdir_lib.differences(saved, current) == [
        ("data.image_size", 32, 64), ("model.level_widths", [4, 8], [8, 16]),
        ("seed", "(absent)", 1)]
    assert workdir_lib.differences(saved, saved) == []
    # legacy and off-valued one-sided keys, inference options, schedule: resumable
    old = {"variant": "fpn", "model": {"postprocess": {"score_thresh": 0.05},
                                       "keypoint": {"flip_test": False}},
           "optimizer": {"name": "adam", "learning_rate": 1.0, "grad_clip_norm": 0.0}}
    new = {"model": {"postprocess": {"score_thresh": 0.5}, "keypoint": {"flip_test": True},
                     "frozen_stages": 0},
           "optimizer": {"name": "adam", "learning_rate": 0.1, "grad_clip_norm": 10.0},
           "sweep_strategy": "unroll"}
    # clipping on/off changes the optimizer state's structure: not resumable
    assert workdir_lib.differences(old, new) == [("optimizer.grad_clip_norm", 0.0, 10.0)]


def _fake_run(tmp_path, config):
    (tmp_path / "checkpoints" / "3").mkdir(parents=True)
    (tmp_path / "config.json").write_text(json.dumps(workdir_lib.config_as_json(config)))


def test_check_same_run_refuses_only_a_workdir_with_checkpoints(tmp_path):
    config = ml_collections.ConfigDict({"model": {"width": 8}, "num_train_steps": 4})
    workdir_lib.check_same_run(config, str(tmp_path / "new"))  # nothing there: fine
    (tmp_path / "config.json").write_text(json.dumps({"model": {"width": 4}}))
    workdir_lib.check_same_run(config, str(tmp_path))  # a config but no checkpoint: fine
    _fake_run(tmp_path, config)
    workdir_lib.check_same_run(config, str(tmp_path))
    config.num_train_steps = 10
    workdir_lib.check_same_run(config, str(tmp_path))  # more steps: resumable
    config.model.width = 16
    with pytest.raises(workdir_lib.WorkdirMismatchError, match=r"\(model\.width: 8 -> 16\); only"):
        workdir_lib.check_same_run(config, str(tmp_path))
    (tmp_path / "config.json").write_text('{"model": {"wid')  # cut short by a crash
    with pytest.raises(workdir_lib.WorkdirMismatchError, match="cannot be read"):
        workdir_lib.check_same_run(config, str(tmp_path))


def _main(workdir, data_dir, *overrides, mode="train"):
    return run_main("--config=configs/segmentation.py:runlocal", f"--workdir={workdir}",
                    f"--config.data.data_dir={data_dir}", f"--mode={mode}", *overrides,
                    devices=None)


def _snapshot(workdir):
    files = sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*") if p.is_file())
    return files, (workdir / "config.json").read_bytes(), (workdir / "metrics.jsonl").read_bytes()


def test_rerun_with_another_model_is_refused_before_touching_the_workdir(tmp_path, data_dir):
    workdir = tmp_path / "run"
    first = _main(workdir, data_dir)
    assert first.returncode == 0, first.stderr[-3000:]
    before = _snapshot(workdir)
    for mode in ("train", "eval", "predict"):
        changed = _main(workdir, data_dir, "--config.model.level_widths=(8,16,32)",
                        "--config.num_train_steps=9", mode=mode)
        assert changed.returncode == 2, changed.stderr[-3000:]
        message = changed.stderr.strip().splitlines()[-1]
        assert message.startswith(f"jaxdet: error: {workdir} holds a run trained with another")
        assert "model.level_widths: [4, 8, 16] -> [8, 16, 32]" in message
        assert "Traceback" not in changed.stderr
        assert _snapshot(workdir) == before
    again = _main(workdir, data_dir)  # the finished run rerun: evaluated again, not twice
    assert again.returncode == 0, again.stderr[-3000:]
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "eval/mean_iou" in r] == [6]
    resumed = _main(workdir, data_dir, "--config.num_train_steps=8")  # more steps: resumes
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    steps = [json.loads(line)["step"] for line in (workdir / "metrics.jsonl").read_text()
             .splitlines() if "train/loss" in line]
    assert steps == sorted(set(steps)) and max(steps) == 8
