"""Synthetic VOC folders: read back by the VOC reader, boxes on the drawn pixels, seeded."""

from __future__ import annotations

import os

import numpy as np
import PIL.Image
import pytest

from jaxdet.data import synthetic_voc, voc


@pytest.mark.parametrize("style", sorted(synthetic_voc.STYLES))
def test_folder_reads_back_with_boxes_in_the_image(tmp_path, style):
    counts = synthetic_voc.write_voc_folder(str(tmp_path), style, num_train=5, num_val=3)
    assert counts["images"] == 8
    with open(tmp_path / "ImageSets" / "Main" / "train.txt") as f:
        train = f.read().split()
    with open(tmp_path / "ImageSets" / "Main" / "val.txt") as f:
        val = f.read().split()
    assert train == [f"{i:06d}" for i in range(5)] and val == [f"{i:06d}" for i in range(5, 8)]
    spec = synthetic_voc.STYLES[style]
    n_objects = 0
    for stem in train + val:
        record = voc.parse_xml(str(tmp_path / "Annotations" / f"{stem}.xml"))
        image = np.asarray(PIL.Image.open(tmp_path / "JPEGImages" / record.filename))
        assert record.size == image.shape[:2]
        assert spec.image_sides[0] <= min(record.size) <= max(record.size) <= spec.image_sides[1]
        assert len(record.objects) <= spec.objects[1]
        for obj in record.objects:
            x1, y1, x2, y2 = obj.box
            assert obj.name in spec.classes
            assert 0 <= x1 < x2 <= record.size[1] and 0 <= y1 < y2 <= record.size[0]
            assert x2 - x1 >= 3 and y2 - y1 >= 3
        n_objects += len(record.objects)
    assert n_objects == counts["objects"] > 0


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        synthetic_voc.write_voc_folder(str(tmp_path / name), "clutter", 2, 1, seed=seed)
    read = lambda n: (tmp_path / n / "JPEGImages" / "000001.jpg").read_bytes()  # noqa: E731
    ann = lambda n: (tmp_path / n / "Annotations" / "000001.xml").read_text()  # noqa: E731
    assert read("a") == read("b") and ann("a") == ann("b")
    assert read("a") != read("c")


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_box_is_the_extent_of_the_drawn_shape(seed):
    # A lone solid rectangle: every pixel in its box has its colour; the rows and columns just
    # outside the box (inside the image) do not all have it.
    style = synthetic_voc.VocStyle(("rectangle",), (1, 1), (30, 30), 0.5, (96, 96),
                                   "gradient", "solid", 0, (95, 95))
    image, objects = synthetic_voc.draw_example(style, np.random.default_rng(seed))
    (name, (xmin, ymin, xmax, ymax)), = objects
    assert name == "rectangle"
    inside = image[ymin - 1:ymax, xmin - 1:xmax].reshape(-1, 3)
    colour = inside[0]
    assert (inside == colour).all()
    for edge in (image[ymin - 2, xmin - 1:xmax] if ymin > 1 else None,
                 image[ymax, xmin - 1:xmax] if ymax < 96 else None,
                 image[ymin - 1:ymax, xmin - 2] if xmin > 1 else None,
                 image[ymin - 1:ymax, xmax] if xmax < 96 else None):
        if edge is not None:
            assert not (edge == colour).all()


def test_hidden_objects_are_left_out(monkeypatch):
    # Two identical squares drawn on the same spot: the first is entirely covered.
    masks = iter([np.pad(np.ones((20, 20), bool), ((10, 34), (10, 34)))] * 2)
    monkeypatch.setattr(synthetic_voc, "_shape_mask", lambda *a, **k: next(masks))
    style = synthetic_voc.VocStyle(("rectangle",), (2, 2), (20, 20), 0.5, (64, 64),
                                   "gradient", "solid", 0, (95, 95))
    _, objects = synthetic_voc.draw_example(style, np.random.default_rng(0))
    assert objects == [("rectangle", (11, 11, 30, 30))]


@pytest.mark.parametrize("kwargs, message", [
    (dict(style="nope", num_train=1, num_val=1), "style='nope'"),
    (dict(style="shapes", num_train=-1, num_val=1), "num_train=-1"),
])
def test_bad_arguments_are_named(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        synthetic_voc.write_voc_folder(str(tmp_path), **kwargs)


def test_command_line(tmp_path, capsys):
    out = tmp_path / "voc"
    synthetic_voc.main([f"--out={out}", "--style=textures", "--num_train=2", "--num_val=1"])
    assert "3 images" in capsys.readouterr().out
    assert len(os.listdir(out / "JPEGImages")) == 3


def test_coco_folder_holds_the_voc_folders_images_boxes_and_visible_masks(tmp_path):
    import json

    from pycocotools import mask as mask_utils

    synthetic_voc.write_voc_folder(str(tmp_path / "voc"), "textures", 3, 2)
    counts = synthetic_voc.write_coco_folder(str(tmp_path / "coco"), "textures", 3, 2)
    names = sorted(set(synthetic_voc.STYLES["textures"].classes))
    n_objects = 0
    for split, stems in (("train2017", range(3)), ("val2017", range(3, 5))):
        data = json.loads((tmp_path / "coco" / "annotations" / f"instances_{split}.json")
                          .read_text())
        assert [c["name"] for c in data["categories"]] == names
        for image in data["images"]:
            i = image["id"] - 1
            assert i in stems and image["file_name"] == f"{i:06d}.jpg"
            assert ((tmp_path / "coco" / split / image["file_name"]).read_bytes()
                    == (tmp_path / "voc" / "JPEGImages" / f"{i:06d}.jpg").read_bytes())
            record = voc.parse_xml(str(tmp_path / "voc" / "Annotations" / f"{i:06d}.xml"))
            anns = [a for a in data["annotations"] if a["image_id"] == image["id"]]
            assert [names[a["category_id"] - 1] for a in anns] == [o.name for o in
                                                                   record.objects]
            for ann, obj in zip(anns, record.objects, strict=True):
                x, y, w, h = ann["bbox"]
                np.testing.assert_allclose([x, y, x + w, y + h], obj.box)  # VOC: 0-based here
                mask = mask_utils.decode(ann["segmentation"])
                ys, xs = np.nonzero(mask)
                assert ann["area"] == len(xs) > 0 and ann["iscrowd"] == 0
                assert x <= xs.min() and xs.max() < x + w and y <= ys.min() and ys.max() < y + h
            n_objects += len(anns)
    assert n_objects == counts["objects"] > 0 and counts["images"] == 5
