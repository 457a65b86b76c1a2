"""jaxdet.export: the deserialized program alone gives exactly what ``--mode=predict --images``
writes (a detector with masks, segmentation), also loaded in a fresh process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest

from jaxdet import export, predict
from tests.helpers import REPO, load_config


def _photo(path, hw, seed):
    PIL.Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*hw, 3), np.uint8)).save(
        path)


@pytest.mark.parametrize("name", ["mask_rcnn_shapes", "segmentation"])
def test_exported_program_gives_what_predict_writes(tmp_path, trained_runlocal, name):
    trained, data_dir = trained_runlocal(name)
    workdir = str(tmp_path / "run")
    shutil.copytree(trained, workdir)
    config = load_config(name, "runlocal")
    config.data.data_dir = data_dir
    config.progress_bar = False
    config.eval_batch_size = 8  # a multiple of the test's 8 CPU devices
    os.makedirs(tmp_path / "photos")
    _photo(tmp_path / "photos" / "a.png", (360, 480), 0)
    _photo(tmp_path / "photos" / "b.png", (50, 30), 1)
    predict.predict_images(config, workdir, str(tmp_path / "photos"), str(tmp_path / "out"))
    meta = export.export_model(config, workdir, str(tmp_path / "exported"))
    assert "cpu" in meta["platforms"]
    predictor = export.load(str(tmp_path / "exported"))
    images = [np.asarray(PIL.Image.open(tmp_path / "photos" / f)) for f in ("a.png", "b.png")]
    got = predictor.predict(images)
    if name == "segmentation":
        for stem, labels in zip("ab", got, strict=True):
            written = np.asarray(PIL.Image.open(tmp_path / "out" / f"{stem}.png"))
            np.testing.assert_array_equal(labels, written)
        return
    written = json.loads((tmp_path / "out" / "predictions.json").read_text())
    for file_name, records in zip(("a.png", "b.png"), got, strict=True):
        expected = [{k: v for k, v in r.items() if k != "file_name"} for r in written
                    if r["file_name"] == file_name]
        assert len(records) == len(expected)
        for r, e in zip(records, expected, strict=True):
            assert r["segmentation"] == e["segmentation"]
            assert (r["category_id"], r["category_name"]) == (e["category_id"],
                                                              e["category_name"])
            np.testing.assert_allclose(r["bbox"] + [r["score"]], e["bbox"] + [e["score"]],
                                       rtol=1e-5, atol=1e-4)
    # A fresh process: only jaxdet.export.load and the files; the same records.
    photo = str(tmp_path / "photos" / "a.png")
    code = (f"import json, numpy as np, PIL.Image; from jaxdet.export import load; "
            f"p = load({str(tmp_path / 'exported')!r}); "
            f"print(json.dumps(p(np.asarray(PIL.Image.open({photo!r})))))")
    fresh = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                           text=True, timeout=300)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    again = json.loads(fresh.stdout.strip().splitlines()[-1])
    assert again == json.loads(json.dumps(got[0]))
