"""config.data.source: the tasks read VOC / segmentation folders written here, end to end."""

from __future__ import annotations

import numpy as np
import pytest

from jaxdet.data import sources
from jaxdet.tasks import detection, segmentation
from jaxdet.train import loop
from tests.conftest import load_config
from tests.data.test_segmentation_folder import _label, write_folder
from tests.data.test_voc import write_voc


@pytest.fixture
def voc_config(tmp_path):
    records = {  # 32 x 32 and 16 x 32 images; one difficult object
        "a": ([("dog", (1, 2, 10, 20), False, False), ("cat", (5, 5, 32, 32), True, False)],
              (32, 32)),
        "b": ([("cat", (3, 3, 30, 14), False, True)], (16, 32)),
    }
    write_voc(tmp_path / "voc", records, {"train.txt": ["a", "b"], "val.txt": ["b"]})
    config = load_config("faster_rcnn_voc", "runlocal")
    config.data.path = str(tmp_path / "voc")
    config.data.data_dir = str(tmp_path / "tfds")
    config.data.image_size = 64
    return config


def test_detection_task_reads_a_voc_folder_fitted_and_without_difficult(voc_config):
    assert detection.class_names(voc_config) == ["cat", "dog"]
    train = detection.datasets(voc_config)["train"]
    a, b = train[0], train[1]
    assert a["image"].shape == b["image"].shape == (64, 64, 3)
    np.testing.assert_allclose(a["objects"]["bbox"], [[0, 2, 20, 40]])  # x2: 32 -> 64
    np.testing.assert_array_equal(a["objects"]["label"], [1])  # the difficult cat is gone
    np.testing.assert_allclose(b["objects"]["bbox"], [[4, 4, 60, 28]])  # 16x32 -> 32x64
    np.testing.assert_array_equal(b["image"][32:], 0)  # padding below the fitted image
    out = detection.make_preprocess(voc_config)(b)
    np.testing.assert_allclose(out["gt_boxes"][:2], [[4, 4, 60, 28], [0, 0, 0, 0]])
    np.testing.assert_array_equal(out["gt_valid"][:2], [True, False])
    voc_config.data.keep_difficult = True
    assert len(detection.datasets(voc_config)["train"][0]["objects"]["label"]) == 2


def test_unknown_source_and_missing_path_are_refused(voc_config):
    voc_config.data.source = "kitti"
    with pytest.raises(ValueError, match="config.data.source='kitti'"):
        detection.datasets(voc_config)
    voc_config.data.source = "voc"
    voc_config.data.path = ""
    with pytest.raises(ValueError, match="needs --config.data.path"):
        detection.class_names(voc_config)


@pytest.mark.slow
def test_segmentation_folder_trains_two_steps_and_evaluates(tmp_path):
    write_folder(tmp_path / "seg", n=4, splits={"train.txt": ["im0", "im1", "im2", "im3"],
                                                "val.txt": ["im1", "im3"]})
    config = load_config("segmentation_folder", "colour,runlocal")
    config.data.path = str(tmp_path / "seg")
    config.data.data_dir = str(tmp_path / "tfds")
    config.batch_size = 8
    config.eval_batch_size = 8
    config.num_prediction_images = 0
    config.checkpoint_every_steps = 100  # one (final) save
    config.progress_bar = False
    assert segmentation.class_names(config) == ["background", "cat", "dog"]
    val = sources.segmentation_datasets(config)["validation"]
    np.testing.assert_array_equal(val[1]["segmentation"][..., 0], _label(3))
    results = loop.train_and_evaluate(config, str(tmp_path / "work"))
    ignored = int(np.sum(_label(1) == 255) + np.sum(_label(3) == 255))
    assert results["num_pixels"] == 2 * 32 * 32 - ignored
    assert 0.0 <= results["mean_iou"] <= 1.0


def test_random_flip_doubles_the_training_split_only(voc_config):
    voc_config.data.random_flip = True
    splits = detection.datasets(voc_config)
    train, val = splits["train"], splits["validation"]
    assert len(train) == 4 and len(val) == 1
    np.testing.assert_allclose(train[2]["objects"]["bbox"], [[64 - 20, 2, 64 - 0, 40]])
    np.testing.assert_array_equal(train[2]["image"], train[0]["image"][:, ::-1])
    # b (16 x 32) is flipped at its own width 32, then fitted: x 2..30 -> 2..30 (centred box)
    np.testing.assert_allclose(train[3]["objects"]["bbox"], [[4, 4, 60, 28]])
    assert train[3]["image"].shape == (64, 64, 3)
    np.testing.assert_array_equal(train[3]["image"][32:], 0)


def test_mask_rcnn_reads_a_coco_folder_without_crowds(tmp_path):
    from tests.data.test_coco import write_coco

    write_coco(tmp_path / "coco")
    config = load_config("mask_rcnn_shapes", "runlocal")
    config.data.source = "coco"
    config.data.path = str(tmp_path / "coco")
    config.data.data_dir = str(tmp_path / "tfds")
    config.data.image_size = 32
    config.data.max_instances = 4
    config.data.mask_crop_size = 8
    assert detection.class_names(config) == ["person", "car", "dog"]
    a = detection.datasets(config)["train"][1]  # a.png: the crowd (annotation 2) is dropped
    np.testing.assert_array_equal(a["objects"]["id"], [1, 3])
    out = detection.make_preprocess(config)(a)
    np.testing.assert_array_equal(out["gt_boxes"][:2], [[2, 3, 12, 8], [20, 20, 32, 32]])
    np.testing.assert_array_equal(out["gt_labels"][:2], [2, 1])
    np.testing.assert_array_equal(out["gt_valid"], [True, True, False, False])
    assert out["gt_masks"].shape == (4, 8, 8)
    # each mask fills its own box: RoIAligned over the box, the crops are (nearly) all 255
    assert out["gt_masks"][0].min() >= 128 and out["gt_masks"][2:].max() == 0
