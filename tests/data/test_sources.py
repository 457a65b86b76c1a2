"""config.data.source: the tasks read VOC / segmentation folders written here, end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxdet.data import pipeline, sources
from jaxdet.tasks import detection, segmentation
from jaxdet.train import loop
from tests.data.test_segmentation_folder import _label, write_folder
from tests.data.test_voc import write_voc
from tests.helpers import load_config


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
@pytest.mark.parametrize("variant", ["colour", "unpool"])
def test_segmentation_folder_trains_two_steps_and_evaluates(tmp_path, variant):
    write_folder(tmp_path / "seg", n=4, splits={"train.txt": ["im0", "im1", "im2", "im3"],
                                                "val.txt": ["im1", "im3"]})
    config = load_config("segmentation_folder", f"{variant},runlocal")
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
    if variant == "unpool":  # 30 x 30: not a multiple of the encoder-decoder's 4, padded
        config.data.image_size = 30
        assert loop.train_and_evaluate(config, str(tmp_path / "work"))["num_pixels"] > 0
        return
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


def _coco_config(tmp_path, name: str, max_instances: int):
    """``name``'s runlocal config reading the COCO folder ``tmp_path/coco`` at 32 px."""
    config = load_config(name, "runlocal")
    config.data.source = "coco"
    config.data.path = str(tmp_path / "coco")
    config.data.data_dir = str(tmp_path / "tfds")
    config.data.image_size = 32
    config.data.max_instances = max_instances
    return config


def test_mask_rcnn_reads_a_coco_folder_with_crowds_kept_out_of_the_targets(tmp_path):
    from tests.data.test_coco import write_coco

    write_coco(tmp_path / "coco")
    config = _coco_config(tmp_path, "mask_rcnn_shapes", max_instances=4)
    config.data.mask_crop_size = 8
    assert detection.class_names(config) == ["person", "car", "dog"]
    a = detection.datasets(config)["train"][1]  # a.png: annotation 2 is a crowd
    np.testing.assert_array_equal(a["objects"]["id"], [1, 2, 3])
    out = detection.make_preprocess(config)(a)
    np.testing.assert_array_equal(out["gt_boxes"][:3],
                                  [[2, 3, 12, 8], [0, 0, 4, 4], [20, 20, 32, 32]])
    np.testing.assert_array_equal(out["gt_labels"][:3], [2, 0, 1])
    # the crowd is no training target, but is kept for the evaluation as iscrowd=1
    np.testing.assert_array_equal(out["gt_valid"], [True, False, True, False])
    np.testing.assert_array_equal(out["gt_iscrowd"], [False, True, False, False])
    assert out["gt_masks"].shape == (4, 8, 8)
    # each mask fills its own box: RoIAligned over the box, the crops are (nearly) all 255
    assert out["gt_masks"][0].min() >= 128 and out["gt_masks"][3:].max() == 0


def test_keypoint_rcnn_coco_reads_the_person_keypoints_files_alone(tmp_path):
    from tests.data.test_coco import write_coco

    write_coco(tmp_path / "coco")  # instances_* (3 classes) and person_keypoints_train2017
    config = load_config("keypoint_rcnn_coco", "runlocal")  # data.instances=False
    config.data.path = str(tmp_path / "coco")
    config.data.data_dir = str(tmp_path / "tfds")
    config.data.image_size = 32
    config.data.resize_short = config.data.resize_max = 0  # fitted into 32 x 32: as they are
    config.data.max_instances = 4
    config.model.keypoint.num_keypoints = 2  # the tiny folder's person has 2 named keypoints
    assert detection.class_names(config) == ["person"]
    splits = detection.datasets(config)
    assert list(splits) == ["train"] and len(splits["train"]) == 6  # no val keypoint file; flips
    b = splits["train"][0]  # b.png (COCO id 3, 24 x 32): its person only, no masks
    assert "mask" not in b["objects"]
    out = detection.make_preprocess(config)(b)
    np.testing.assert_array_equal(out["gt_boxes"][:1], [[1, 1, 6, 7]])
    np.testing.assert_array_equal(out["gt_labels"][:1], [0])
    np.testing.assert_array_equal(out["gt_valid"], [True, False, False, False])
    np.testing.assert_array_equal(out["gt_keypoints"][0], [[3.5, 4.5, 2], [0, 0, 0]])
    flipped = detection.make_preprocess(config)(splits["train"][3])  # b mirrored at width 32
    np.testing.assert_array_equal(flipped["gt_boxes"][:1], [[26, 1, 31, 7]])
    np.testing.assert_array_equal(flipped["gt_keypoints"][0], [[28.5, 4.5, 2], [0, 0, 0]])


CROWD_VAL = {  # one 32 x 32 image: a car and a crowd of cars (bottom-right quarter)
    "images": [{"id": 1, "file_name": "v.png", "height": 32, "width": 32}],
    "annotations": [
        {"id": 10, "image_id": 1, "category_id": 3, "bbox": [2, 2, 10, 10], "area": 100,
         "iscrowd": 0, "segmentation": [[2, 2, 12, 2, 12, 12, 2, 12]]},
        {"id": 11, "image_id": 1, "category_id": 3, "bbox": [16, 16, 16, 16], "area": 256,
         "iscrowd": 1,  # uncompressed RLE: rows 16-31 of columns 16-31
         "segmentation": {"size": [32, 32], "counts": [16 * 32 + 16] + [16, 16] * 15 + [16]}},
    ],
    "categories": [{"id": 3, "name": "car"}],
}


@pytest.mark.parametrize("with_masks,resize", [(False, False), (True, False), (True, True)])
def test_a_detection_on_a_crowd_region_is_no_false_positive(tmp_path, with_masks, resize):
    """COCO semantics end to end: a COCO folder -> detection task -> pycocotools. The crowd
    is not a training target; a detection inside it (IoU 1/16 with the crowd box, but
    intersection over the detection's area 1) is ignored, so the car found exactly gives
    AP 1 by hand; with the crowd row dropped that detection is a false positive ranked first:
    precision 1/2 at every recall, AP 0.5. With ``resize`` the image goes through the resize
    chain at half size (16 x 16 padded into 32 x 32) and is evaluated at its original size
    (the detections below are in original pixels, as ``predict`` gives them): same APs."""
    from tests.data.test_coco import write_coco

    train = {**CROWD_VAL, "annotations": CROWD_VAL["annotations"][:1]}
    write_coco(tmp_path / "coco", train=train, keypoints=None, val=CROWD_VAL)
    config = load_config("mask_rcnn_shapes" if with_masks else "faster_rcnn_shapes", "runlocal")
    config.data.source = "coco"
    config.data.path = str(tmp_path / "coco")
    config.data.data_dir = str(tmp_path / "tfds")
    config.data.image_size = 32
    config.data.max_instances = 3
    config.data.mask_crop_size = 8
    config.data.resize_short = 16 if resize else 0
    batch = next(pipeline.eval_batches(detection.datasets(config)["validation"],
                                       detection.make_preprocess(config), 1, 0, 1))
    np.testing.assert_array_equal(batch["image_hw"], [[16, 16] if resize else [32, 32]])
    np.testing.assert_array_equal(batch["orig_hw"], [[32, 32]])
    np.testing.assert_array_equal(batch["gt_boxes"][0, 0], [1, 1, 6, 6] if resize else
                                  [2, 2, 12, 12])
    np.testing.assert_array_equal(batch["gt_valid"], [[True, False, False]])
    np.testing.assert_array_equal(batch["gt_iscrowd"], [[False, True, False]])
    outputs = {"boxes": np.array([[[20, 20, 24, 24], [2, 2, 12, 12]]], np.float32),
               "scores": np.array([[0.9, 0.8]], np.float32), "classes": np.zeros((1, 2), int),
               "valid": np.ones((1, 2), bool), "recall_hit": np.zeros(1, int),
               "recall_total": np.ones(1, int)}
    if with_masks:  # each detection's mask fills its box
        outputs["masks"] = np.ones((1, 2, 28, 28), np.float32)
    # Masks: pasting a full 28 x 28 mask expands it by one cell each side (torchvision's
    # paste), so the car's mask covers pixels 1-12 of its box 2-12: IoU 100 / 144 = 0.69, a
    # hit at 4 of the 10 IoU thresholds (0.5-0.65): mask AP 0.4 by hand, 0.2 with the first
    # ranked detection a false positive. The other detection's 6 x 6 mask lies in the crowd.
    for crowd_kept, ap, mask_ap in ((True, 1.0, 0.4), (False, 0.5, 0.2)):
        evaluator = detection.host_evaluator(config)
        evaluator.add(batch if crowd_kept else {k: v for k, v in batch.items()
                                                 if k != "gt_iscrowd"}, outputs)
        results = evaluator.summarize()
        assert results["AP"] == pytest.approx(ap, abs=1e-9), (crowd_kept, results)
        if with_masks:
            assert results["mask_AP"] == pytest.approx(mask_ap, abs=1e-9), (crowd_kept, results)


def test_augmentation_flags_wire_the_seeded_chain(voc_config):
    """config.data flags -> training draws scale-jittered, cropped and padded with a validity
    region that the detection task reads as image_hw; evaluation fitted and padded; at most
    max_instances objects, the excess counted."""
    voc_config.data.pad_sizes = ((48, 64),)
    voc_config.data.scale_jitter = (0.5, 1.5)
    voc_config.data.photometric = 0.2
    voc_config.data.keep_difficult = True
    voc_config.data.max_instances = 1
    splits = detection.datasets(voc_config)
    train, val = splits["train"], splits["validation"]
    preprocess = detection.make_preprocess(voc_config)
    draws = [train.draw(0, p) for p in range(6)]
    for ex in draws:
        assert ex["image"].shape == (48, 64, 3) and len(ex["objects"]["label"]) <= 1
        out = preprocess(ex)
        np.testing.assert_array_equal(out["image_hw"], ex["image_hw"])
        assert (out["gt_boxes"][out["gt_valid"]][:, 2:] <= ex["image_hw"][::-1]).all()
    assert len({tuple(ex["image_hw"]) for ex in draws}) > 1  # jittered sizes
    np.testing.assert_array_equal(train.draw(0, 3)["image"], draws[3]["image"])
    # evaluation: b (16 x 32) fitted into 48 x 64 (x2: 32 x 64), box x2, padded below
    b = val[0]
    np.testing.assert_array_equal(b["image_hw"], [32, 64])
    np.testing.assert_allclose(b["objects"]["bbox"], [[4, 4, 60, 28]])
    limit = train.transform.limit
    assert limit.images_truncated >= 1 and "max_instances=1" in limit.report()


def test_results_files_are_in_the_datasets_own_ids_and_score_against_its_json(tmp_path):
    """A COCO folder with category ids 3 and 17 and validation image ids 8 and 7: the results
    file holds those ids (and file / category names), so pycocotools scores it against the
    user's own ``instances_val2017.json``: the exact boxes give AP 1."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from tests.data.test_coco import write_coco

    categories = [{"id": 17, "name": "cat"}, {"id": 3, "name": "car"}]
    val = {"images": [{"id": 8, "file_name": "p.png", "height": 32, "width": 32},
                      {"id": 7, "file_name": "q.png", "height": 32, "width": 32}],
           "annotations": [
               {"id": 1, "image_id": 8, "category_id": 17, "bbox": [2, 3, 10, 12], "area": 120,
                "iscrowd": 0, "segmentation": [[2, 3, 12, 3, 12, 15, 2, 15]]},
               {"id": 2, "image_id": 7, "category_id": 3, "bbox": [10, 10, 20, 8], "area": 160,
                "iscrowd": 0, "segmentation": [[10, 10, 30, 10, 30, 18, 10, 18]]}],
           "categories": categories}
    write_coco(tmp_path / "coco", train=val, keypoints=None, val=val)
    config = _coco_config(tmp_path, "faster_rcnn_shapes", max_instances=2)
    assert detection.class_names(config) == ["car", "cat"]  # labels 0, 1 by sorted COCO id
    batch = next(pipeline.eval_batches(detection.datasets(config)["validation"],
                                       detection.make_preprocess(config), 2, 0, 1))
    outputs = {"boxes": batch["gt_boxes"][:, :1].astype(np.float32),
               "scores": np.full((2, 1), 0.9, np.float32),
               "classes": batch["gt_labels"][:, :1], "valid": np.ones((2, 1), bool),
               "recall_hit": np.zeros(2, int), "recall_total": np.ones(2, int)}
    evaluator = detection.host_evaluator(config)
    evaluator.add(batch, outputs)
    path = evaluator.write(str(tmp_path))
    with open(path) as f:
        records = sorted(json.load(f), key=lambda r: r["image_id"])
    assert [(r["image_id"], r["category_id"], r["file_name"], r["category_name"])
            for r in records] == [(7, 3, "q.png", "car"), (8, 17, "p.png", "cat")]
    gt = COCO(str(tmp_path / "coco" / "annotations" / "instances_val2017.json"))
    scored = COCOeval(gt, gt.loadRes(path), "bbox")
    scored.evaluate()
    scored.accumulate()
    scored.summarize()
    assert scored.stats[0] == pytest.approx(1.0)


def test_group_by_aspect_ratio_pads_each_training_batch_to_its_images_bucket(tmp_path):
    import dataclasses

    from jaxdet.data import buckets, synthetic_voc
    from tests.tasks.test_detection_voc_learning import SMALL

    style = dataclasses.replace(SMALL, image_sides=(40, 96))  # landscape, portrait, square
    synthetic_voc.write_voc_folder(str(tmp_path / "voc"), style, num_train=24, num_val=4)
    config = load_config("faster_rcnn_voc", "runlocal")
    config.data.path = str(tmp_path / "voc")
    config.data.data_dir = str(tmp_path / "tfds")
    sizes = ((64, 96), (96, 64), (96, 96))
    config.data.pad_sizes, config.data.group_by_aspect_ratio = sizes, True
    config.data.random_flip, config.batch_size = True, 4
    train = detection.datasets(config)["train"]
    originals = [tuple(np.shape(train.source[i]["image"])[:2]) for i in range(len(train))]
    ds = pipeline.train_dataset(train, detection.make_preprocess(config), 4, seed=0,
                                process_index=0, process_count=1)
    seen, batches = set(), iter(ds)
    for _ in range(8):
        batch = next(batches)
        hw = batch["image"].shape[1:3]
        bucket = sizes.index(hw)
        seen.add(bucket)
        for i in batch["index"]:
            assert buckets.nearest_size(*originals[i], sizes) == bucket
    assert len(seen) >= 2
    cached = list((tmp_path / "tfds").rglob("train_image_sizes.npy"))
    assert len(cached) == 1 and np.load(cached[0]).shape == (len(train) // 2, 2)

    config.data.pad_sizes = ((96, 96),)
    with pytest.raises(ValueError, match="group_by_aspect_ratio=True needs two or more"):
        detection.datasets(config)
