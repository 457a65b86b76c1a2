"""Selective Search proposals: box format, padding, the cache, recall of a clear shape."""

import importlib
import sys

import numpy as np
import pytest

from jaxdet.data import proposals

SIZE = 48
RECT = np.asarray([10, 14, 34, 40], np.float32)  # (x1, y1, x2, y2) of the drawn rectangle


def _images() -> list[dict[str, np.ndarray]]:
    """Three 48 x 48 RGB scenes: a red rectangle on a gradient, a green disc on noise, an
    empty gradient."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(60, 140, SIZE, dtype=np.float32)
    grad = np.stack([np.broadcast_to(ramp, (SIZE, SIZE))] * 3, axis=-1)
    first = grad.copy()
    x1, y1, x2, y2 = RECT.astype(int)
    first[y1:y2, x1:x2] = [220, 20, 20]
    second = rng.uniform(90, 110, (SIZE, SIZE, 3)).astype(np.float32)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    second[(yy - 30) ** 2 + (xx - 18) ** 2 < 100] = [20, 200, 40]
    return [{"image": im.astype(np.uint8)} for im in (first, second, grad)]


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:2], b[:, :2])
    rb = np.minimum(a[2:], b[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    area = lambda z: (z[..., 2] - z[..., 0]) * (z[..., 3] - z[..., 1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def test_selective_search_boxes_are_inside_the_image_and_find_the_rectangle():
    image = _images()[0]["image"]
    for mode in proposals.MODES:
        boxes = proposals.selective_search(image, mode=mode, max_proposals=1000, min_size=2.0)
        assert boxes.dtype == np.float32 and boxes.ndim == 2 and boxes.shape[1] == 4
        assert len(boxes) > 0
        assert np.all(boxes >= 0) and np.all(boxes[:, [0, 2]] <= SIZE)
        assert np.all(boxes[:, [1, 3]] <= SIZE)
        assert np.all(boxes[:, 2] - boxes[:, 0] >= 2) and np.all(boxes[:, 3] - boxes[:, 1] >= 2)
        assert _iou(RECT, boxes).max() >= 0.7, mode
    # reproducible, order included, and truncation keeps the first of the ranking
    again = proposals.selective_search(image, max_proposals=1000)
    np.testing.assert_array_equal(proposals.selective_search(image, max_proposals=1000), again)
    np.testing.assert_array_equal(proposals.selective_search(image, max_proposals=3), again[:3])
    with pytest.raises(ValueError, match="mode"):
        proposals.selective_search(image, mode="slow")


def test_load_or_compute_pads_and_caches_once(tmp_path, monkeypatch):
    source = _images()
    calls = []
    compute = proposals.compute_proposals

    def counting(*args, **kwargs):
        calls.append(1)
        return compute(*args, **kwargs)

    monkeypatch.setattr(proposals, "compute_proposals", counting)
    p = 40
    boxes, valid = proposals.load_or_compute(source, "validation", tmp_path, max_proposals=p)
    assert boxes.shape == (3, p, 4) and boxes.dtype == np.float32
    assert valid.shape == (3, p) and valid.dtype == bool
    counts = valid.sum(axis=1)
    assert np.all(counts > 0) and np.all(counts <= p)
    # valid rows first, padding zeros
    np.testing.assert_array_equal(valid, np.arange(p)[None, :] < counts[:, None])
    assert np.all(boxes[~valid] == 0)
    for i in range(3):
        np.testing.assert_array_equal(
            boxes[i, : counts[i]],
            proposals.selective_search(source[i]["image"], max_proposals=p))
    path = proposals.cache_path(tmp_path, "validation", max_proposals=p)
    assert path.exists() and path.parent.name == "proposals_fast_40_min2"
    assert len(calls) == 1

    again = proposals.load_or_compute(source, "validation", tmp_path, max_proposals=p)
    assert len(calls) == 1  # read back from the cache
    np.testing.assert_array_equal(again[0], boxes)
    np.testing.assert_array_equal(again[1], valid)
    # another number of images (a regrown split) is computed anew, then cached
    proposals.load_or_compute(source[:2], "validation", tmp_path, max_proposals=p)
    assert len(calls) == 2
    assert proposals.load_or_compute(source[:2], "validation", tmp_path, max_proposals=p)[
        0].shape == (2, p, 4)
    assert len(calls) == 2


def test_missing_opencv_contrib_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 -> ImportError
    importlib.reload(proposals)  # importing the module itself never needs cv2
    with pytest.raises(ImportError, match="opencv-contrib-python-headless"):
        proposals.selective_search(_images()[0]["image"])
