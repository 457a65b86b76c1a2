"""``python -m jaxdet.main`` on bad input: one line naming the field or file, a non-zero exit,
nothing written (config values, missing workdir, bad or empty data folders)."""

import os
import shutil

import pytest

from tests.data.test_voc import RECORDS, write_voc
from tests.helpers import corrupt_checkpoint, run_main


def _main(workdir, config, *args, devices: int = 1):
    return run_main(f"--config={config}", f"--workdir={workdir}", *args, devices=devices)


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


def _segmentation_run(tmp_path, data_dir, *args):
    return _main(tmp_path / "run", "configs/segmentation.py:runlocal",
                 f"--config.data.data_dir={data_dir}", *args)


def test_a_corrupt_newest_checkpoint_is_set_aside_trained_again_and_eval_names_its_step(
        tmp_path, trained_runlocal):
    trained, data_dir = trained_runlocal("segmentation")
    shutil.copytree(trained, tmp_path / "run")  # steps 3 and 6 saved
    corrupt_checkpoint(tmp_path / "run" / "checkpoints" / "6")
    rerun = _segmentation_run(tmp_path, data_dir)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "moved the unreadable checkpoint of step 6" in rerun.stderr
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["3", "6"]
    assert len(list((tmp_path / "run" / "unreadable_checkpoints").iterdir())) == 1
    evaluated = _segmentation_run(tmp_path, data_dir, "--mode=eval")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "step=6" in evaluated.stdout


def test_replaced_images_are_converted_again_and_evaluated_with_their_new_pixels(tmp_path):
    import numpy as np
    import PIL.Image

    from tests.data.test_segmentation_folder import write_folder

    write_folder(tmp_path / "seg", n=4, splits={"train.txt": ["im0", "im1", "im2", "im3"],
                                                "val.txt": ["im1", "im3"]})
    args = ["configs/segmentation_folder.py:colour,runlocal", f"--config.data.path={tmp_path}/seg",
            f"--config.data.data_dir={tmp_path}/tfds"]
    first = _main(tmp_path / "run", *args)
    assert first.returncode == 0, first.stderr[-3000:]
    picture = tmp_path / "run" / "predictions" / "0000.png"  # input | truth | prediction
    assert np.asarray(PIL.Image.open(picture))[:, :32].max() > 0
    for k in range(4):
        PIL.Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(
            tmp_path / "seg" / "images" / f"im{k}.png")
    after = _main(tmp_path / "run", *args, "--mode=predict")
    assert after.returncode == 0, after.stderr[-3000:]
    assert "converting again" in after.stderr
    assert np.asarray(PIL.Image.open(picture))[:, :32].max() == 0  # the new, black pixels


def test_coco_results_of_a_run_are_in_the_users_ids_and_score_the_same(tmp_path):
    """``mask_rcnn_coco.py:small`` (the small-budget recipe: contiguous labels) end to end on a
    COCO folder: its results JSON is in the folder's ids and pycocotools scores it the same."""
    import json

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from tests.data.test_coco import write_coco

    categories = [{"id": 17, "name": "cat"}, {"id": 3, "name": "car"}]
    images = [{"id": 8, "file_name": "p.png", "height": 48, "width": 64},
              {"id": 7, "file_name": "q.png", "height": 64, "width": 48}]
    anns = [{"id": 1, "image_id": 8, "category_id": 17, "bbox": [2, 3, 30, 20], "area": 600,
             "iscrowd": 0, "segmentation": [[2, 3, 32, 3, 32, 23, 2, 23]]},
            {"id": 2, "image_id": 7, "category_id": 3, "bbox": [10, 10, 20, 30], "area": 600,
             "iscrowd": 0, "segmentation": [[10, 10, 30, 10, 30, 40, 10, 40]]}]
    data = {"images": images, "annotations": anns, "categories": categories}
    write_coco(tmp_path / "coco", train=data, keypoints=None, val=data)
    result = _main(tmp_path / "run", "configs/mask_rcnn_coco.py:small,runlocal",
                   f"--config.data.path={tmp_path}/coco", f"--config.data.data_dir={tmp_path}/tfds",
                   "--config.num_prediction_images=0")
    assert result.returncode == 0, result.stderr[-3000:]
    path = tmp_path / "run" / "coco_results.json"
    records = json.loads(path.read_text())
    assert records and {r["image_id"] for r in records} <= {7, 8}
    assert {r["category_id"] for r in records} <= {3, 17}
    assert {r["file_name"] for r in records} <= {"p.png", "q.png"}
    gt = COCO(str(tmp_path / "coco" / "annotations" / "instances_val2017.json"))
    scored = COCOeval(gt, gt.loadRes(str(path)), "bbox")
    scored.evaluate()
    scored.accumulate()
    scored.summarize()
    internal = json.loads((tmp_path / "run" / "eval_results.json").read_text())
    assert scored.stats[0] == pytest.approx(internal["AP"], abs=1e-6)
    assert scored.stats[1] == pytest.approx(internal["AP50"], abs=1e-6)
    assert "mask_AP" in internal


@pytest.mark.parametrize("config", ["ssd_voc", "yolo_voc"])
def test_single_shot_voc_configs_train_and_evaluate_on_a_voc_folder(tmp_path, config):
    import json

    from jaxdet.data import synthetic_voc
    from tests.tasks.test_detection_voc_learning import SMALL

    synthetic_voc.write_voc_folder(str(tmp_path / "voc"), SMALL, num_train=8, num_val=4)
    result = _main(tmp_path / "run", f"configs/{config}.py:runlocal",
                   f"--config.data.path={tmp_path}/voc", f"--config.data.data_dir={tmp_path}/tfds",
                   "--config.num_prediction_images=0")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text()
            .splitlines()]
    evaluated = [r for r in rows if "eval/AP" in r]
    assert [r["step"] for r in evaluated] == [4] and evaluated[0]["eval/num_images"] == 4

