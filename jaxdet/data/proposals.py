"""Selective Search region proposals (OpenCV contrib), computed once per image and cached.

Proposals for :mod:`jaxdet.detection.rcnn` / :mod:`jaxdet.detection.fast_rcnn`
(``cv2.ximgproc`` modes ``"fast"``, ``"quality"``, ``"single"``; image in BGR order), as
float32 ``(x1, y1, x2, y2)`` absolute pixels of the stored image (``x2 = x + w``; rescale with
:func:`jaxdet.detection.roi_heads.rescale_boxes` if resized). Cached per split in
:func:`cache_path` (``boxes``, ``counts``, parameters), written atomically, reused while the
image count and parameters match. C's ``rand()`` (OpenCV's ranking) is seeded before each
image (without a C library only the order varies). OpenCV (``classic`` extra) is lazy.
"""

from __future__ import annotations

import ctypes
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "MODES",
    "cache_path",
    "compute_proposals",
    "load_or_compute",
    "selective_search",
]

MODES = ("fast", "quality", "single")
_SWITCH = {
    "fast": "switchToSelectiveSearchFast",
    "quality": "switchToSelectiveSearchQuality",
    "single": "switchToSingleStrategy",
}
_CACHE_VERSION = 1

log = logging.getLogger(__name__)


def _cv2() -> Any:
    """``cv2`` with the contrib ``ximgproc`` module, or an ImportError saying what to install."""
    hint = ("Selective Search proposals need OpenCV's contrib modules: "
            "pip install opencv-contrib-python-headless (or jaxdet[classic]); a plain "
            "opencv-python install lacks cv2.ximgproc and must be uninstalled first")
    try:
        import cv2
    except ImportError as e:
        raise ImportError(hint) from e
    if not hasattr(cv2, "ximgproc"):
        raise ImportError(hint)
    return cv2


def _seed_c_rand(seed: int) -> None:
    """``srand(seed)`` of the C library, which OpenCV's region ranking draws from."""
    try:
        ctypes.CDLL(None).srand(ctypes.c_uint(seed))
    except (OSError, AttributeError, TypeError):  # no C library reachable (e.g. Windows)
        pass


def _check(mode: str, max_proposals: int) -> None:
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not one of {list(MODES)}")
    if max_proposals < 1:
        raise ValueError(f"max_proposals must be >= 1, got {max_proposals}")


def selective_search(
    image: np.ndarray,
    *,
    mode: str = "fast",
    max_proposals: int = 500,
    min_size: float = 2.0,
    seed: int = 0,
) -> np.ndarray:
    """Selective Search proposals of ONE image.

    Args:
      image: ``[H, W, 3]`` RGB uint8 (or float in [0, 1]); else ValueError.
      mode: ``"fast"``, ``"quality"`` or ``"single"``. max_proposals: keep the first this many.
      min_size: drop boxes narrower or lower than this (pixels). seed: ``srand`` seed.

    Returns ``[n, 4]`` float32 ``(x1, y1, x2, y2)`` absolute pixels inside ``[0, W] x [0, H]``.
    """
    _check(mode, max_proposals)
    cv2 = _cv2()
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"image must be [H, W, 3] RGB, got shape {img.shape}")
    if img.dtype != np.uint8:
        img = np.clip(np.rint(img.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
    bgr = np.ascontiguousarray(img[..., ::-1])
    ss = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    ss.setBaseImage(bgr)
    getattr(ss, _SWITCH[mode])()
    _seed_c_rand(seed)
    rects = np.asarray(ss.process(), np.float32).reshape(-1, 4)  # (x, y, w, h)
    boxes = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1)
    h, w = img.shape[:2]
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, w)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, h)
    keep = ((boxes[:, 2] - boxes[:, 0]) >= min_size) & ((boxes[:, 3] - boxes[:, 1]) >= min_size)
    return boxes[keep][:max_proposals]


def _image(item: Any) -> np.ndarray:
    return np.asarray(item["image"] if isinstance(item, dict) else item)


def compute_proposals(
    source: Sequence[Any],
    *,
    max_proposals: int = 500,
    mode: str = "fast",
    min_size: float = 2.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Proposals of every image of ``source`` (examples ``{"image": [H, W, 3] uint8, ...}`` or
    images), padded to ``P = max_proposals``: ``(boxes [N, P, 4] float32 pixels, zeros on
    padding, counts [N] int32)``.
    """
    n = len(source)
    boxes = np.zeros((n, max_proposals, 4), np.float32)
    counts = np.zeros((n,), np.int32)
    cv2 = _cv2()
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    start = time.perf_counter()
    try:
        for i in range(n):
            b = selective_search(_image(source[i]), mode=mode, max_proposals=max_proposals,
                                 min_size=min_size, seed=seed)
            boxes[i, : len(b)] = b
            counts[i] = len(b)
            if (i + 1) % 200 == 0:
                log.info("selective search: %d / %d images, %.3f s/image", i + 1, n,
                         (time.perf_counter() - start) / (i + 1))
    finally:
        cv2.setNumThreads(threads)
    return boxes, counts


def cache_path(cache_dir: str | os.PathLike[str], split: str, *, max_proposals: int = 500,
               mode: str = "fast", min_size: float = 2.0) -> Path:
    """``<cache_dir>/proposals_<mode>_<P>_min<min_size>/<split>.npz``."""
    return Path(cache_dir) / f"proposals_{mode}_{max_proposals}_min{min_size:g}" / f"{split}.npz"


def load_or_compute(
    source: Sequence[Any],
    split: str,
    cache_dir: str | os.PathLike[str],
    max_proposals: int = 500,
    mode: str = "fast",
    min_size: float = 2.0,
) -> tuple[np.ndarray, np.ndarray]:
    """The split's proposals from the cache, computed and cached the first time (module docstring).

    Returns ``(boxes [N, P, 4] float32 (x1, y1, x2, y2) absolute pixels, zeros on padding,
    valid [N, P] bool)``, ``N = len(source)``, valid rows first.
    """
    _check(mode, max_proposals)
    path = cache_path(cache_dir, split, max_proposals=max_proposals, mode=mode,
                      min_size=min_size)
    n = len(source)
    boxes = counts = None
    if path.exists():
        with np.load(path) as data:
            if (int(data["version"]) == _CACHE_VERSION and data["boxes"].shape[0] == n
                    and data["boxes"].shape[1] == max_proposals):
                boxes, counts = data["boxes"], data["counts"]
            else:
                log.warning("%s does not match %d images / P=%d: recomputing", path, n,
                            max_proposals)
    if boxes is None or counts is None:
        start = time.perf_counter()
        boxes, counts = compute_proposals(source, max_proposals=max_proposals, mode=mode,
                                          min_size=min_size)
        log.info("selective search (%s) on %d %s images: %.1f s", mode, n, split,
                 time.perf_counter() - start)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, boxes=boxes.astype(np.float32), counts=counts.astype(np.int32),
                         version=np.int32(_CACHE_VERSION), mode=np.str_(mode),
                         min_size=np.float32(min_size))
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    valid = np.arange(max_proposals)[None, :] < np.asarray(counts)[:, None]
    return np.asarray(boxes, np.float32), valid
