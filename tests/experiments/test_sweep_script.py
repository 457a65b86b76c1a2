"""experiments/sweeps/sweep.py on a two-value grid of the tiny localisation config."""

import json
import subprocess
import sys

from tests.helpers import REPO


def test_two_value_sweep_writes_table_and_picks_best_by_metric(tmp_path, data_dir):
    cmd = [
        sys.executable, "experiments/sweeps/sweep.py", "--config=configs/localization.py:runlocal",
        f"--root={tmp_path}", "--param=loss.box_weight=0.5,2", "--",
        f"--config.data.data_dir={data_dir}", "--config.num_train_steps=3",
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    summary = json.load(open(tmp_path / "results.json"))
    assert summary["metric"] == "correct_and_iou50"
    names = [r["name"] for r in summary["rows"]]
    assert names == ["box_weight=0.5", "box_weight=2"]
    metrics = [r["metric"] for r in summary["rows"]]
    assert summary["best"] == names[metrics.index(max(metrics))]
    for row, weight in zip(summary["rows"], (0.5, 2.0), strict=True):
        val = row["val_loss"]
        assert abs(val["total"] - (val["class_ce"] + weight * val["box"])) < 1e-5
    table = (tmp_path / "results.md").read_text()
    assert "| box_weight |" in table and "**best**" in table
    # A second call reuses the finished runs (no retraining) and gives the same table.
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and (tmp_path / "results.md").read_text() == table


def test_bad_param_is_a_clear_error(tmp_path):
    cmd = [sys.executable, "experiments/sweeps/sweep.py", "--config=configs/localization.py",
           f"--root={tmp_path}", "--param=loss.box_weight"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "expected FIELD=V1,V2" in proc.stderr
