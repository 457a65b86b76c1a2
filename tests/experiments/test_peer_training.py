"""experiments/peer_training/compare.py's scoring: ground truth from the XMLs, one COCO call."""

from __future__ import annotations

import pytest

from jaxdet.data import synthetic_voc
from tests.helpers import load_script


def _compare_module():
    return load_script("experiments/peer_training/compare.py", "peer_compare")


def _records(compare, folder, names, dx=0.0, relabel=False):
    out = []
    for image_id, (_, record) in enumerate(compare.read_split(folder, "validation")):
        for obj in record.objects:
            x1, y1, x2, y2 = obj.box
            label = names.index(obj.name) + 1
            if relabel:
                label = label % len(names) + 1
            out.append({"image_id": image_id, "category_id": label, "score": 0.9,
                        "bbox": [x1 + dx, y1, x2 - x1, y2 - y1]})
    return out


def test_scores_detections_against_the_xml_ground_truth(tmp_path):
    compare = _compare_module()
    folder = str(tmp_path / "voc")
    synthetic_voc.write_voc_folder(folder, "shapes", num_train=3, num_val=6)
    names = compare.class_names(folder)
    assert names == sorted(names) and set(names) <= set(synthetic_voc.STYLES["shapes"].classes)
    perfect = compare.score(folder, names, _records(compare, folder, names))
    assert perfect["AP"] == pytest.approx(1.0) and perfect["AP50"] == pytest.approx(1.0)
    wrong_class = compare.score(folder, names, _records(compare, folder, names, relabel=True))
    assert wrong_class["AP"] == 0.0
    shifted = compare.score(folder, names, _records(compare, folder, names, dx=6.0))
    assert 0.0 < shifted["AP"] < perfect["AP"]
    assert compare.score(folder, names, [])["AP"] == 0.0


def test_image_ids_follow_the_split_file_order_as_jaxdet_reads_it(tmp_path):
    compare = _compare_module()
    folder = tmp_path / "voc"
    synthetic_voc.write_voc_folder(str(folder), "shapes", num_train=2, num_val=3)
    val = folder / "ImageSets" / "Main" / "val.txt"
    val.write_text("000004\n000002\n000003\n")  # not sorted
    rows = compare.read_split(str(folder), "validation")
    assert [path.rsplit("/", 1)[-1] for path, _ in rows] == [
        "000004.jpg", "000002.jpg", "000003.jpg"]
