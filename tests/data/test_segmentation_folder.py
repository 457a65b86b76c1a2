"""Segmentation folders: tiny image + label-image folders written here, read back exactly."""

from __future__ import annotations

import os

import numpy as np
import PIL.Image
import pytest

from jaxdet.data import local_tfds
from jaxdet.data import segmentation_folder as sf

# background, cat, dog (VOC's first colours); 256 entries with VOC's border colour at 255
PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0] + [0, 0, 0] * 252 + [224, 224, 192]


def _image(k: int, hw=(32, 32)) -> np.ndarray:
    return ((np.arange(hw[0] * hw[1] * 3).reshape(*hw, 3) + 11 * k) % 256).astype(np.uint8)


def _label(k: int, hw=(32, 32)) -> np.ndarray:
    label = np.zeros(hw, np.uint8)
    label[4:12, 2 + k:20] = 1
    label[20:, :8] = 2
    label[12, :] = 255  # VOC's ignore border
    return label


def _save_label(path, label: np.ndarray, mode: str) -> None:
    image = PIL.Image.fromarray(label)  # "L": plain indices
    if mode == "P":
        image.putpalette(PALETTE)  # turns it into a palette image with the same indices
    image.save(path)


def write_folder(root, n=4, mode="P", classes="background 0 0 0\ncat 128 0 0\ndog 0 128 0\n",
                 splits=None):
    os.makedirs(root / "images", exist_ok=True)
    os.makedirs(root / "labels", exist_ok=True)
    for k in range(n):
        PIL.Image.fromarray(_image(k)).save(root / "images" / f"im{k}.png")
        _save_label(root / "labels" / f"im{k}.png", _label(k), mode)
    if classes is not None:
        (root / "classes.txt").write_text(classes)
    if splits:
        os.makedirs(root / "splits", exist_ok=True)
        for name, stems in splits.items():
            (root / "splits" / name).write_text("".join(s + "\n" for s in stems))


@pytest.mark.parametrize("mode", ["P", "L"])
def test_palette_and_plain_index_labels_read_back_exactly(tmp_path, mode):
    write_folder(tmp_path / "seg", mode=mode, splits={"train.txt": ["im0", "im2", "im3"],
                                                      "val.txt": ["im1"]})
    assert PIL.Image.open(tmp_path / "seg" / "labels" / "im0.png").mode == mode
    builder = sf.build(str(tmp_path / "seg"), str(tmp_path / "tfds"))
    meta = builder.info.metadata
    assert meta["class_names"] == ["background", "cat", "dog"]
    assert meta["colors"] == [[0, 0, 0], [128, 0, 0], [0, 128, 0]]
    assert meta["ignore_index"] == 255
    train, val = (builder.as_data_source()[s] for s in ("train", "validation"))
    assert len(train) == 3 and len(val) == 1
    for source, ks in ((train, (0, 2, 3)), (val, (1,))):
        for i, k in enumerate(ks):
            e = source[i]
            np.testing.assert_array_equal(e["image"], _image(k))
            assert e["segmentation"].shape == (32, 32, 1) and e["segmentation"].dtype == np.uint8
            np.testing.assert_array_equal(e["segmentation"][..., 0], _label(k))
            assert e["image_id"] == i and e["file_name"] == f"im{k}.png".encode()


def test_rgb_labels_map_through_colours_and_config_names_win(tmp_path):
    root = tmp_path / "seg"
    write_folder(root, n=2, classes="bg 0 0 0\na 128 0 0\nb 0 128 0\n")
    colours = np.asarray([[0, 0, 0], [128, 0, 0], [0, 128, 0]], np.uint8)
    for k in range(2):
        label = _label(k)
        label[label == 255] = 0
        PIL.Image.fromarray(colours[label]).save(root / "labels" / f"im{k}.png")
    builder = sf.build(str(root), str(tmp_path / "tfds"), class_names=("x", "y", "z"),
                       val_fraction=0.5, split_seed=1)
    assert builder.info.metadata["class_names"] == ["x", "y", "z"]
    expected = local_tfds.split_by_ratio(["im0", "im1"], 0.5, 1)
    for split in ("train", "validation"):
        (stem,) = expected[split]
        label = _label(int(stem[-1]))
        label[label == 255] = 0
        e = builder.as_data_source()[split][0]
        np.testing.assert_array_equal(e["segmentation"][..., 0], label)


def test_classes_file_errors_name_the_file(tmp_path):
    (tmp_path / "classes.txt").write_text("a\nb 1 2\n")
    with pytest.raises(ValueError, match=r"classes.txt: line 2: expected 'name' or 'name r g b'"):
        sf.read_classes_file(str(tmp_path / "classes.txt"))
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "none" / "classes.txt")):
        sf.class_names_and_colours(str(tmp_path / "none"))


@pytest.mark.parametrize("case", ["out_of_range", "size", "missing_image", "unreadable_label"])
def test_bad_record_stops_with_file_record_and_problem(tmp_path, case):
    root = tmp_path / "seg"
    write_folder(root, n=1)
    label_path = root / "labels" / "bad.png"
    PIL.Image.fromarray(_image(9)).save(root / "images" / "bad.png")
    if case == "out_of_range":
        label = _label(0)
        label[0, 0], label[1, 1] = 3, 7
        _save_label(label_path, label, "L")
        reason, problem = "label_out_of_range", "label values [3, 7] outside [0, 3)"
    elif case == "size":
        _save_label(label_path, _label(0, (30, 32)), "L")
        reason, problem = "size_mismatch", "label is 32x30 (WxH) but image"
    elif case == "missing_image":
        os.remove(root / "images" / "bad.png")
        _save_label(label_path, _label(0), "L")
        reason, problem = "missing_image", f"{root / 'images'}/bad.{{jpg,jpeg,png,bmp}} not found"
    else:
        label_path.write_bytes(b"\x89PNG broken")
        reason, problem = "unreadable_image", "label image is unreadable"
    with pytest.raises(local_tfds.BadRecord) as info:
        sf.build(str(root), str(tmp_path / "tfds"), val_fraction=0.0)
    assert info.value.reason == reason
    assert str(info.value).startswith(f"{label_path}: bad: ")
    assert problem in str(info.value)
    builder = sf.build(str(root), str(tmp_path / "tfds"), val_fraction=0.0,
                       skip_bad_records=True)
    train = builder.as_data_source()["train"]
    assert len(train) == 1 and train[0]["file_name"] == b"im0.png"
    assert builder.info.metadata["skipped"] == {"train": {reason: 1}}


def test_fit_to_square_scales_and_pads_with_ignore(tmp_path):
    example = {"image": np.full((16, 32, 3), 200, np.uint8),
               "segmentation": np.ones((16, 32, 1), np.uint8)}
    out = local_tfds.fit_to_square(example, 16)
    assert out["image"].shape == (16, 16, 3) and out["segmentation"].shape == (16, 16, 1)
    np.testing.assert_array_equal(out["image"][:8], 200)
    np.testing.assert_array_equal(out["image"][8:], 0)
    np.testing.assert_array_equal(out["segmentation"][:8], 1)
    np.testing.assert_array_equal(out["segmentation"][8:], 255)


def test_replaced_image_converts_again_with_its_new_pixels(tmp_path):
    write_folder(tmp_path / "f", splits={"train.txt": ["im0", "im1", "im2"], "val.txt": ["im3"]})
    first = sf.build(str(tmp_path / "f"), str(tmp_path / "tfds"))
    black = np.zeros((32, 32, 3), np.uint8)
    PIL.Image.fromarray(black).save(tmp_path / "f" / "images" / "im3.png")
    second = sf.build(str(tmp_path / "f"), str(tmp_path / "tfds"))
    assert second.data_dir != first.data_dir
    np.testing.assert_array_equal(second.as_data_source()["validation"][0]["image"], black)
