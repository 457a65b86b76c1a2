"""COCO-format detection data (``instances_*.json`` / ``person_keypoints_*.json`` + images)
converted once into TFDS (:func:`build`); and TFDS's ``coco/2017`` from a local data dir.

Layout (``path`` = ``config.data.path``)::

    path/annotations/instances_train2017.json         # and/or person_keypoints_train2017.json
    path/annotations/instances_val2017.json
    path/train2017/000000000009.jpg                   # or path/images/train2017/, path/images/
    path/val2017/...

Splits: ``splits`` (name -> file suffix; default all found, ``train*`` / ``val*`` ->
``train`` / ``validation``). Keypoints join from ``person_keypoints_*`` by annotation id;
``instances=False`` reads those files alone. Boxes ``[x, y, w, h]`` -> absolute ``(x, y,
x + w, y + h)``, clipped within ``BORDER_TOLERANCE`` px (else bad record; empty: dropped,
metadata ``dropped``). Labels: categories by id -> 0-based (``class_names``,
``category_ids``); ``category_labels="ids"``: ``id - 1`` over ``1 .. max id`` (torchvision's).
Masks: full-image 0/1. Keypoints ``(x, y, v)`` shifted ``+ 0.5`` (pixel centres), unlabelled
zeros; metadata ``keypoint_names``, ``skeleton``. Images ordered by id, empty ones kept.

Example: ``image`` uint8 ``[H, W, 3]``; ``objects/bbox`` float32 ``[N, 4]``, ``label`` int64,
``is_crowd``, ``area`` (COCO's), ``id``, optional ``mask`` uint8 ``[N, H, W, 1]`` /
``keypoints`` ``[N, K, 3]``; ``image_id`` (index), ``coco_id``, ``file_name``. Bad records:
``malformed_record``, ``bad_box``, ``missing_image``, ``unreadable_image``, ``size_mismatch``;
malformed JSON always stops. :func:`tfds_coco`: prepared TFDS ``coco/2017`` (no masks).
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from pycocotools import mask as mask_utils

from jaxdet.data import local_tfds, tfds_build
from jaxdet.data.local_tfds import BadRecord

#: A box may reach this far (pixels) past the image and is clipped to it; further is bad.
BORDER_TOLERANCE = 1.0


def _patterns(instances: bool = True) -> tuple[str, ...]:
    return ("instances_*.json",) * bool(instances) + ("person_keypoints_*.json",)


def find_splits(path: str, annotation_dir: str = "annotations",
                instances: bool = True) -> dict[str, str]:
    """``{split name: file suffix}`` of the annotation files under ``path/annotation_dir``
    (``instances=False``: ``person_keypoints_*`` only).
    """
    out = {}
    for pattern in _patterns(instances):
        for file in sorted(glob.glob(os.path.join(path, annotation_dir, pattern))):
            suffix = os.path.basename(file)[len(pattern) - 6:-5]
            name = ("train" if suffix.startswith("train") else
                    "validation" if suffix.startswith("val") else suffix)
            out.setdefault(name, suffix)
    return out


def load_json(file: str) -> dict[str, Any]:
    """A COCO JSON file; malformed JSON or missing top-level lists -> :class:`BadRecord`."""
    try:
        with open(file) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise BadRecord(file, "JSON", "malformed_record", f"malformed JSON ({e})") from e
    for key in ("images", "annotations", "categories"):
        if not isinstance(data, dict) or not isinstance(data.get(key), list):
            raise BadRecord(file, "JSON", "malformed_record", f"no {key!r} list")
    return data


def decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """``[H, W]`` uint8 0/1 mask of a COCO polygon list or (un)compressed RLE; else ValueError."""
    if isinstance(segmentation, list):
        if not segmentation:
            return np.zeros((height, width), np.uint8)
        if not all(isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0
                   and all(isinstance(v, (int, float)) for v in p) for p in segmentation):
            raise ValueError("polygons must be lists of >= 3 (x, y) number pairs")
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation, dict) and "counts" in segmentation:
        if list(segmentation.get("size", [])) != [height, width]:
            raise ValueError(f"RLE size {segmentation.get('size')} is not the image's "
                             f"[{height}, {width}]")
        counts = segmentation["counts"]
        if isinstance(counts, list):
            if sum(counts) != height * width:
                raise ValueError(f"RLE counts sum to {sum(counts)}, not {height}*{width}")
            rle = mask_utils.frPyObjects(segmentation, height, width)
        elif isinstance(counts, (str, bytes)):
            rle = {"size": [height, width],
                   "counts": counts.encode() if isinstance(counts, str) else counts}
        else:
            raise ValueError("RLE counts must be a list or a string")
    else:
        raise ValueError(f"segmentation of type {type(segmentation).__name__}")
    return np.asarray(mask_utils.decode(rle), np.uint8).reshape(height, width)


@dataclasses.dataclass(eq=False)
class CocoConfig(tfds.core.BuilderConfig):
    """Options of one COCO-format conversion; build with :func:`build`."""

    path: str = ""
    annotation_dir: str = "annotations"
    splits: tuple[tuple[str, str], ...] = ()  # (split name, file suffix)
    masks: bool = True
    keypoints: bool = True
    skip_bad_records: bool = False
    instances: bool = True  # False: person_keypoints_*.json only
    category_labels: str = "contiguous"  # or "ids": label = COCO category_id - 1

    def files(self, suffix: str) -> tuple[str | None, str | None]:
        """(instances file, person_keypoints file) of a suffix, None where absent/unused."""
        ann = os.path.join(self.path, self.annotation_dir)
        inst = os.path.join(ann, f"instances_{suffix}.json")
        kps = os.path.join(ann, f"person_keypoints_{suffix}.json")
        return (inst if self.instances and os.path.isfile(inst) else None,
                kps if self.keypoints and os.path.isfile(kps) else None)

    def image_dir(self, suffix: str) -> str:
        return image_dir(self.path, suffix)


def image_dir(path: str, suffix: str) -> str:
    """The image folder of split ``suffix``: ``path/suffix``, ``path/images/suffix`` or
    ``path/images``, the first that exists (else ``path/suffix``)."""
    for candidate in (os.path.join(path, suffix), os.path.join(path, "images", suffix),
                      os.path.join(path, "images")):
        if os.path.isdir(candidate):
            return candidate
    return os.path.join(path, suffix)


class _Split:
    """One split's parsed JSON: images by id, annotations by image, keypoints by ann id."""

    def __init__(self, config: CocoConfig, suffix: str):
        inst_file, kps_file = config.files(suffix)
        if inst_file is None and kps_file is None:
            raise FileNotFoundError(
                f"no instances_{suffix}.json or person_keypoints_{suffix}.json under "
                f"{os.path.join(config.path, config.annotation_dir)}")
        self.file = inst_file or kps_file
        main = load_json(self.file)
        kps = load_json(kps_file) if kps_file and kps_file != self.file else None
        self.categories = main["categories"] + (kps["categories"] if kps else [])
        self.images = main["images"]
        self.annotations = main["annotations"]
        self.keypoints_by_ann: dict[int, list] = {}
        for ann in (kps or main)["annotations"] if kps_file else []:
            if isinstance(ann, dict) and "keypoints" in ann and "id" in ann:
                self.keypoints_by_ann[ann["id"]] = ann["keypoints"]
        self.num_keypoints = 0
        self.keypoint_names: list[str] = []
        self.skeleton: list[list[int]] = []
        for cat in (kps or main)["categories"] if kps_file else []:
            if cat.get("keypoints"):
                self.keypoint_names = list(cat["keypoints"])
                self.num_keypoints = len(cat["keypoints"])
                self.skeleton = [[a - 1, b - 1] for a, b in cat.get("skeleton", [])]


def _categories(splits: Mapping[str, _Split]) -> list[dict[str, Any]]:
    by_id: dict[int, str] = {}
    for split in splits.values():
        for cat in split.categories:
            if not isinstance(cat, dict) or "id" not in cat or "name" not in cat:
                raise BadRecord(split.file, f"category {cat}", "malformed_record",
                                "a category needs 'id' and 'name'")
            if by_id.setdefault(int(cat["id"]), cat["name"]) != cat["name"]:
                raise BadRecord(split.file, f"category {cat['id']}", "malformed_record",
                                f"named {cat['name']!r} here, {by_id[int(cat['id'])]!r} before")
    return [{"id": i, "name": by_id[i]} for i in sorted(by_id)]


class JaxdetCoco(tfds.core.GeneratorBasedBuilder):
    """A COCO-format directory (module docstring), converted locally."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First version."}

    def _info(self) -> tfds.core.DatasetInfo:
        config = self.builder_config  # features from the options only: no JSON parsed here
        objects = {
            "bbox": tfds.features.Tensor(shape=(None, 4), dtype=np.float32,
                                         doc="absolute (x1, y1, x2, y2) pixels"),
            "label": tfds.features.Tensor(shape=(None,), dtype=np.int64),
            "is_crowd": tfds.features.Tensor(shape=(None,), dtype=np.bool_),
            "area": tfds.features.Tensor(shape=(None,), dtype=np.float32),
            "id": tfds.features.Tensor(shape=(None,), dtype=np.int64),
        }
        if config.masks:
            objects["mask"] = tfds.features.Tensor(
                shape=(None, None, None, 1), dtype=np.uint8,
                encoding=tfds.features.Encoding.ZLIB, doc="0/1 full-image instance masks")
        if config.keypoints:
            objects["keypoints"] = tfds.features.Tensor(
                shape=(None, None, 3), dtype=np.float32, encoding=tfds.features.Encoding.ZLIB,
                doc="(x, y, v), +0.5 pixel centres")
        return tfds.core.DatasetInfo(
            builder=self, description=self.__doc__,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3), doc="uint8 RGB"),
                "objects": tfds.features.FeaturesDict(objects),
                "image_id": tfds.features.Scalar(dtype=np.int64),
                "coco_id": tfds.features.Scalar(dtype=np.int64),
                "file_name": tfds.features.Text(),
            }),
            metadata=tfds.core.MetadataDict(),
            disable_shuffling=True)

    def _split_generators(self, dl_manager) -> dict[str, Any]:
        del dl_manager
        config = self.builder_config
        splits = {name: _Split(config, suffix) for name, suffix in config.splits}
        categories = _categories(splits)
        if config.category_labels == "ids" and categories:
            names = {c["id"]: c["name"] for c in categories}
            categories = [{"id": i, "name": names.get(i, f"unused_{i}")}
                          for i in range(1, max(names) + 1)]
        keypointed = [s for s in splits.values() if s.num_keypoints]
        meta = self.info.metadata
        meta["class_names"] = [c["name"] for c in categories]
        meta["category_ids"] = [c["id"] for c in categories]
        meta["keypoint_names"] = keypointed[0].keypoint_names if keypointed else []
        meta["skeleton"] = keypointed[0].skeleton if keypointed else []
        log = local_tfds.SkipLog(config.skip_bad_records)
        self._dropped: dict[str, collections.Counter] = collections.defaultdict(
            collections.Counter)
        return {name: self._generate_examples(name, split, log)
                for name, split in splits.items() if split.images}

    def _generate_examples(self, name: str, split: _Split, log: local_tfds.SkipLog):
        config = self.builder_config
        label_of = {cid: k for k, cid in enumerate(self.info.metadata["category_ids"])}
        with_masks = config.masks
        num_kp = split.num_keypoints if config.keypoints else None
        anns_by_image: dict[Any, list] = collections.defaultdict(list)
        image_ids = {img.get("id") for img in split.images if isinstance(img, dict)}
        for ann in split.annotations:
            image_id = ann.get("image_id") if isinstance(ann, dict) else None
            if image_id not in image_ids:
                log.handle(name, BadRecord(split.file, f"annotation {_ann_id(ann)}",
                                           "malformed_record",
                                           f"image_id {image_id!r} is not in 'images'"))
                continue
            anns_by_image[image_id].append(ann)
        images = sorted((img for img in split.images if isinstance(img, dict)),
                        key=lambda img: (str(type(img.get("id"))), img.get("id")))
        index, kept = 0, []
        for img in images:
            try:
                example = self._example(split, img, anns_by_image[img.get("id")], label_of,
                                        with_masks, num_kp, config, name)
            except BadRecord as e:
                log.handle(name, e)
                continue
            example["image_id"] = index
            kept.append(img)
            yield index, example
            index += 1
        # the dataset's own ids of example 0, 1, ... (results files are written in them)
        self.info.metadata.setdefault("image_ids", {})[name] = [int(i["id"]) for i in kept]
        self.info.metadata.setdefault("file_names", {})[name] = [str(i.get("file_name", ""))
                                                                 for i in kept]
        self.info.metadata["skipped"] = log.as_dict()
        self.info.metadata["dropped"] = {k: dict(v) for k, v in sorted(self._dropped.items())}
        log.report(f"COCO {config.path}", name)
        if self._dropped.get(name):
            logging.warning("COCO %s %s: dropped objects %s", config.path, name,
                            dict(self._dropped[name]))

    def _example(self, split: _Split, img: Mapping[str, Any], anns: Sequence[Any],
                 label_of: Mapping[int, int], with_masks: bool, num_kp: int | None,
                 config: CocoConfig, name: str) -> dict[str, Any]:
        record = f"image {img.get('file_name')!r} (id {img.get('id')})"
        for key in ("id", "file_name", "height", "width"):
            if key not in img:
                raise BadRecord(split.file, record, "malformed_record", f"image has no {key!r}")
        suffix = dict(config.splits)[name]
        image_path = os.path.join(config.image_dir(suffix), img["file_name"])
        data, h, w = local_tfds.read_image(image_path, split.file, record)
        if (h, w) != (int(img["height"]), int(img["width"])):
            raise BadRecord(split.file, record, "size_mismatch",
                            f"JSON says {img['width']}x{img['height']} (WxH), image file "
                            f"{image_path} is {w}x{h}")
        boxes, labels, crowd, areas, ids, masks, kps = [], [], [], [], [], [], []
        for ann in anns:
            where = f"{record} annotation {_ann_id(ann)}"
            box = _box(ann, h, w, split.file, where)
            if ann.get("category_id") not in label_of:
                raise BadRecord(split.file, where, "malformed_record",
                                f"category_id {ann.get('category_id')!r} not in 'categories'")
            if box is None:  # zero width or height
                self._dropped[name]["empty_box"] += 1
                continue
            boxes.append(box)
            labels.append(label_of[ann["category_id"]])
            crowd.append(bool(ann.get("iscrowd", 0)))
            areas.append(float(ann.get("area", (box[2] - box[0]) * (box[3] - box[1]))))
            ids.append(int(ann.get("id", -1)))
            if with_masks:
                try:
                    masks.append(decode_segmentation(ann.get("segmentation", []), h, w))
                except (ValueError, TypeError) as e:
                    raise BadRecord(split.file, where, "malformed_record",
                                    f"bad segmentation: {e}") from e
            if num_kp is not None:
                kps.append(_keypoints(split.keypoints_by_ann.get(ann.get("id"),
                                                                 ann.get("keypoints")),
                                      num_kp, split.file, where))
        n = len(boxes)
        objects = {
            "bbox": np.asarray(boxes, np.float32).reshape(n, 4),
            "label": np.asarray(labels, np.int64),
            "is_crowd": np.asarray(crowd, bool),
            "area": np.asarray(areas, np.float32),
            "id": np.asarray(ids, np.int64),
        }
        if with_masks:
            objects["mask"] = (np.stack(masks)[..., None] if n
                               else np.zeros((0, h, w, 1), np.uint8))
        if num_kp is not None:
            objects["keypoints"] = np.asarray(kps, np.float32).reshape(n, num_kp, 3)
        return {"image": data, "objects": objects, "coco_id": int(img["id"]),
                "file_name": os.path.basename(img["file_name"])}


def _ann_id(ann: Any) -> Any:
    return ann.get("id", "?") if isinstance(ann, dict) else "?"


def _box(ann: Any, h: int, w: int, file: str, where: str
         ) -> tuple[float, float, float, float] | None:
    """COCO xywh -> clipped xyxy (module docstring); None when it is empty after clipping."""
    bbox = ann.get("bbox") if isinstance(ann, dict) else None
    if (not isinstance(bbox, list) or len(bbox) != 4 or not all(
            isinstance(v, (int, float)) and math.isfinite(v) for v in bbox)):
        raise BadRecord(file, where, "malformed_record", f"bbox {bbox!r} is not 4 numbers")
    x, y, bw, bh = (float(v) for v in bbox)
    if bw < 0 or bh < 0:
        raise BadRecord(file, where, "bad_box", f"bbox {bbox} has x2 < x1 or y2 < y1")
    x1, y1, x2, y2 = x, y, x + bw, y + bh
    t = BORDER_TOLERANCE
    if x1 < -t or y1 < -t or x2 > w + t or y2 > h + t:
        raise BadRecord(file, where, "bad_box",
                        f"bbox {bbox} (x1, y1, x2, y2 = {x1:g}, {y1:g}, {x2:g}, {y2:g}) is "
                        f"outside the {w}x{h} (WxH) image")
    x1, x2 = min(max(x1, 0.0), w), min(max(x2, 0.0), w)
    y1, y2 = min(max(y1, 0.0), h), min(max(y2, 0.0), h)
    return None if x2 <= x1 or y2 <= y1 else (x1, y1, x2, y2)


def _keypoints(values: Any, num_kp: int, file: str, where: str) -> np.ndarray:
    if values is None:
        return np.zeros((num_kp, 3), np.float32)
    if not isinstance(values, list) or len(values) != 3 * num_kp:
        raise BadRecord(file, where, "malformed_record",
                        f"keypoints must be {3 * num_kp} numbers, got "
                        f"{len(values) if isinstance(values, list) else values!r}")
    kp = np.asarray(values, np.float32).reshape(num_kp, 3)
    labelled = kp[:, 2] > 0
    kp[labelled, :2] += 0.5
    kp[~labelled] = 0.0
    return kp


def build(path: str, data_dir: str, *, splits: Mapping[str, str] | None = None,
          annotation_dir: str = "annotations", masks: bool = True, keypoints: bool = True,
          skip_bad_records: bool = False, instances: bool = True,
          category_labels: str = "contiguous") -> JaxdetCoco:
    """Convert the COCO-format directory ``path`` under ``data_dir`` unless done (module docstring).

    Read with ``builder.as_data_source()[split]``; ``builder.info.metadata``: ``class_names``,
    ``category_ids``, ``keypoint_names``, ``skeleton``, ``skipped``, ``dropped``. Raises
    FileNotFoundError when no annotation file is found, ValueError on other ``category_labels``
    than ``"contiguous"`` / ``"ids"``.
    """
    if category_labels not in ("contiguous", "ids"):
        raise ValueError(f"category_labels={category_labels!r}; expected 'contiguous' or 'ids'")
    path = os.path.abspath(os.path.expanduser(path))
    splits = dict(splits) if splits else find_splits(path, annotation_dir, instances)
    if not splits:
        raise FileNotFoundError(
            f"no COCO annotation files {os.path.join(path, annotation_dir)}/instances_*.json "
            "or person_keypoints_*.json")
    has_keypoints = any(os.path.isfile(os.path.join(
        path, annotation_dir, f"person_keypoints_{suffix}.json")) for suffix in splits.values())
    options = dict(annotation_dir=annotation_dir, splits=sorted(splits.items()),
                   masks=bool(masks), keypoints=bool(keypoints) and has_keypoints,
                   skip_bad_records=bool(skip_bad_records),
                   # only when off: the folders converted before this option keep their names
                   **({} if instances else {"instances": False}),
                   **({} if category_labels == "contiguous" else
                      {"category_labels": category_labels}))
    ann_files = [f for pattern in _patterns(instances)
                 for f in glob.glob(os.path.join(path, annotation_dir, pattern))]
    image_files = [f for suffix in sorted(set(splits.values()))
                   for f in local_tfds.files_under(image_dir(path, suffix))]
    digest = local_tfds.fingerprint({"path": path, **options}, ann_files + image_files,
                                    root=path)
    config = CocoConfig(name=local_tfds.config_name(path, digest), path=path,
                        description=f"COCO-format folder {path}",
                        **{**options, "splits": tuple(sorted(splits.items()))})
    return tfds_build.prepare(JaxdetCoco, config, data_dir)


class TfdsCocoSource:
    """TFDS ``coco/2017`` examples in this module's format (absolute ``(x1, y1, x2, y2)`` boxes,
    ``label``, ``is_crowd``, ``coco_id`` from ``image/id``, ``image_id`` the index).
    """

    def __init__(self, source: Sequence[Mapping[str, Any]]):
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict[str, Any]:
        ex = self.source[index]
        image = np.asarray(ex["image"])
        h, w = image.shape[:2]
        yx = np.asarray(ex["objects"]["bbox"], np.float32).reshape(-1, 4)
        bbox = yx[:, [1, 0, 3, 2]] * np.float32([w, h, w, h])
        return {"image": image, "image_id": index, "coco_id": int(ex["image/id"]),
                "objects": {"bbox": bbox,
                            "label": np.asarray(ex["objects"]["label"], np.int64),
                            "is_crowd": np.asarray(ex["objects"]["is_crowd"], bool)}}


def tfds_coco(data_dir: str, name: str = "coco/2017") -> tuple[dict[str, TfdsCocoSource],
                                                                list[str]]:
    """``({"train": ..., "validation": ...}, class names)`` of TFDS ``name`` prepared under
    ``data_dir``; FileNotFoundError naming the directory if not prepared (nothing downloaded).
    """
    data_dir = os.path.expanduser(data_dir)
    # Look before constructing the builder: TFDS's COCO builder imports TensorFlow (~20 s).
    pattern = os.path.join(data_dir, *name.split("/"), "*", "dataset_info.json")
    builder = tfds.builder(name, data_dir=data_dir) if glob.glob(pattern) else None
    if builder is None or not builder.is_prepared():
        raise FileNotFoundError(
            f"TFDS {name} is not prepared under {data_dir} (looked for {pattern}). "
            f"Prepare it where the COCO files are (tfds build {name} --data_dir={data_dir}, "
            "or --manual_dir with the downloaded zips) or point config.data.source='coco' "
            "at the unzipped COCO folder (annotations/ + train2017/ + val2017/).")
    sources = builder.as_data_source()
    return ({"train": TfdsCocoSource(sources["train"]),
             "validation": TfdsCocoSource(sources["validation"])},
            list(builder.info.features["objects"]["label"].names))
