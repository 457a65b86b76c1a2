"""Pascal VOC conversion: tiny VOC2007-style and flat folders written here, read back exactly."""

from __future__ import annotations

import logging
import os

import numpy as np
import PIL.Image
import pytest

from jaxdet.data import local_tfds, voc


def _image(hw=(32, 32), value=0) -> np.ndarray:
    h, w = hw
    return (np.arange(h * w * 3).reshape(h, w, 3) * 7 + value).astype(np.uint8)


def _xml(filename: str, objects, size=(32, 32)) -> str:
    objs = "".join(
        f"<object><name>{name}</name><truncated>{int(t)}</truncated>"
        f"<difficult>{int(d)}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for name, b, d, t in objects)
    size_xml = "" if size is None else (
        f"<size><width>{size[1]}</width><height>{size[0]}</height><depth>3</depth></size>")
    return f"<annotation><filename>{filename}</filename>{size_xml}{objs}</annotation>"


def write_voc(root, records, splits=None, image_dir="JPEGImages", ann_dir="Annotations",
              fmt="PNG"):
    """records: {stem: (objects, image hw)}; images are PNG (exact pixels) unless fmt."""
    os.makedirs(os.path.join(root, image_dir), exist_ok=True)
    os.makedirs(os.path.join(root, ann_dir), exist_ok=True)
    ext = ".png" if fmt == "PNG" else ".jpg"
    for k, (stem, (objects, hw)) in enumerate(records.items()):
        PIL.Image.fromarray(_image(hw, k)).save(os.path.join(root, image_dir, stem + ext), fmt)
        with open(os.path.join(root, ann_dir, stem + ".xml"), "w") as f:
            f.write(_xml(stem + ext, objects, hw))
    if splits:
        os.makedirs(os.path.join(root, "ImageSets", "Main"), exist_ok=True)
        for name, stems in splits.items():
            with open(os.path.join(root, "ImageSets", "Main", name), "w") as f:
                f.write("".join(s + "\n" for s in stems))


RECORDS = {
    "000001": ([("dog", (1, 2, 10, 20), False, True), ("cat", (5, 5, 32, 32), True, False)],
               (32, 32)),
    "000002": ([], (32, 32)),  # no objects: kept
    "000003": ([("person", (3, 4, 30, 24), False, False)], (24, 30)),
}


@pytest.fixture(scope="module")
def voc2007(tmp_path_factory):
    root = tmp_path_factory.mktemp("VOC2007")
    write_voc(root, RECORDS, {"train.txt": ["000001", "000002"], "val.txt": ["000003"]})
    return root, voc.build(str(root), str(tmp_path_factory.mktemp("tfds")))


def test_voc_layout_converts_boxes_flags_and_classes(voc2007):
    _, builder = voc2007
    assert builder.info.metadata["class_names"] == ["cat", "dog", "person"]  # sorted, from data
    train = builder.as_data_source()["train"]
    val = builder.as_data_source()["validation"]
    assert len(train) == 2 and len(val) == 1
    e = train[0]
    np.testing.assert_array_equal(e["image"], _image((32, 32), 0))
    # 1-based inclusive (xmin, ymin, xmax, ymax) -> (xmin - 1, ymin - 1, xmax, ymax)
    np.testing.assert_array_equal(e["objects"]["bbox"], [[0, 1, 10, 20], [4, 4, 32, 32]])
    assert e["objects"]["bbox"].dtype == np.float32
    np.testing.assert_array_equal(e["objects"]["label"], [1, 0])
    np.testing.assert_array_equal(e["objects"]["difficult"], [False, True])
    np.testing.assert_array_equal(e["objects"]["truncated"], [True, False])
    assert e["image_id"] == 0 and e["file_name"] == b"000001.png"
    empty = train[1]
    assert empty["objects"]["bbox"].shape == (0, 4) and empty["objects"]["label"].shape == (0,)
    np.testing.assert_array_equal(empty["image"], _image((32, 32), 1))
    v = val[0]
    assert v["image"].shape == (24, 30, 3)
    np.testing.assert_array_equal(v["objects"]["bbox"], [[2, 3, 30, 24]])
    np.testing.assert_array_equal(v["objects"]["label"], [2])


def test_second_build_reuses_the_conversion(voc2007, monkeypatch):
    root, builder = voc2007

    def refuse(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(voc.JaxdetVoc, "download_and_prepare", refuse)
    again = voc.build(str(root), os.path.dirname(os.path.dirname(os.path.dirname(
        os.fspath(builder.data_dir)))))
    assert again.data_dir == builder.data_dir


def test_flat_layout_split_by_seeded_ratio_and_config_classes(tmp_path):
    records = {f"img{i}": ([("b", (1, 1, 4, 4), False, False)], (32, 32)) for i in range(5)}
    write_voc(tmp_path / "flat", records, image_dir="images", ann_dir="xml", fmt="JPEG")
    builder = voc.build(str(tmp_path / "flat"), str(tmp_path / "tfds"), image_dir="images",
                        annotation_dir="xml", class_names=("a", "b"), val_fraction=0.4,
                        split_seed=3)
    expected = local_tfds.split_by_ratio([f"img{i}" for i in range(5)], 0.4, 3)
    assert len(expected["validation"]) == 2 and len(expected["train"]) == 3
    for split in ("train", "validation"):
        source = builder.as_data_source()[split]
        names = [source[i]["file_name"].decode() for i in range(len(source))]
        assert names == [s + ".jpg" for s in expected[split]]
        np.testing.assert_array_equal(source[0]["objects"]["label"], [1])  # config order
        assert source[0]["image"].shape == (32, 32, 3)  # JPEG stored as is, decodes to RGB
    assert builder.info.metadata["class_names"] == ["a", "b"]


BAD = {
    "inverted": ([("a", (10, 2, 5, 20), False, False)], "bad_box", "xmax < xmin"),
    "outside": ([("a", (1, 1, 40, 20), False, False)], "bad_box", "outside the 32x32"),
    "unknown": ([("zebra", (1, 1, 4, 4), False, False)], "unknown_class", "'zebra'"),
}


@pytest.mark.parametrize("stem", sorted(BAD) + ["malformed", "noimage", "badimage", "size"])
def test_bad_record_stops_with_file_record_and_problem(tmp_path, stem):
    root = tmp_path / "voc"
    write_voc(root, {"good": ([("a", (1, 1, 4, 4), False, False)], (32, 32))},
              image_dir="images", ann_dir="xml")
    xml = root / "xml" / f"{stem}.xml"
    if stem in BAD:
        objects, reason, problem = BAD[stem]
        PIL.Image.fromarray(_image()).save(root / "images" / f"{stem}.png")
        xml.write_text(_xml(f"{stem}.png", objects))
        record = f"{stem} object 0"
    elif stem == "malformed":
        xml.write_text("<annotation><object><name>a</name>")
        reason, problem, record = "malformed_record", "malformed XML", stem
    elif stem == "noimage":
        xml.write_text(_xml("noimage.png", []))
        reason, problem, record = "missing_image", "images/noimage.png (or noimage.{jpg", stem
    elif stem == "badimage":
        (root / "images" / "badimage.png").write_bytes(b"not a png")
        xml.write_text(_xml("badimage.png", []))
        reason, problem, record = "unreadable_image", "unreadable", stem
    else:
        PIL.Image.fromarray(_image((32, 32))).save(root / "images" / "size.png")
        xml.write_text(_xml("size.png", [], size=(20, 32)))
        reason, problem, record = "size_mismatch", "<size> 32x20 (WxH) but image", stem
    kwargs = dict(image_dir="images", annotation_dir="xml", class_names=("a",),
                  val_fraction=0.0)
    with pytest.raises(local_tfds.BadRecord) as info:
        voc.build(str(root), str(tmp_path / "tfds"), **kwargs)
    assert info.value.reason == reason
    assert str(info.value).startswith(f"{xml}: {record}")
    assert problem in str(info.value)
    # nothing half-written: no prepared version directory is left
    assert not any("1.0.0" == d for _, dirs, _ in os.walk(tmp_path / "tfds") for d in dirs)
    builder = voc.build(str(root), str(tmp_path / "tfds"), skip_bad_records=True, **kwargs)
    train = builder.as_data_source()["train"]
    assert [train[i]["file_name"] for i in range(len(train))] == [b"good.png"]
    assert builder.info.metadata["skipped"] == {"train": {reason: 1}}


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope" / "Annotations")):
        voc.build(str(tmp_path / "nope"), str(tmp_path / "tfds"))


def test_interrupted_conversion_is_rebuilt_not_read(tmp_path, monkeypatch):
    write_voc(tmp_path / "voc", RECORDS, {"train.txt": ["000001", "000002"],
                                          "val.txt": ["000003"]})
    calls = []
    read_image = local_tfds.read_image

    def interrupted(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt  # e.g. Ctrl-C after the first image
        return read_image(*args, **kwargs)

    monkeypatch.setattr(local_tfds, "read_image", interrupted)
    with pytest.raises(KeyboardInterrupt):
        voc.build(str(tmp_path / "voc"), str(tmp_path / "tfds"))
    monkeypatch.setattr(local_tfds, "read_image", read_image)
    builder = voc.build(str(tmp_path / "voc"), str(tmp_path / "tfds"))
    assert len(builder.as_data_source()["train"]) == 2
    assert len(builder.as_data_source()["validation"]) == 1


def test_replaced_image_converts_again_with_its_new_pixels(tmp_path, caplog):
    write_voc(tmp_path / "voc", RECORDS, {"train.txt": ["000001", "000002"],
                                          "val.txt": ["000003"]})
    first = voc.build(str(tmp_path / "voc"), str(tmp_path / "tfds"))
    black = np.zeros((24, 30, 3), np.uint8)
    PIL.Image.fromarray(black).save(tmp_path / "voc" / "JPEGImages" / "000003.png")
    with caplog.at_level(logging.WARNING):
        second = voc.build(str(tmp_path / "voc"), str(tmp_path / "tfds"))
    assert second.data_dir != first.data_dir
    assert any("converting again" in r.getMessage() and "files or the conversion options "
               "changed since" in r.getMessage() for r in caplog.records)
    np.testing.assert_array_equal(second.as_data_source()["validation"][0]["image"], black)


def test_fixed_unreadable_image_is_included_on_the_next_conversion(tmp_path, caplog):
    write_voc(tmp_path / "voc", RECORDS, {"train.txt": ["000001", "000002"],
                                          "val.txt": ["000003"]})
    image = tmp_path / "voc" / "JPEGImages" / "000002.png"
    good = image.read_bytes()
    image.write_bytes(b"not an image")
    skipped = voc.build(str(tmp_path / "voc"), str(tmp_path / "tfds"), skip_bad_records=True)
    assert len(skipped.as_data_source()["train"]) == 1
    with caplog.at_level(logging.WARNING):  # reused: the skipped count is said again
        voc.build(str(tmp_path / "voc"), str(tmp_path / "tfds"), skip_bad_records=True)
    assert any("reused skipped bad records {'train': {'unreadable_image': 1}}" in r.getMessage()
               for r in caplog.records)
    image.write_bytes(good)
    fixed = voc.build(str(tmp_path / "voc"), str(tmp_path / "tfds"), skip_bad_records=True)
    assert len(fixed.as_data_source()["train"]) == 2
