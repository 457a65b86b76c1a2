"""Horizontal flip against hand-computed boxes, masks, keypoints and label maps."""

from __future__ import annotations

import numpy as np
import pytest

from jaxdet.data import augment


def _example():
    image = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)  # H = 4, W = 6
    mask = np.zeros((1, 4, 6, 1), np.uint8)
    mask[0, 1:3, 0:2] = 1  # columns 0-1 -> box x 0..2
    seg = np.zeros((4, 6, 1), np.uint8)
    seg[:, 5] = 2
    keypoints = np.array([[[1.5, 2.5, 2], [0.5, 1.5, 1], [0, 0, 0]]], np.float32)
    return {"image": image, "segmentation": seg, "image_id": 4,
            "objects": {"bbox": np.array([[0, 1, 2, 3]], np.float32), "label": np.array([3]),
                        "mask": mask, "keypoints": keypoints}}


def test_hflip_by_hand():
    ex = _example()
    out = augment.hflip(ex, flip_pairs=[(0, 1)])
    np.testing.assert_array_equal(out["image"][:, 0], ex["image"][:, 5])
    np.testing.assert_array_equal(out["objects"]["bbox"], [[4, 1, 6, 3]])  # W - x2, W - x1
    want = np.zeros((4, 6), np.uint8)
    want[1:3, 4:6] = 1
    np.testing.assert_array_equal(out["objects"]["mask"][0, ..., 0], want)
    np.testing.assert_array_equal(out["segmentation"][:, 0, 0], [2, 2, 2, 2])
    np.testing.assert_array_equal(out["segmentation"][:, 1:], 0)
    # x -> 6 - x (pixel 1 centre 1.5 -> pixel 4 centre 4.5), then points 0 and 1 swapped;
    # the unlabelled point stays zeros
    np.testing.assert_array_equal(out["objects"]["keypoints"],
                                  [[[5.5, 1.5, 1], [4.5, 2.5, 2], [0, 0, 0]]])
    np.testing.assert_array_equal(out["objects"]["label"], [3])
    assert out["image_id"] == 4
    # flipping twice gives the example back, and the input is untouched
    back = augment.hflip(out, flip_pairs=[(0, 1)])
    for key in ("bbox", "mask", "keypoints"):
        np.testing.assert_array_equal(back["objects"][key], ex["objects"][key])
    np.testing.assert_array_equal(back["image"], ex["image"])
    np.testing.assert_array_equal(_example()["image"], ex["image"])


def test_flip_pairs_from_coco_names():
    names = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "right_hip", "left_hip"]
    assert augment.flip_pairs_from_names(names) == [(1, 2), (3, 4), (6, 5)]


def test_flip_doubled_source():
    source = augment.FlipDoubled([_example(), _example()], flip_pairs=[(0, 1)])
    assert len(source) == 4
    np.testing.assert_array_equal(source[1]["objects"]["bbox"], [[0, 1, 2, 3]])
    np.testing.assert_array_equal(source[3]["objects"]["bbox"], [[4, 1, 6, 3]])
    with pytest.raises(IndexError, match=r"index 4 outside \[0, 4\)"):
        source[4]
