"""Shared machinery of the local-dataset converters (coco, voc, segmentation_folder).

A folder is converted ONCE to TFDS ArrayRecord under
``<data_dir>/<builder>/<folder name>_<hash>/<version>`` (hash of the options and of every
annotation, label, split and image file's path, size and mtime: editing, adding or removing any
of them converts again) and read with ``builder.as_data_source()``. TFDS
writes into ``incomplete.*`` and renames when done, so an interrupted conversion reruns.
A :class:`BadRecord` stops the conversion naming file, record and problem; with
``skip_bad_records=True`` the record (one image) is skipped and counted in metadata
``skipped`` ``{split: {reason: count}}``.
"""

from __future__ import annotations

import collections
import hashlib
import io
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import PIL.Image

from jaxdet.core import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")

#: Reasons a record is bad; the keys of the per-reason skip counts.
REASONS = ("malformed_record", "bad_box", "missing_image", "unreadable_image",
           "label_out_of_range", "size_mismatch", "unknown_class", "missing_label")


class BadRecord(UserError, ValueError):
    """One bad record: ``str(error)`` is ``"<file>: <record>: <problem>"``; ``reason`` is one of
    :data:`REASONS` (else ValueError).
    """

    def __init__(self, file: str, record: str, reason: str, problem: str):
        if reason not in REASONS:
            raise ValueError(f"unknown bad-record reason {reason!r}")
        super().__init__(f"{file}: {record}: {problem}")
        self.file, self.record, self.reason, self.problem = file, record, reason, problem


class SkipLog:
    """Counts skipped records per split and reason (or re-raises when not skipping)."""

    def __init__(self, skip_bad_records: bool):
        self.skip = bool(skip_bad_records)
        self.counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)

    def handle(self, split: str, error: BadRecord) -> None:
        if not self.skip:
            raise error
        self.counts[split][error.reason] += 1
        logging.warning("skipping bad record: %s", error)

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {split: dict(sorted(c.items())) for split, c in sorted(self.counts.items())}

    def report(self, name: str, split: str) -> None:
        counts = self.as_dict().get(split)
        if counts:
            logging.warning("%s: skipped %d bad records of split %s: %s", name,
                            sum(counts.values()), split, counts)


def fingerprint(options: Mapping[str, Any], files: Iterable[str],
                root: str | None = None) -> str:
    """10 hex digits over ``options`` (JSON) and each file's name (relative to ``root``, else
    the base name), size and mtime."""
    digest = hashlib.sha1(json.dumps(options, sort_keys=True, default=str).encode())
    for path in sorted(set(files)):
        stat = os.stat(path)
        name = os.path.relpath(path, root) if root else os.path.basename(path)
        digest.update(f"{name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()[:10]


def files_under(directory: str) -> list[str]:
    """Every regular file below ``directory`` (recursively; [] if it does not exist)."""
    out = []
    for parent, _, names in os.walk(directory):
        out.extend(os.path.join(parent, name) for name in names)
    return out


def config_name(path: str, digest: str) -> str:
    base = "".join(c if c.isalnum() else "_" for c in os.path.basename(os.path.normpath(path)))
    return f"{base or 'data'}_{digest}"


def find_image(directory: str, stem_or_name: str) -> str | None:
    """``directory/stem_or_name`` if it exists, else the first ``stem + ext`` that does (None if
    none; :func:`image_candidates` names what was looked for)."""
    exact = os.path.join(directory, stem_or_name)
    if os.path.splitext(stem_or_name)[1] and os.path.isfile(exact):
        return exact
    stem = os.path.splitext(stem_or_name)[0] if os.path.splitext(stem_or_name)[1].lower() in (
        IMAGE_EXTENSIONS) else stem_or_name
    for ext in IMAGE_EXTENSIONS + tuple(e.upper() for e in IMAGE_EXTENSIONS):
        candidate = os.path.join(directory, stem + ext)
        if os.path.isfile(candidate):
            return candidate
    return None


def image_candidates(directory: str, stem_or_name: str) -> str:
    """What :func:`find_image` looks for, for messages: ``dir/name`` or ``dir/stem.{jpg,...}``."""
    stem, ext = os.path.splitext(stem_or_name)
    if ext.lower() not in IMAGE_EXTENSIONS:
        stem = stem_or_name
    exts = ",".join(e.lstrip(".") for e in IMAGE_EXTENSIONS)
    return os.path.join(directory, f"{stem_or_name} (or {stem}.{{{exts}}})" if ext else
                        f"{stem}.{{{exts}}}")


def read_image(path: str | None, file: str, record: str,
               looked_for: str | None = None) -> tuple[bytes, int, int]:
    """An image file as ``(encoded bytes, height, width)`` for ``tfds.features.Image``: RGB
    JPEG/PNG stored as is, anything else converted to RGB PNG. Raises :class:`BadRecord`
    (``missing_image``, naming ``looked_for`` when ``path`` is None / ``unreadable_image``).
    """
    if path is None or not os.path.isfile(path):
        raise BadRecord(file, record, "missing_image",
                        f"image file {path or looked_for} not found")
    try:
        with open(path, "rb") as f:
            data = f.read()
        image = PIL.Image.open(io.BytesIO(data))
        image.load()
    except Exception as e:  # PIL raises several types for truncated / non-image files
        raise BadRecord(file, record, "unreadable_image",
                        f"image file {path} is unreadable ({type(e).__name__}: {e})") from e
    width, height = image.size
    if image.format in ("JPEG", "PNG") and image.mode == "RGB":
        return data, height, width
    return png(np.asarray(image.convert("RGB"))), height, width


def png(array: np.ndarray) -> bytes:
    """PNG bytes of a uint8 ``[H, W]`` or ``[H, W, C]`` array."""
    buffer = io.BytesIO()
    image = array[..., 0] if array.ndim == 3 and array.shape[-1] == 1 else array
    PIL.Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def split_by_ratio(names: Sequence[str], val_fraction: float, seed: int
                   ) -> dict[str, list[str]]:
    """``{"train": [...], "validation": [...]}``: a ``seed``-ed permutation of the sorted names cut
    at ``round(val_fraction * n)`` (>= 1 validation name if ``val_fraction > 0`` and ``n >= 2``);
    each split sorted.
    """
    names = sorted(names)
    order = np.random.default_rng(seed).permutation(len(names))
    n_val = int(round(val_fraction * len(names)))
    if val_fraction > 0 and len(names) >= 2:
        n_val = min(max(n_val, 1), len(names) - 1)
    val = sorted(names[i] for i in order[:n_val])
    train = sorted(names[i] for i in order[n_val:])
    return {"train": train, "validation": val}


def read_split_files(directory: str, files: Mapping[str, str]) -> dict[str, list[str]] | None:
    """``{split: [stem, ...]}`` from ``directory/<file>`` (one stem per line, VOC's ``ImageSets``),
    or None when none exists.
    """
    if not directory or not os.path.isdir(directory):
        return None
    out = {}
    for split, name in files.items():
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            with open(path) as f:
                out[split] = [line.split()[0] for line in f if line.strip()]
    return out or None


class FitToSquare:
    """A source whose images are scaled (bilinear) by ``s = min(size / H, size / W)`` and
    zero-padded bottom/right to ``[size, size, 3]``; boxes / areas / keypoints scaled, masks
    nearest (pad 0), ``segmentation`` nearest (pad ``ignore_index``); square examples unchanged.
    """

    def __init__(self, source: Sequence[Mapping[str, Any]], size: int, ignore_index: int = 255):
        self.source, self.size, self.ignore_index = source, int(size), int(ignore_index)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return fit_to_square(self.source[index], self.size, self.ignore_index)


def _resize(array: np.ndarray, hw: tuple[int, int], resample: int) -> np.ndarray:
    return np.asarray(PIL.Image.fromarray(array).resize((hw[1], hw[0]), resample))


def _pad(array: np.ndarray, size: int, value: int) -> np.ndarray:
    out = np.full((size, size, *array.shape[2:]), value, array.dtype)
    out[:array.shape[0], :array.shape[1]] = array
    return out


def fit_to_square(example: Mapping[str, Any], size: int, ignore_index: int = 255
                  ) -> dict[str, Any]:
    """One example of :class:`FitToSquare`."""
    image = np.asarray(example["image"])
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return dict(example)
    scale = min(size / h, size / w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    out = dict(example)
    out["image"] = _pad(_resize(image, (nh, nw), PIL.Image.BILINEAR), size, 0)
    if "segmentation" in example:
        seg = np.asarray(example["segmentation"])[..., 0]
        out["segmentation"] = _pad(_resize(seg, (nh, nw), PIL.Image.NEAREST), size,
                                   ignore_index)[..., None]
    if "objects" in example:
        objects = dict(example["objects"])
        sx, sy = nw / w, nh / h
        if "bbox" in objects:
            objects["bbox"] = (np.asarray(objects["bbox"], np.float32).reshape(-1, 4)
                               * np.float32([sx, sy, sx, sy]))
        if "area" in objects:
            objects["area"] = (np.asarray(objects["area"]) * (sx * sy)).astype(
                np.asarray(objects["area"]).dtype)
        if "keypoints" in objects:
            kp = np.asarray(objects["keypoints"], np.float32).copy()
            kp[..., 0] *= sx
            kp[..., 1] *= sy
            objects["keypoints"] = kp
        if "mask" in objects:
            masks = np.asarray(objects["mask"], np.uint8)
            objects["mask"] = np.stack(
                [_pad(_resize(m[..., 0], (nh, nw), PIL.Image.NEAREST), size, 0)
                 for m in masks])[..., None] if len(masks) else np.zeros(
                (0, size, size, 1), np.uint8)
        out["objects"] = objects
    return out


class DropObjects:
    """A detection source leaving out the objects flagged by any of ``flags`` (e.g. ``is_crowd``,
    ``difficult``) from every ``objects/*`` field; absent flags are ignored.
    """

    def __init__(self, source: Sequence[Mapping[str, Any]], flags: Sequence[str]):
        self.source, self.flags = source, tuple(flags)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict[str, Any]:
        example = self.source[index]
        objects = example["objects"]
        n = len(np.asarray(objects["label"]).reshape(-1))
        drop = np.zeros(n, bool)
        for flag in self.flags:
            if flag in objects:
                drop |= np.asarray(objects[flag], bool).reshape(-1)
        if not drop.any():
            return example
        keep = ~drop
        return {**example, "objects": {k: np.asarray(v)[keep] for k, v in objects.items()}}
