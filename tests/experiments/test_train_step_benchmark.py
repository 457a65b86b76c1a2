"""experiments/benchmarks/train_step.py runs on a tiny config and writes its table (the script
reaches into the detector's public methods, so a refactor that breaks it fails here)."""

from __future__ import annotations

import importlib.util
import sys

from tests.helpers import REPO


def test_writes_the_three_program_table(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location(
        "train_step_benchmark", REPO / "experiments" / "benchmarks" / "train_step.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "table.md"
    argv = ["train_step.py", "--config=configs/faster_rcnn_shapes.py:runlocal",
            "--batch=8", "--steps=1", f"--out={out}"]  # one image per test device
    monkeypatch.setattr(sys, "argv", argv)
    module.main()
    text = out.read_text()
    for row in ("| backbone", "| + RPN", "| full train step"):
        assert row in text
    assert "Breakdown of the full step" in text
