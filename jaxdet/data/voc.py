"""Pascal VOC detection annotations (XML) converted once into a TFDS dataset.

Layouts (``path`` = ``config.data.path``): VOC2007 / VOC2012::

    path/Annotations/000005.xml
    path/JPEGImages/000005.jpg
    path/ImageSets/Main/train.txt    # one image stem per line -> split "train"
    path/ImageSets/Main/val.txt      # -> split "validation"

or flat ``image_dir`` + ``annotation_dir`` without split files (seeded split). Boxes: VOC's
1-based inclusive ``xmin..xmax`` -> absolute ``(xmin - 1, ymin - 1, xmax, ymax)``. Classes:
``class_names`` (unknown name: bad record), else all names found, sorted (VOC:
:data:`VOC_CLASSES`).

Example: ``image`` uint8 ``[H, W, 3]``; ``objects/bbox`` float32 ``[N, 4]``, ``label`` int64,
``difficult`` / ``truncated`` bool; ``image_id`` (sorted stems); ``file_name``. Bad records:
``malformed_record``, ``bad_box``, ``missing_image``, ``unreadable_image``, ``size_mismatch``,
``unknown_class``.
"""

from __future__ import annotations

import dataclasses
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from jaxdet.data import local_tfds, tfds_build
from jaxdet.data.local_tfds import BadRecord

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
               "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
               "sheep", "sofa", "train", "tvmonitor")
SPLIT_FILES = {"train": "train.txt", "validation": "val.txt"}


@dataclasses.dataclass
class VocObject:
    name: str
    box: tuple[float, float, float, float]  # (x1, y1, x2, y2) absolute pixels
    difficult: bool
    truncated: bool


@dataclasses.dataclass
class VocRecord:
    xml_path: str
    filename: str
    size: tuple[int, int] | None  # (height, width) from <size>, if any
    objects: list[VocObject]


def _text(node: ET.Element, tag: str, xml_path: str, record: str) -> str:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise BadRecord(xml_path, record, "malformed_record", f"missing <{tag}>")
    return child.text.strip()


def _number(node: ET.Element, tag: str, xml_path: str, record: str) -> float:
    text = _text(node, tag, xml_path, record)
    try:
        return float(text)
    except ValueError as e:
        raise BadRecord(xml_path, record, "malformed_record",
                        f"<{tag}> is {text!r}, not a number") from e


def _flag(node: ET.Element, tag: str) -> bool:
    child = node.find(tag)
    return child is not None and (child.text or "").strip() in ("1", "true", "True")


def parse_xml(xml_path: str) -> VocRecord:
    """One annotation file (boxes converted, not yet checked against the image); raises
    :class:`BadRecord` on malformed XML or tags.
    """
    stem = os.path.splitext(os.path.basename(xml_path))[0]
    try:
        root = ET.parse(xml_path).getroot()
    except (ET.ParseError, OSError) as e:
        raise BadRecord(xml_path, stem, "malformed_record", f"malformed XML ({e})") from e
    filename_node = root.find("filename")
    filename = (filename_node.text or "").strip() if filename_node is not None else ""
    size = None
    size_node = root.find("size")
    if size_node is not None and size_node.find("width") is not None:
        size = (int(_number(size_node, "height", xml_path, stem)),
                int(_number(size_node, "width", xml_path, stem)))
    objects = []
    for k, obj in enumerate(root.findall("object")):
        record = f"{stem} object {k}"
        name = _text(obj, "name", xml_path, record)
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise BadRecord(xml_path, record, "malformed_record", "missing <bndbox>")
        xmin, ymin, xmax, ymax = (_number(bndbox, t, xml_path, record)
                                  for t in ("xmin", "ymin", "xmax", "ymax"))
        objects.append(VocObject(name, (xmin - 1.0, ymin - 1.0, xmax, ymax),
                                 _flag(obj, "difficult"), _flag(obj, "truncated")))
    return VocRecord(xml_path, filename or stem, size, objects)


def _check_boxes(record: VocRecord, height: int, width: int) -> None:
    stem = os.path.splitext(os.path.basename(record.xml_path))[0]
    for k, obj in enumerate(record.objects):
        x1, y1, x2, y2 = obj.box
        where = f"{stem} object {k} ({obj.name})"
        vmin = f"xmin={x1 + 1:g} ymin={y1 + 1:g} xmax={x2:g} ymax={y2:g}"
        if x2 <= x1 or y2 <= y1:
            raise BadRecord(record.xml_path, where, "bad_box",
                            f"box {vmin} has xmax < xmin or ymax < ymin")
        if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
            raise BadRecord(record.xml_path, where, "bad_box",
                            f"box {vmin} is outside the {width}x{height} (WxH) image")


@dataclasses.dataclass(eq=False)
class VocConfig(tfds.core.BuilderConfig):
    """Options of one VOC conversion; build with :func:`build`."""

    path: str = ""
    image_dir: str = "JPEGImages"
    annotation_dir: str = "Annotations"
    split_dir: str = "ImageSets/Main"
    class_names: tuple[str, ...] = ()
    val_fraction: float = 0.1
    split_seed: int = 0
    skip_bad_records: bool = False

    def dir(self, sub: str) -> str:
        return os.path.join(self.path, sub)

    def splits(self) -> dict[str, list[str]]:
        """``{split: [stem, ...]}`` from the split files, else by the seeded ratio."""
        split = local_tfds.read_split_files(self.dir(self.split_dir), SPLIT_FILES)
        if split is not None:
            return split
        stems = [os.path.splitext(f)[0] for f in os.listdir(self.dir(self.annotation_dir))
                 if f.endswith(".xml")]
        return local_tfds.split_by_ratio(stems, self.val_fraction, self.split_seed)


class JaxdetVoc(tfds.core.GeneratorBasedBuilder):
    """A Pascal VOC-style detection folder (module docstring), converted locally."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First version."}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self, description=self.__doc__,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3), doc="uint8 RGB"),
                "objects": tfds.features.FeaturesDict({
                    "bbox": tfds.features.Tensor(shape=(None, 4), dtype=np.float32,
                                                 doc="absolute (x1, y1, x2, y2) pixels"),
                    "label": tfds.features.Tensor(shape=(None,), dtype=np.int64),
                    "difficult": tfds.features.Tensor(shape=(None,), dtype=np.bool_),
                    "truncated": tfds.features.Tensor(shape=(None,), dtype=np.bool_),
                }),
                "image_id": tfds.features.Scalar(dtype=np.int64),
                "file_name": tfds.features.Text(),
            }),
            metadata=tfds.core.MetadataDict(),
            disable_shuffling=True)

    def _split_generators(self, dl_manager) -> dict[str, Any]:
        del dl_manager
        config = self.builder_config
        splits = config.splits()
        log = local_tfds.SkipLog(config.skip_bad_records)
        records: dict[str, list[VocRecord]] = {}
        for split, stems in splits.items():
            if not stems:  # TFDS writes no empty split (e.g. val_fraction = 0)
                continue
            records[split] = []
            for stem in stems:
                try:
                    records[split].append(
                        parse_xml(os.path.join(config.dir(config.annotation_dir), stem + ".xml")))
                except BadRecord as e:
                    log.handle(split, e)
        names = list(config.class_names) or sorted(
            {o.name for rs in records.values() for r in rs for o in r.objects})
        self.info.metadata["class_names"] = names
        return {split: self._generate_examples(split, rs, names, log)
                for split, rs in records.items()}

    def _generate_examples(self, split: str, records: list[VocRecord], names: list[str],
                  log: local_tfds.SkipLog):
        config = self.builder_config
        index = {n: i for i, n in enumerate(names)}
        image_id, file_names = 0, []
        for record in records:
            try:
                example = self._example(record, index, config)
            except BadRecord as e:
                log.handle(split, e)
                continue
            example["image_id"] = image_id
            file_names.append(example["file_name"])
            yield image_id, example
            image_id += 1
        # the image files of example 0, 1, ... (results files name them)
        self.info.metadata.setdefault("file_names", {})[split] = file_names
        self.info.metadata["skipped"] = log.as_dict()
        log.report(f"VOC {config.path}", split)

    def _example(self, record: VocRecord, index: dict[str, int], config: VocConfig
                 ) -> dict[str, Any]:
        stem = os.path.splitext(os.path.basename(record.xml_path))[0]
        image_dir = config.dir(config.image_dir)
        image_path = local_tfds.find_image(image_dir, record.filename)
        data, h, w = local_tfds.read_image(
            image_path, record.xml_path, stem,
            looked_for=local_tfds.image_candidates(image_dir, record.filename))
        if record.size is not None and record.size != (h, w):
            raise BadRecord(record.xml_path, stem, "size_mismatch",
                            f"<size> {record.size[1]}x{record.size[0]} (WxH) but image "
                            f"{image_path} is {w}x{h}")
        _check_boxes(record, h, w)
        for k, obj in enumerate(record.objects):
            if obj.name not in index:
                raise BadRecord(record.xml_path, f"{stem} object {k}", "unknown_class",
                                f"class {obj.name!r} not in class_names {list(index)}")
        objs = record.objects
        return {
            "image": data,
            "objects": {
                "bbox": np.asarray([o.box for o in objs], np.float32).reshape(-1, 4),
                "label": np.asarray([index[o.name] for o in objs], np.int64),
                "difficult": np.asarray([o.difficult for o in objs], bool),
                "truncated": np.asarray([o.truncated for o in objs], bool),
            },
            "file_name": os.path.basename(image_path or record.filename),
        }


def build(path: str, data_dir: str, *, image_dir: str = "JPEGImages",
          annotation_dir: str = "Annotations", split_dir: str = "ImageSets/Main",
          class_names: Sequence[str] = (), val_fraction: float = 0.1, split_seed: int = 0,
          skip_bad_records: bool = False) -> JaxdetVoc:
    """Convert the VOC folder ``path`` under ``data_dir`` unless done; returns the builder (metadata
    ``class_names``, ``skipped``). FileNotFoundError without the annotation folder.
    """
    path = os.path.abspath(os.path.expanduser(path))
    options = dict(image_dir=image_dir, annotation_dir=annotation_dir, split_dir=split_dir,
                   class_names=list(class_names), val_fraction=float(val_fraction),
                   split_seed=int(split_seed), skip_bad_records=bool(skip_bad_records))
    ann = os.path.join(path, annotation_dir)
    if not os.path.isdir(ann):
        raise FileNotFoundError(f"VOC annotation folder {ann} not found (expected "
                                f"{path}/{annotation_dir}/*.xml and {path}/{image_dir}/)")
    split_files = [os.path.join(path, split_dir, f) for f in SPLIT_FILES.values()]
    files = [os.path.join(ann, f) for f in os.listdir(ann) if f.endswith(".xml")]
    if not files:
        raise FileNotFoundError(f"VOC annotation folder {ann} holds no .xml files")
    files += [f for f in split_files if os.path.isfile(f)]
    files += local_tfds.files_under(os.path.join(path, image_dir))
    digest = local_tfds.fingerprint({"path": path, **options}, files, root=path)
    config = VocConfig(name=local_tfds.config_name(path, digest), path=path,
                       description=f"VOC folder {path}",
                       **{**options, "class_names": tuple(class_names)})
    return tfds_build.prepare(JaxdetVoc, config, data_dir)
