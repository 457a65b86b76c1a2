"""``python -m jaxdet.main`` on bad input: one line naming the field or file, a non-zero exit,
nothing written (config values, missing workdir, bad or empty data folders)."""

import os
import subprocess
import sys

import pytest

from tests.data.test_voc import RECORDS, write_voc
from tests.helpers import REPO


def _main(workdir, config, *args, devices: int = 1):
    env = {k: v for k, v in os.environ.items() if k != "JAXDET_TRACEBACK"}
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    cmd = [sys.executable, "-m", "jaxdet.main", f"--config={config}", f"--workdir={workdir}",
           "--config.progress_bar=False", *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)


def _last_line(result) -> str:
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize(("override", "message"), [
    ("--config.num_train_steps=0", "config.num_train_steps=0: expected an integer >= 1"),
    ("--config.num_train_steps=-2", "config.num_train_steps=-2: expected an integer >= 1"),
    ("--config.batch_size=0", "config.batch_size=0: expected an integer >= 1"),
    ("--config.model.level_widths=(4.5,8,16)",
     "config.model.level_widths=(4.5, 8, 16): expected a tuple like the default (4, 8, 16)"),
    ("--config.model.level_widths=('a','b','c')", "config.model.level_widths=('a', 'b', 'c')"),
])
def test_bad_config_value_is_one_line_before_anything_is_written(tmp_path, override, message):
    result = _main(tmp_path / "run", "configs/segmentation.py:runlocal", override)
    assert result.returncode == 2
    assert message in _last_line(result)
    assert not (tmp_path / "run").exists()


def test_eval_batch_size_not_a_multiple_of_the_devices_names_that_field(tmp_path, data_dir):
    result = _main(tmp_path / "run", "configs/segmentation.py:runlocal",
                   f"--config.data.data_dir={data_dir}", "--config.eval_batch_size=3", devices=2)
    assert result.returncode == 2
    assert _last_line(result) == ("jaxdet: error: config.eval_batch_size=3 must be a positive "
                                  "multiple of the number of devices (2)")


@pytest.mark.parametrize("mode", ["eval", "predict"])
def test_eval_of_a_workdir_that_does_not_exist_fails_without_creating_it(tmp_path, data_dir,
                                                                          mode):
    result = _main(tmp_path / "nothing", "configs/segmentation.py:runlocal",
                   f"--config.data.data_dir={data_dir}", f"--mode={mode}")
    assert result.returncode == 2
    assert _last_line(result).startswith(f"jaxdet: error: no checkpoints in {tmp_path}/nothing")
    assert not (tmp_path / "nothing").exists()


@pytest.mark.parametrize("case", ["bad_box", "missing_image", "empty"])
def test_bad_or_empty_voc_folder_is_one_line_naming_the_file(tmp_path, case):
    root = tmp_path / "voc"
    write_voc(root, RECORDS if case != "empty" else {})
    if case == "bad_box":
        xml = root / "Annotations" / "000002.xml"
        xml.write_text(xml.read_text().replace(
            "</annotation>", "<object><name>cat</name><bndbox><xmin>9</xmin><ymin>1</ymin>"
            "<xmax>3</xmax><ymax>5</ymax></bndbox></object></annotation>"))
        expected = (f"jaxdet: error: {xml}: 000002 object 0 (cat): box xmin=9 ymin=1 xmax=3 "
                    "ymax=5 has xmax < xmin")
    elif case == "missing_image":
        os.remove(root / "JPEGImages" / "000003.png")
        expected = (f"jaxdet: error: {root}/Annotations/000003.xml: 000003: image file "
                    f"{root}/JPEGImages/000003.png (or 000003.{{jpg,jpeg,png,bmp}}) not found")
    else:
        expected = f"jaxdet: error: VOC annotation folder {root}/Annotations holds no .xml files"
    result = _main(tmp_path / "run", "configs/faster_rcnn_voc.py:runlocal",
                   f"--config.data.path={root}", f"--config.data.data_dir={tmp_path / 'tfds'}")
    assert result.returncode == 2
    assert _last_line(result).startswith(expected)
    assert not (tmp_path / "run" / "checkpoints").exists()
