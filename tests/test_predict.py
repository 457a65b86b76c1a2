"""``python -m jaxdet.main --mode=predict --images=... --output=...`` for every task: a run
trained by the command line predicts on photos of sizes it never saw (360 x 480 JPEG, grey PNG,
RGBA PNG); every output is at the photo's own size; an unreadable file is one line, or skipped.
Where the outputs land in the photo is checked by ``tests/tasks/test_on_images.py``."""

from __future__ import annotations

import json
import os

import numpy as np
import PIL.Image
import pytest
from pycocotools import mask as mask_utils

from tests.helpers import run_main

SIZES = {"photo.jpg": (360, 480), "grey.png": (50, 70), "rgba.png": (90, 40)}


def _photos(folder):
    rng = np.random.default_rng(0)
    os.makedirs(folder)
    for name, (h, w) in SIZES.items():
        channels = {"photo.jpg": (3,), "grey.png": (), "rgba.png": (4,)}[name]
        PIL.Image.fromarray(rng.integers(0, 256, (h, w, *channels), dtype=np.uint8)).save(
            folder / name)


@pytest.mark.parametrize("config", ["segmentation", "localization", "pose", "mask_rcnn_shapes"])
def test_predict_on_photos_of_any_size_through_the_command_line(tmp_path, trained_runlocal,
                                                               config):
    workdir, data_dir = trained_runlocal(config)
    common = [f"--config=configs/{config}.py:runlocal", f"--workdir={workdir}",
              f"--config.data.data_dir={data_dir}"]
    _photos(tmp_path / "photos")
    out = tmp_path / "out"
    result = run_main(*common, "--mode=predict", f"--images={tmp_path / 'photos'}",
                   f"--output={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"predicted 3 images into {out}" in result.stdout
    for name, (h, w) in SIZES.items():
        stem = os.path.splitext(name)[0]
        if config == "segmentation":
            labels = PIL.Image.open(out / f"{stem}.png")
            assert labels.mode == "P" and labels.size == (w, h)
            assert PIL.Image.open(out / f"{stem}_overlay.png").size == (w, h)
        else:
            assert PIL.Image.open(out / f"{stem}.png").size == (w, h)
    if config == "segmentation":
        classes = json.loads((out / "classes.json").read_text())
        assert classes[0]["index"] == 0 and len(classes[0]["color"]) == 3
        return
    records = json.loads((out / "predictions.json").read_text())
    assert {r["file_name"] for r in records} <= set(SIZES)
    for r in records:
        h, w = SIZES[r["file_name"]]
        assert {"category_id", "category_name"} <= set(r)
        if config == "pose":
            assert len(r["keypoints"]) == 17 * 3
            continue
        x, y, bw, bh = r["bbox"]
        assert -1e-3 <= x <= x + bw <= w + 1e-3 and -1e-3 <= y <= y + bh <= h + 1e-3
        if config == "mask_rcnn_shapes":
            assert mask_utils.decode(r["segmentation"]).shape == (h, w)
    if config in ("localization", "pose"):  # one record per photo
        assert sorted(r["file_name"] for r in records) == sorted(SIZES)


def test_an_unreadable_image_is_one_line_or_skipped(tmp_path, trained_runlocal):
    workdir, data_dir = trained_runlocal("localization")
    common = ["--config=configs/localization.py:runlocal", f"--workdir={workdir}",
              f"--config.data.data_dir={data_dir}"]
    _photos(tmp_path / "photos")
    (tmp_path / "photos" / "broken.jpg").write_bytes(b"not an image")
    args = [*common, "--mode=predict", f"--images={tmp_path / 'photos'}/*.jpg",
            f"--output={tmp_path / 'out'}"]
    stopped = run_main(*args)
    assert stopped.returncode == 2
    assert stopped.stderr.strip().splitlines()[-1].startswith(
        f"jaxdet: error: {tmp_path / 'photos' / 'broken.jpg'}: not a readable image")
    skipped = run_main(*args, "--skip_bad_images")
    assert skipped.returncode == 0, skipped.stderr[-3000:]
    assert "predicted 1 images" in skipped.stdout and "broken.jpg" in skipped.stdout
    records = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert [r["file_name"] for r in records] == ["photo.jpg"]
    missing = run_main(*common, "--mode=predict", f"--images={tmp_path / 'nothing'}",
                    f"--output={tmp_path / 'out2'}")
    assert missing.returncode == 2 and "no image files there" in missing.stderr
