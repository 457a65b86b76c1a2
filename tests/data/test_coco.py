"""COCO-format conversion: a tiny COCO folder written here (polygons, RLE, crowd, keypoints,
an image without objects), converted and read back exactly; each kind of bad record."""

from __future__ import annotations

import copy
import json
import os

import numpy as np
import PIL.Image
import pytest
from pycocotools import mask as mask_utils

from jaxdet.data import coco, local_tfds


def _image(k: int, hw) -> np.ndarray:
    h, w = hw
    return ((np.arange(h * w * 3).reshape(h, w, 3) * 3 + 17 * k) % 256).astype(np.uint8)


# A compressed-RLE mask (hand-made), stored as COCO stores it: counts as a string.
RLE_MASK = np.zeros((32, 32), np.uint8)
RLE_MASK[21:30, 22:31] = 1
RLE_COUNTS = mask_utils.encode(np.asfortranarray(RLE_MASK))["counts"].decode()

CATEGORIES = [{"id": 18, "name": "dog"}, {"id": 1, "name": "person"}, {"id": 3, "name": "car"}]
TRAIN = {
    "images": [{"id": 7, "file_name": "a.png", "height": 32, "width": 32},
               {"id": 3, "file_name": "b.png", "height": 24, "width": 32},
               {"id": 9, "file_name": "c.png", "height": 32, "width": 32}],  # no objects
    "annotations": [
        {"id": 1, "image_id": 7, "category_id": 18, "bbox": [2, 3, 10, 5], "area": 50,
         "iscrowd": 0, "segmentation": [[2, 3, 12, 3, 12, 8, 2, 8]]},
        {"id": 2, "image_id": 7, "category_id": 1, "bbox": [0, 0, 4, 4], "area": 16,
         "iscrowd": 1,  # crowd: uncompressed column-major RLE, rows 0-3 of columns 0-3
         "segmentation": {"size": [32, 32], "counts": [0, 4, 28, 4, 28, 4, 28, 4, 924]}},
        {"id": 3, "image_id": 7, "category_id": 3, "bbox": [20, 20, 12.5, 12], "area": 81,
         "iscrowd": 0, "segmentation": {"size": [32, 32], "counts": RLE_COUNTS}},
        {"id": 5, "image_id": 7, "category_id": 3, "bbox": [5, 5, 0, 3], "area": 0,
         "iscrowd": 0, "segmentation": [[5, 5, 5, 8, 5, 5]]},  # zero width: dropped
        {"id": 4, "image_id": 3, "category_id": 1, "bbox": [1, 1, 5, 6], "area": 30,
         "iscrowd": 0, "segmentation": [[1, 1, 6, 1, 6, 7, 1, 7]]},
    ],
    "categories": CATEGORIES,
}
KEYPOINTS = {
    "images": TRAIN["images"],
    "annotations": [{"id": 4, "image_id": 3, "category_id": 1, "bbox": [1, 1, 5, 6],
                     "iscrowd": 0, "num_keypoints": 1, "keypoints": [3, 4, 2, 0, 0, 0]}],
    "categories": [{"id": 1, "name": "person", "keypoints": ["nose", "left_eye"],
                    "skeleton": [[1, 2]]}],
}
VAL = {
    "images": [{"id": 1, "file_name": "v.png", "height": 32, "width": 32}],
    "annotations": [{"id": 10, "image_id": 1, "category_id": 3, "bbox": [0, 0, 32, 32],
                     "area": 1024, "iscrowd": 0, "segmentation": [[0, 0, 32, 0, 32, 32, 0, 32]]}],
    "categories": CATEGORIES,
}


def write_coco(root, train=TRAIN, keypoints=KEYPOINTS, val=VAL):
    os.makedirs(root / "annotations", exist_ok=True)
    for suffix, data in (("train2017", train), ("val2017", val)):
        os.makedirs(root / suffix, exist_ok=True)
        (root / "annotations" / f"instances_{suffix}.json").write_text(json.dumps(data))
        for k, img in enumerate(data["images"]):
            PIL.Image.fromarray(_image(k, (img["height"], img["width"]))).save(
                root / suffix / img["file_name"])
    if keypoints is not None:
        (root / "annotations" / "person_keypoints_train2017.json").write_text(
            json.dumps(keypoints))


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    write_coco(root)
    return coco.build(str(root), str(tmp_path_factory.mktemp("tfds")))


def test_categories_map_to_contiguous_ids_by_sorted_coco_id(converted):
    meta = converted.info.metadata
    assert meta["class_names"] == ["person", "car", "dog"]
    assert meta["category_ids"] == [1, 3, 18]
    assert meta["keypoint_names"] == ["nose", "left_eye"] and meta["skeleton"] == [[0, 1]]
    assert meta["dropped"] == {"train": {"empty_box": 1}} and meta["skipped"] == {}


def test_category_labels_ids_keep_cocos_id_space(tmp_path):
    """``category_labels="ids"``: label = category id - 1 over 1..max id (torchvision's
    released detectors predict in that space), gaps named ``unused_<id>``; a separate
    dataset from the contiguous conversion of the same folder."""
    write_coco(tmp_path / "coco", keypoints=None)
    builder = coco.build(str(tmp_path / "coco"), str(tmp_path / "tfds"), masks=False,
                         category_labels="ids")
    meta = builder.info.metadata
    assert meta["category_ids"] == list(range(1, 19))
    assert meta["class_names"][0] == "person" and meta["class_names"][2] == "car"
    assert meta["class_names"][17] == "dog" and meta["class_names"][1] == "unused_2"
    a = builder.as_data_source()["train"][1]  # a.png: dog (18), crowd person (1), car (3)
    np.testing.assert_array_equal(a["objects"]["label"], [17, 0, 2])
    contiguous = coco.build(str(tmp_path / "coco"), str(tmp_path / "tfds"), masks=False)
    assert contiguous.info.metadata["category_ids"] == [1, 3, 18]
    assert contiguous.builder_config.name != builder.builder_config.name
    with pytest.raises(ValueError, match="category_labels='coco'"):
        coco.build(str(tmp_path / "coco"), str(tmp_path / "tfds"), category_labels="coco")


def test_examples_read_back_exactly(converted):
    train = converted.as_data_source()["train"]
    assert len(train) == 3
    # images ordered by COCO id: 3 (b.png), 7 (a.png), 9 (c.png)
    b, a, c = train[0], train[1], train[2]
    assert [e["coco_id"] for e in (b, a, c)] == [3, 7, 9]
    assert [e["image_id"] for e in (b, a, c)] == [0, 1, 2]
    np.testing.assert_array_equal(a["image"], _image(0, (32, 32)))
    np.testing.assert_array_equal(b["image"], _image(1, (24, 32)))

    o = a["objects"]  # xywh -> xyxy; the 32.5 edge clipped to 32; zero-width box dropped
    np.testing.assert_array_equal(o["bbox"], [[2, 3, 12, 8], [0, 0, 4, 4], [20, 20, 32, 32]])
    np.testing.assert_array_equal(o["label"], [2, 0, 1])
    np.testing.assert_array_equal(o["is_crowd"], [False, True, False])
    np.testing.assert_array_equal(o["area"], [50, 16, 81])
    np.testing.assert_array_equal(o["id"], [1, 2, 3])
    assert o["mask"].shape == (3, 32, 32, 1) and o["mask"].dtype == np.uint8
    polygon = np.zeros((32, 32), np.uint8)
    polygon[3:8, 2:12] = 1  # pycocotools fills the rectangle's rows 3-7, columns 2-11
    crowd = np.zeros((32, 32), np.uint8)
    crowd[0:4, 0:4] = 1
    for got, want in zip(o["mask"][..., 0], (polygon, crowd, RLE_MASK), strict=True):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(o["keypoints"], np.zeros((3, 2, 3)))  # no keypoints here

    p = b["objects"]
    np.testing.assert_array_equal(p["bbox"], [[1, 1, 6, 7]])
    np.testing.assert_array_equal(p["keypoints"], [[[3.5, 4.5, 2], [0, 0, 0]]])  # +0.5 centres
    person = np.zeros((24, 32), np.uint8)
    person[1:7, 1:6] = 1
    np.testing.assert_array_equal(p["mask"][0, ..., 0], person)

    assert c["objects"]["bbox"].shape == (0, 4) and c["objects"]["mask"].shape == (0, 32, 32, 1)
    assert c["objects"]["keypoints"].shape == (0, 2, 3)
    val = converted.as_data_source()["validation"]
    assert len(val) == 1
    np.testing.assert_array_equal(val[0]["objects"]["bbox"], [[0, 0, 32, 32]])
    np.testing.assert_array_equal(val[0]["objects"]["mask"][0, ..., 0], np.ones((32, 32)))


def test_drop_objects_leaves_out_crowds(converted):
    source = local_tfds.DropObjects(converted.as_data_source()["train"], ["is_crowd"])
    o = source[1]["objects"]
    np.testing.assert_array_equal(o["bbox"], [[2, 3, 12, 8], [20, 20, 32, 32]])
    np.testing.assert_array_equal(o["id"], [1, 3])
    assert o["mask"].shape == (2, 32, 32, 1)


def test_fit_to_square_scales_boxes_masks_keypoints(converted):
    b = converted.as_data_source()["train"][0]  # 24 x 32 -> 12 x 16, padded to 16 x 16
    out = local_tfds.fit_to_square(b, 16)
    assert out["image"].shape == (16, 16, 3)
    np.testing.assert_array_equal(out["image"][12:], 0)
    np.testing.assert_allclose(out["objects"]["bbox"], [[0.5, 0.5, 3, 3.5]])
    np.testing.assert_allclose(out["objects"]["area"], [30 / 4])
    np.testing.assert_allclose(out["objects"]["keypoints"], [[[1.75, 2.25, 2], [0, 0, 0]]])
    assert out["objects"]["mask"].shape == (1, 16, 16, 1)
    np.testing.assert_array_equal(out["objects"]["mask"][0, 12:], 0)


def _bad(case: str):
    """(train JSON, reason, record, problem) with one bad record in image a.png (id 7)."""
    train = copy.deepcopy(TRAIN)
    anns = train["annotations"]
    record = "image 'a.png' (id 7) annotation 1"
    if case == "negative_width":
        anns[0]["bbox"] = [12, 3, -10, 5]
        return train, "bad_box", record, "x2 < x1"
    if case == "outside":
        anns[0]["bbox"] = [2, 3, 40, 5]
        return train, "bad_box", record, "outside the 32x32 (WxH) image"
    if case == "three_numbers":
        anns[0]["bbox"] = [2, 3, 10]
        return train, "malformed_record", record, "bbox [2, 3, 10] is not 4 numbers"
    if case == "unknown_category":
        anns[0]["category_id"] = 99
        return train, "malformed_record", record, "category_id 99 not in 'categories'"
    if case == "bad_polygon":
        anns[0]["segmentation"] = [[1, 2, 3]]
        return train, "malformed_record", record, "bad segmentation"
    if case == "missing_image":
        train["images"][0]["file_name"] = "gone.png"
        return train, "missing_image", "image 'gone.png' (id 7)", "not found"
    if case == "size_mismatch":
        train["images"][0]["height"] = 30
        return train, "size_mismatch", "image 'a.png' (id 7)", "JSON says 32x30 (WxH)"
    raise ValueError(case)


@pytest.mark.parametrize("case", ["negative_width", "outside", "three_numbers",
                                  "unknown_category", "bad_polygon", "missing_image",
                                  "size_mismatch"])
def test_bad_record_stops_with_file_record_and_problem(tmp_path, case):
    train, reason, record, problem = _bad(case)
    write_coco(tmp_path / "coco", train=train, keypoints=None)
    if case == "missing_image":
        os.remove(tmp_path / "coco" / "train2017" / "gone.png")
    if case == "size_mismatch":  # the file keeps its 32 x 32 pixels
        PIL.Image.fromarray(_image(0, (32, 32))).save(tmp_path / "coco" / "train2017" / "a.png")
    with pytest.raises(local_tfds.BadRecord) as info:
        coco.build(str(tmp_path / "coco"), str(tmp_path / "tfds"))
    file = tmp_path / "coco" / "annotations" / "instances_train2017.json"
    assert info.value.reason == reason
    assert str(info.value).startswith(f"{file}: {record}: ")
    assert problem in str(info.value)
    builder = coco.build(str(tmp_path / "coco"), str(tmp_path / "tfds"), skip_bad_records=True)
    train_source = builder.as_data_source()["train"]
    assert [train_source[i]["coco_id"] for i in range(len(train_source))] == [3, 9]
    assert builder.info.metadata["skipped"] == {"train": {reason: 1}}


def test_malformed_json_file_is_named(tmp_path):
    write_coco(tmp_path / "coco", keypoints=None)
    file = tmp_path / "coco" / "annotations" / "instances_val2017.json"
    file.write_text('{"images": [')
    with pytest.raises(local_tfds.BadRecord, match=f"{file}: JSON: malformed JSON"):
        coco.build(str(tmp_path / "coco"), str(tmp_path / "tfds"), skip_bad_records=True)


def test_missing_folder_and_missing_tfds_coco_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "annotations")):
        coco.build(str(tmp_path), str(tmp_path / "tfds"))
    with pytest.raises(FileNotFoundError, match=f"coco/2017 is not prepared under {tmp_path}"):
        coco.tfds_coco(str(tmp_path))


def test_replaced_image_converts_again_with_its_new_pixels(tmp_path):
    write_coco(tmp_path / "coco")
    first = coco.build(str(tmp_path / "coco"), str(tmp_path / "tfds"))
    black = np.zeros((32, 32, 3), np.uint8)
    PIL.Image.fromarray(black).save(tmp_path / "coco" / "val2017" / "v.png")
    second = coco.build(str(tmp_path / "coco"), str(tmp_path / "tfds"))
    assert second.data_dir != first.data_dir
    np.testing.assert_array_equal(second.as_data_source()["validation"][0]["image"], black)
