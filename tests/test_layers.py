"""The package's structure: import-linter's contracts (pyproject.toml), no private reaches,
the task contract of every task module, and short files."""

import ast
import os
import subprocess
import sys

import pytest

from jaxdet import core, tasks
from tests.helpers import REPO

PACKAGE = str(REPO / "jaxdet")
MAX_LINES = 500


def _modules() -> list[str]:
    return sorted(os.path.join(root, name) for root, _, names in os.walk(PACKAGE)
                  for name in names if name.endswith(".py"))


def test_import_linter_contracts_are_kept():
    run = subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import "
                          "lint_imports_command; sys.exit(lint_imports_command())"],
                         cwd=REPO, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout


def _private_reaches(path: str) -> list[str]:
    """``from jaxdet.x import _name`` and ``module._name`` of a jaxdet module in ``path``."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    jaxdet_aliases, out = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("jaxdet"):
            for alias in node.names:
                if alias.name.startswith("_"):
                    out.append(f"{path}:{node.lineno} imports {node.module}.{alias.name}")
                jaxdet_aliases.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            jaxdet_aliases.update(a.asname or a.name.split(".")[0] for a in node.names
                                  if a.name.startswith("jaxdet"))
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                and not node.attr.startswith("__") and isinstance(node.value, ast.Name)
                and node.value.id in jaxdet_aliases):
            out.append(f"{path}:{node.lineno} uses {node.value.id}.{node.attr}")
    return out


def test_no_module_uses_another_modules_private_names():
    reaches = [r for path in _modules() for r in _private_reaches(path)]
    assert not reaches, "\n".join(reaches)


def test_private_reach_finder_flags_both_forms(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("from jaxdet.ops.boxes import _hidden\nfrom jaxdet.data import scenes\n"
                    "scenes._secret(1)\nscenes.public(2)\n")
    found = _private_reaches(str(path))
    assert [f.split(":", 1)[1] for f in found] == [
        "1 imports jaxdet.ops.boxes._hidden", "3 uses scenes._secret"]


def test_library_files_stay_under_the_line_limit():
    long = {os.path.relpath(p, REPO): n for p in _modules()
            if (n := sum(1 for _ in open(p, encoding="utf-8"))) > MAX_LINES}
    assert not long, long


@pytest.mark.parametrize("name", ["segmentation", "localization", "pose", "detection"])
def test_every_task_module_provides_the_task_contract(name):
    task = tasks.get_task(name)
    assert isinstance(task, core.Task)
    expected = core.HostEvaluatedTask if task.EVALUATES_ON_HOST else core.DeviceEvaluatedTask
    assert isinstance(task, expected)
    assert isinstance(task.PRIMARY_METRIC, str)


def test_task_contract_rejects_a_module_missing_a_function():
    import types

    partial = types.SimpleNamespace(PRIMARY_METRIC="x", PRIMARY_METRIC_HIGHER_IS_BETTER=True,
                                    EVALUATES_ON_HOST=False, datasets=lambda c: {})
    assert not isinstance(partial, core.Task)


def test_the_runtime_never_imports_tensorflow_or_torch(tmp_path):
    """Training, evaluation and the dataset conversions run without TensorFlow and torch (only
    ``config.data.source="tfds_coco"`` needs TensorFlow, as the ``tfds_coco`` extra)."""
    code = f"""
import sys
import jaxdet.main, jaxdet.predict, jaxdet.train.loop
from jaxdet.data import voc
from tests.data.test_voc import RECORDS, write_voc
write_voc({str(tmp_path / "voc")!r}, RECORDS)
voc.build({str(tmp_path / "voc")!r}, {str(tmp_path / "tfds")!r})
print(sorted(m for m in ("tensorflow", "torch", "clu") if m in sys.modules))
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
