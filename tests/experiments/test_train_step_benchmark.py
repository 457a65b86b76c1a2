"""experiments/benchmarks/train_step.py runs on a tiny config and writes its table (the script
reaches into the detector's public methods, so a refactor that breaks it fails here)."""

from __future__ import annotations

import sys

from tests.helpers import load_script


def test_writes_the_three_program_table(tmp_path, monkeypatch):
    module = load_script("experiments/benchmarks/train_step.py", "train_step_benchmark")
    out = tmp_path / "table.md"
    argv = ["train_step.py", "--config=configs/faster_rcnn_shapes.py:runlocal",
            "--batch=8", "--steps=1", f"--out={out}"]  # one image per test device
    monkeypatch.setattr(sys, "argv", argv)
    module.main()
    text = out.read_text()
    for row in ("| backbone", "| + RPN", "| full train step"):
        assert row in text
    assert "Breakdown of the full step" in text
