"""Augmentations on raw examples (NumPy), consistent across image, boxes, masks and keypoints.

Random transforms take a NumPy ``Generator``; :class:`Augmented` seeds one per draw from
``(seed, position in the training stream)``: resumable, independent of the process count.

Fields: ``image`` ``[H, W, 3]``; ``segmentation`` ``[H, W, 1]``; ``objects/bbox`` ``[N, 4]``
(x1, y1, x2, y2) absolute continuous pixels (column ``j`` covers ``[j, j + 1)``);
``objects/mask`` ``[N, H, W, 1]``; ``objects/keypoints`` ``[N, K, 3]`` (x, y, v), ``v = 0``
rows zero; ``objects/area`` ``[N]`` (scaled, not recomputed after a crop). Dropped instances
lose their row in every ``objects/*`` field; other fields pass through.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import PIL.Image


def flip_pairs_from_names(names: Sequence[str]) -> list[tuple[int, int]]:
    """Index pairs ``(i, j)`` of keypoints named ``left_*`` / ``right_*`` (COCO's names)."""
    index = {n: i for i, n in enumerate(names)}
    return [(i, index["right_" + n[5:]]) for i, n in enumerate(names)
            if n.startswith("left_") and "right_" + n[5:] in index]


def hflip(example: Mapping[str, Any], flip_pairs: Sequence[tuple[int, int]] = ()
          ) -> dict[str, Any]:
    """``example`` mirrored left-right: boxes ``(W - x2, y1, W - x1, y2)``; labelled keypoints
    ``x -> W - x``, then each ``flip_pairs`` pair's rows swapped; image, masks, label map mirrored.
    """
    image = np.asarray(example["image"])
    w = image.shape[1]
    out = dict(example)
    out["image"] = image[:, ::-1].copy()
    if "segmentation" in example:
        out["segmentation"] = np.asarray(example["segmentation"])[:, ::-1].copy()
    if "objects" in example:
        objects = dict(example["objects"])
        if "bbox" in objects:
            boxes = np.asarray(objects["bbox"], np.float32).reshape(-1, 4)
            objects["bbox"] = np.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0],
                                        boxes[:, 3]], axis=1).astype(np.float32)
        if "mask" in objects:
            objects["mask"] = np.asarray(objects["mask"])[:, :, ::-1].copy()
        if "keypoints" in objects:
            kp = np.asarray(objects["keypoints"], np.float32).copy()
            labelled = kp[..., 2] > 0
            kp[..., 0] = np.where(labelled, w - kp[..., 0], kp[..., 0])
            for i, j in flip_pairs:
                kp[:, [i, j]] = kp[:, [j, i]]
            objects["keypoints"] = kp
        out["objects"] = objects
    return out


class FlipDoubled:
    """A source of ``2 N`` examples: ``i < N`` is ``source[i]``, ``N + i`` its :func:`hflip`; with
    the pipeline's shuffle every epoch sees each image once as is and once mirrored.
    """

    def __init__(self, source: Sequence[Mapping[str, Any]],
                 flip_pairs: Sequence[tuple[int, int]] = ()):
        self.source, self.flip_pairs = source, tuple(flip_pairs)

    def __len__(self) -> int:
        return 2 * len(self.source)

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = len(self.source)
        if not 0 <= index < 2 * n:
            raise IndexError(f"index {index} outside [0, {2 * n})")
        if index < n:
            return self.source[index]
        return hflip(self.source[index - n], self.flip_pairs)


# ---------------------------------------------------------------------------------------------
# Geometry: resize, crop, pad
# ---------------------------------------------------------------------------------------------


def shorter_side_size(h: int, w: int, short: int, max_size: int = 0) -> tuple[int, int]:
    """``(new_h, new_w)`` = ``round(s h)``, ``round(s w)`` (>= 1), ``s = short / min(h, w)`` lowered
    to ``max_size / max(h, w)`` if ``max_size > 0`` would be exceeded (detectron2's
    ``ResizeShortestEdge``).
    """
    scale = shorter_side_scale(h, w, short, max_size)
    return max(1, round(h * scale)), max(1, round(w * scale))


def shorter_side_scale(h: int, w: int, short: int, max_size: int = 0) -> float:
    """The scale of :func:`shorter_side_size`."""
    scale = short / min(h, w)
    if max_size > 0 and scale * max(h, w) > max_size:
        scale = max_size / max(h, w)
    return scale


def _nearest_index(size: int, new: int) -> np.ndarray:
    """Source index of each of ``new`` output pixels, nearest pixel centre (PIL's rule)."""
    return np.minimum(((np.arange(new) + 0.5) * (size / new)).astype(np.int64), size - 1)


def resize_crop(example: Mapping[str, Any], new_hw: tuple[int, int],
                window: tuple[int, int, int, int] | None = None,
                min_box_size: float = 1e-5) -> dict[str, Any]:
    """``example`` resized to ``new_hw``, then cut to ``window = (y0, x0, h, w)`` (default: all).

    Image bilinear, masks / ``segmentation`` nearest. Boxes scaled, shifted by ``(-x0, -y0)``,
    clipped; instances with a clipped side ``< min_box_size`` dropped; keypoints outside the
    window set to ``(0, 0, 0)``. ValueError if the window is not inside the resized image.
    """
    image = np.asarray(example["image"])
    h, w = image.shape[:2]
    nh, nw = int(new_hw[0]), int(new_hw[1])
    y0, x0, ch, cw = window if window is not None else (0, 0, nh, nw)
    if not (0 <= y0 and 0 <= x0 and y0 + ch <= nh and x0 + cw <= nw and ch > 0 and cw > 0):
        raise ValueError(f"window {window} is not inside the {nh}x{nw} resized image")
    out = dict(example)
    resized = image if (nh, nw) == (h, w) else np.asarray(
        PIL.Image.fromarray(image).resize((nw, nh), PIL.Image.BILINEAR))
    out["image"] = np.ascontiguousarray(resized[y0:y0 + ch, x0:x0 + cw])
    rows = _nearest_index(h, nh)[y0:y0 + ch]
    cols = _nearest_index(w, nw)[x0:x0 + cw]
    if "segmentation" in example:
        out["segmentation"] = np.asarray(example["segmentation"])[np.ix_(rows, cols)]
    if "objects" not in example:
        return out
    objects = dict(example["objects"])
    sx, sy = nw / w, nh / h
    n = len(np.asarray(objects["bbox"]).reshape(-1, 4)) if "bbox" in objects else None
    keep = None
    if "bbox" in objects:
        boxes = np.asarray(objects["bbox"], np.float64).reshape(-1, 4) * [sx, sy, sx, sy]
        boxes -= [x0, y0, x0, y0]
        boxes = np.clip(boxes, 0, [cw, ch, cw, ch])
        keep = ((boxes[:, 2] - boxes[:, 0]) >= min_box_size) & (
            (boxes[:, 3] - boxes[:, 1]) >= min_box_size)
        objects["bbox"] = boxes.astype(np.float32)
    if "area" in objects:
        area = np.asarray(objects["area"])
        objects["area"] = (area * (sx * sy)).astype(area.dtype)
    if "keypoints" in objects:
        kp = np.asarray(objects["keypoints"], np.float32).copy()
        kp[..., 0] = kp[..., 0] * sx - x0
        kp[..., 1] = kp[..., 1] * sy - y0
        inside = (kp[..., 2] > 0) & (kp[..., 0] >= 0) & (kp[..., 0] <= cw) & (
            kp[..., 1] >= 0) & (kp[..., 1] <= ch)
        objects["keypoints"] = np.where(inside[..., None], kp, 0).astype(np.float32)
    if "mask" in objects:
        masks = np.asarray(objects["mask"], np.uint8)
        objects["mask"] = masks[:, rows[:, None], cols[None, :]]
    if keep is not None and not keep.all():
        objects = {k: np.asarray(v)[keep] if np.ndim(v) and len(v) == n else v
                   for k, v in objects.items()}
    out["objects"] = objects
    return out


def resize_shorter_side(example: Mapping[str, Any], short: int, max_size: int = 0
                        ) -> dict[str, Any]:
    """``example`` resized to :func:`shorter_side_size` (:func:`resize_crop`)."""
    h, w = np.asarray(example["image"]).shape[:2]
    return resize_crop(example, shorter_side_size(h, w, short, max_size))


def scale_jitter_crop(example: Mapping[str, Any], rng: np.random.Generator,
                      out_hw: tuple[int, int], scale_range: tuple[float, float],
                      base_scale: float = 1.0) -> dict[str, Any]:
    """Scale by ``base_scale * f`` (``f`` uniform in ``scale_range``), then a uniformly placed
    window of at most ``out_hw`` (:func:`resize_crop`). Draws ``f``, row offset, column offset.
    """
    h, w = np.asarray(example["image"]).shape[:2]
    f = base_scale * float(rng.uniform(*scale_range))
    nh, nw = max(1, round(h * f)), max(1, round(w * f))
    ch, cw = min(nh, int(out_hw[0])), min(nw, int(out_hw[1]))
    y0 = int(rng.integers(0, nh - ch + 1))
    x0 = int(rng.integers(0, nw - cw + 1))
    return resize_crop(example, (nh, nw), (y0, x0, ch, cw))


def pad_to(example: Mapping[str, Any], hw: tuple[int, int], ignore_index: int = 255
           ) -> dict[str, Any]:
    """``example`` padded bottom/right to ``hw`` (image and masks 0, ``segmentation``
    ``ignore_index``) plus ``image_hw`` int32 ``[2]``, the unpadded ``(rows, columns)``. Boxes and
    keypoints unchanged. Raises ValueError if the image is larger than ``hw``.
    """
    image = np.asarray(example["image"])
    h, w = image.shape[:2]
    ph, pw = int(hw[0]), int(hw[1])
    if h > ph or w > pw:
        raise ValueError(f"a {h}x{w} image does not fit the {ph}x{pw} padded size")

    def pad(array: np.ndarray, value: int, axis: int = 0) -> np.ndarray:
        array = np.asarray(array)
        widths = [(0, 0)] * array.ndim
        widths[axis], widths[axis + 1] = (0, ph - h), (0, pw - w)
        return np.pad(array, widths, constant_values=value)

    out = dict(example)
    out["image"] = pad(image, 0)
    out["image_hw"] = np.asarray([h, w], np.int32)
    if "segmentation" in example:
        out["segmentation"] = pad(example["segmentation"], ignore_index)
    if "objects" in example and "mask" in example["objects"]:
        out["objects"] = {**example["objects"], "mask": pad(example["objects"]["mask"], 0, 1)}
    return out


# ---------------------------------------------------------------------------------------------
# Photometric
# ---------------------------------------------------------------------------------------------


def _grey(image: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma ``[H, W, 1]`` (torchvision's ``rgb_to_grayscale``)."""
    return (np.float32(0.299) * image[..., :1] + np.float32(0.587) * image[..., 1:2]
            + np.float32(0.114) * image[..., 2:3])


def adjust_colour(image: np.ndarray, brightness: float = 1.0, contrast: float = 1.0,
                  saturation: float = 1.0) -> np.ndarray:
    """uint8 ``[H, W, 3]`` with torchvision's ``ColorJitter`` order, each step clipped to [0, 255]
    (float32): brightness ``x b``; contrast ``(x - m) c + m`` (``m`` mean luma); saturation
    ``(x - g) s + g`` (``g`` pixel luma); rounded at the end.
    """
    x = np.asarray(image, np.float32)
    b, c, s = (np.float32(v) for v in (brightness, contrast, saturation))
    x = np.clip(x * b, 0, 255)
    mean = _grey(x).mean(dtype=np.float64).astype(np.float32)
    x = np.clip((x - mean) * c + mean, 0, 255)
    g = _grey(x)
    x = np.clip((x - g) * s + g, 0, 255)
    return np.rint(x).astype(np.uint8)


def photometric_jitter(example: Mapping[str, Any], rng: np.random.Generator, strength: float
                       ) -> dict[str, Any]:
    """:func:`adjust_colour` with brightness, contrast, saturation drawn (in that order) uniform in
    ``[1 - strength, 1 + strength]``.
    """
    b, c, s = rng.uniform(1 - strength, 1 + strength, 3)
    return {**example, "image": adjust_colour(example["image"], b, c, s)}


# ---------------------------------------------------------------------------------------------
# Instance limit, sources
# ---------------------------------------------------------------------------------------------


class InstanceLimit:
    """Keep the first ``max_instances`` rows of every ``objects/*`` field; ``images_truncated`` /
    ``instances_dropped`` are counted (thread-safe) and logged at powers of two (:meth:`report`).
    """

    def __init__(self, max_instances: int, name: str = ""):
        self.max_instances, self.name = int(max_instances), name
        self.images_truncated = self.instances_dropped = 0
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:  # picklable for input worker processes
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __call__(self, example: Mapping[str, Any]) -> Mapping[str, Any]:
        if "objects" not in example:
            return example
        objects = example["objects"]
        n = len(np.asarray(objects["label"]).reshape(-1))
        if n <= self.max_instances:
            return example
        with self._lock:
            self.images_truncated += 1
            self.instances_dropped += n - self.max_instances
            count = self.images_truncated
        if count & (count - 1) == 0:
            logging.warning("%s", self.report())
        g = self.max_instances
        return {**example, "objects": {k: np.asarray(v)[:g] if np.ndim(v) and len(v) == n
                                       else v for k, v in objects.items()}}

    def report(self) -> str:
        return (f"{self.name or 'data'}: {self.images_truncated} images had more than "
                f"max_instances={self.max_instances} objects; {self.instances_dropped} "
                "objects beyond the limit were left out")


class Mapped:
    """A random-access source whose examples are ``fn(source[index])`` (deterministic)."""

    def __init__(self, source: Sequence[Mapping[str, Any]],
                 fn: Callable[[Mapping[str, Any]], Mapping[str, Any]]):
        self.source, self.fn = source, fn

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> Mapping[str, Any]:
        return self.fn(self.source[index])


class Augmented:
    """A training source: :meth:`draw` ``(index, position)`` = ``transform(source[index],
    position)``, seeded by the global stream ``position``; ``source[index]`` draws at ``index``.
    """

    def __init__(self, source: Sequence[Mapping[str, Any]],
                 transform: Callable[[Mapping[str, Any], int], Mapping[str, Any]]):
        self.source, self.transform = source, transform
        # the training stream's order when the transform groups batches by bucket
        self.order = getattr(transform, "order", None)

    def __len__(self) -> int:
        return len(self.source)

    def draw(self, index: int, position: int) -> Mapping[str, Any]:
        return self.transform(self.source[index], int(position))

    def __getitem__(self, index: int) -> Mapping[str, Any]:
        return self.draw(index, index)


class GeometryTransform:
    """The configured chain of :mod:`jaxdet.data.sources`, one example at a time.

    Size from ``pad_sizes``: evaluation the last; training one per global batch of
    ``batch_size`` draws, from ``(seed, position // batch_size)``, or with ``order`` (a
    :class:`jaxdet.data.buckets.BucketedOrder`) the size of the batch's aspect-ratio bucket.
    Then scale (``short > 0``: :func:`shorter_side_size`, else fit; evaluation always fits),
    training
    :func:`scale_jitter_crop` and :func:`photometric_jitter`, :func:`pad_to`, ``limit``.
    Evaluation examples also carry ``orig_hw`` int32 ``[2]`` and ``orig_objects``. Training
    draws: ``default_rng((seed, position))`` for jitter, row, column, photometric factors.
    """

    def __init__(self, pad_sizes: Sequence[Sequence[int]], *, train: bool, seed: int = 0,
                 batch_size: int = 1, short: int = 0, max_size: int = 0,
                 scale_range: Sequence[float] = (), photometric: float = 0.0,
                 ignore_index: int = 255, limit: InstanceLimit | None = None,
                 order: Any = None):
        self.order = order  # a jaxdet.data.buckets.BucketedOrder: size by the batch's bucket
        self.sizes = [(int(s[0]), int(s[1])) for s in pad_sizes]
        if not self.sizes:
            raise ValueError("GeometryTransform needs at least one pad size")
        self.train, self.seed, self.batch_size = bool(train), int(seed), max(1, int(batch_size))
        self.short, self.max_size = int(short), int(max_size)
        self.scale_range = tuple(float(v) for v in scale_range)
        if self.scale_range and len(self.scale_range) != 2:
            raise ValueError(f"scale_range {scale_range}: expected (min, max)")
        self.photometric, self.ignore_index, self.limit = float(photometric), ignore_index, limit

    def size(self, position: int) -> tuple[int, int]:
        if not self.train or len(self.sizes) == 1:
            return self.sizes[-1]
        if self.order is not None:
            return self.sizes[self.order.locate(position)[1]]
        batch_rng = np.random.default_rng((self.seed, position // self.batch_size, 1))
        return self.sizes[int(batch_rng.integers(len(self.sizes)))]

    def __call__(self, example: Mapping[str, Any], position: int = 0) -> Mapping[str, Any]:
        ph, pw = self.size(position)
        h, w = np.asarray(example["image"]).shape[:2]
        fit = min(ph / h, pw / w)
        scale = shorter_side_scale(h, w, self.short, self.max_size) if self.short else fit
        if self.train:
            rng = np.random.default_rng((self.seed, position))
            out = scale_jitter_crop(example, rng, (ph, pw), self.scale_range or (1.0, 1.0),
                                    base_scale=scale)
            if self.photometric > 0:
                out = photometric_jitter(out, rng, self.photometric)
        else:
            scale = min(scale, fit)
            out = resize_crop(example, (min(ph, max(1, round(h * scale))),
                                        min(pw, max(1, round(w * scale)))))
            out["orig_hw"] = np.asarray([h, w], np.int32)
            if "objects" in example:
                out["orig_objects"] = example["objects"]
        out = pad_to(out, (ph, pw), self.ignore_index)
        return self.limit(out) if self.limit is not None else out
