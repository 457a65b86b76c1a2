"""Segmentation folders (images + label images paired by file name) converted once into TFDS.

Layout (``path`` = ``config.data.path``; folder names are options)::

    path/images/a.jpg            # image_dir: RGB (any PIL format; grey/RGBA converted to RGB)
    path/labels/a.png            # label_dir: same stem, one class index per pixel
    path/classes.txt             # optional: one class per line, "name" or "name r g b"
    path/splits/train.txt        # optional split_dir: stems of "train" ...
    path/splits/val.txt          # ... and of "validation"

(Pascal VOC: ``JPEGImages``, ``SegmentationClass``, ``ImageSets/Segmentation``.) Palette /
grey label values are class indices; RGB labels map through the class colours. ``ignore_index``
(255) is left out of loss and metrics. Without split files: seeded split. Examples are the
label images (images without labels are ignored).

Example: ``image`` uint8 ``[H, W, 3]``; ``segmentation`` uint8 ``[H, W, 1]`` in ``[0, C)`` or
``ignore_index``; ``image_id``; ``file_name``. Metadata ``class_names``, ``colors``,
``ignore_index``, ``skipped``. Bad records: ``missing_image``, ``missing_label``,
``unreadable_image``, ``label_out_of_range``, ``size_mismatch``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import PIL.Image
import tensorflow_datasets as tfds

from jaxdet.data import local_tfds, tfds_build
from jaxdet.data.local_tfds import BadRecord

SPLIT_FILES = {"train": "train.txt", "validation": "val.txt"}


def read_classes_file(path: str) -> tuple[list[str], list[list[int]]]:
    """``(names, colours)`` from ``name`` / ``name r g b`` lines (colours ``[]`` unless every line
    has one); ValueError naming file and line.
    """
    names, colours = [], []
    with open(path) as f:
        for k, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) not in (1, 4) or (len(parts) == 4 and not all(
                    p.isdigit() and int(p) < 256 for p in parts[1:])):
                raise ValueError(f"{path}: line {k}: expected 'name' or 'name r g b' with "
                                 f"0-255 colours, got {line.strip()!r}")
            names.append(parts[0])
            if len(parts) == 4:
                colours.append([int(p) for p in parts[1:]])
    return names, (colours if len(colours) == len(names) else [])


def class_names_and_colours(path: str, class_names: Sequence[str] = (),
                            classes_file: str = "classes.txt"
                            ) -> tuple[list[str], list[list[int]]]:
    """Class names (and colours) of folder ``path``: ``class_names`` if given, else
    ``path/classes_file``; FileNotFoundError naming the file when neither.
    """
    file = os.path.join(os.path.expanduser(path), classes_file)
    names, colours = read_classes_file(file) if os.path.isfile(file) else ([], [])
    if class_names:
        return list(class_names), colours if len(colours) == len(class_names) else []
    if not names:
        raise FileNotFoundError(f"no class names for segmentation folder {path}: give "
                                f"config.data.class_names or write {file}")
    return names, colours


@dataclasses.dataclass(eq=False)
class FolderConfig(tfds.core.BuilderConfig):
    """Options of one segmentation-folder conversion; build with :func:`build`."""

    path: str = ""
    image_dir: str = "images"
    label_dir: str = "labels"
    split_dir: str = "splits"
    class_names: tuple[str, ...] = ()
    colours: tuple[tuple[int, int, int], ...] = ()
    ignore_index: int = 255
    val_fraction: float = 0.1
    split_seed: int = 0
    skip_bad_records: bool = False

    def dir(self, sub: str) -> str:
        return os.path.join(self.path, sub)

    def label_files(self) -> dict[str, str]:
        """``{stem: label file name}`` of the label folder."""
        files = sorted(f for f in os.listdir(self.dir(self.label_dir))
                       if os.path.splitext(f)[1].lower() in local_tfds.IMAGE_EXTENSIONS)
        return {os.path.splitext(f)[0]: f for f in files}

    def splits(self) -> dict[str, list[str]]:
        split = local_tfds.read_split_files(self.dir(self.split_dir), SPLIT_FILES)
        if split is not None:
            return split
        return local_tfds.split_by_ratio(list(self.label_files()), self.val_fraction,
                                         self.split_seed)


def read_label(path: str, config: FolderConfig, record: str) -> np.ndarray:
    """``[H, W]`` uint8 class indices of one label image (module docstring)."""
    try:
        image = PIL.Image.open(path)
        image.load()
    except Exception as e:
        raise BadRecord(path, record, "unreadable_image",
                        f"label image is unreadable ({type(e).__name__}: {e})") from e
    if image.mode in ("P", "L"):
        label = np.asarray(image, np.uint8)
    elif image.mode in ("I", "I;16"):
        label = np.asarray(image).astype(np.int64)
    elif config.colours:
        rgb = np.asarray(image.convert("RGB"), np.int64)
        code = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        label = np.full(code.shape, -1, np.int64)
        for k, (r, g, b) in enumerate(config.colours):
            label[code == ((r << 16) | (g << 8) | b)] = k
        if (label < 0).any():
            y, x = np.argwhere(label < 0)[0]
            raise BadRecord(path, record, "label_out_of_range",
                            f"colour {tuple(rgb[y, x])} at (row {y}, col {x}) is not a class "
                            "colour")
    else:
        raise BadRecord(path, record, "label_out_of_range",
                        f"{image.mode} label image but no class colours to map it")
    num_classes = len(config.class_names)
    bad = (label >= num_classes) & (label != config.ignore_index)
    if bad.any():
        values = sorted({int(v) for v in np.unique(label[bad])})
        raise BadRecord(path, record, "label_out_of_range",
                        f"label values {values} outside [0, {num_classes}) and not the ignore "
                        f"index {config.ignore_index}")
    return label.astype(np.uint8)


class JaxdetSegmentationFolder(tfds.core.GeneratorBasedBuilder):
    """An image folder + label-image folder (module docstring), converted locally."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First version."}

    def _info(self) -> tfds.core.DatasetInfo:
        config = self.builder_config
        return tfds.core.DatasetInfo(
            builder=self, description=self.__doc__,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3), doc="uint8 RGB"),
                "segmentation": tfds.features.Image(
                    shape=(None, None, 1), doc="uint8 class index, ignore_index = ignored"),
                "image_id": tfds.features.Scalar(dtype=np.int64),
                "file_name": tfds.features.Text(),
            }),
            metadata=tfds.core.MetadataDict(
                class_names=list(config.class_names),
                colors=[list(c) for c in config.colours],
                ignore_index=config.ignore_index),
            disable_shuffling=True)

    def _split_generators(self, dl_manager) -> dict[str, Any]:
        del dl_manager
        config = self.builder_config
        log = local_tfds.SkipLog(config.skip_bad_records)
        labels = config.label_files()
        images = {os.path.splitext(f)[0] for f in os.listdir(config.dir(config.image_dir))}
        unlabelled = len(images - set(labels))
        if unlabelled:
            logging.warning("segmentation folder %s: %d images without a label image are not "
                            "used", config.path, unlabelled)
        return {split: self._generate_examples(split, stems, labels, log)
                for split, stems in config.splits().items() if stems}

    def _generate_examples(self, split: str, stems: list[str], labels: dict[str, str],
                           log: local_tfds.SkipLog):
        config = self.builder_config
        image_id = 0
        for stem in stems:
            try:
                example = self._example(stem, labels)
            except BadRecord as e:
                log.handle(split, e)
                continue
            example["image_id"] = image_id
            yield image_id, example
            image_id += 1
        self.info.metadata["skipped"] = log.as_dict()
        log.report(f"segmentation folder {config.path}", split)

    def _example(self, stem: str, labels: dict[str, str]) -> dict[str, Any]:
        config = self.builder_config
        label_dir = config.dir(config.label_dir)
        if stem not in labels:
            raise BadRecord(os.path.join(label_dir, stem + ".png"), stem, "missing_label",
                            "label image not found")
        label_path = os.path.join(label_dir, labels[stem])
        image_dir = config.dir(config.image_dir)
        image_path = local_tfds.find_image(image_dir, stem)
        data, h, w = local_tfds.read_image(
            image_path, label_path, stem,
            looked_for=local_tfds.image_candidates(image_dir, stem))
        label = read_label(label_path, config, stem)
        if label.shape != (h, w):
            raise BadRecord(label_path, stem, "size_mismatch",
                            f"label is {label.shape[1]}x{label.shape[0]} (WxH) but image "
                            f"{image_path} is {w}x{h}")
        return {"image": data, "segmentation": local_tfds.png(label),
                "file_name": os.path.basename(image_path)}


def _palette_colours(label_dir: str, files: Sequence[str], num_classes: int
                     ) -> list[list[int]]:
    for f in files[:1]:
        with PIL.Image.open(os.path.join(label_dir, f)) as image:
            if image.mode == "P":
                palette = np.asarray(image.getpalette()[:3 * num_classes]).reshape(-1, 3)
                return palette.tolist() if len(palette) == num_classes else []
    return []


def build(path: str, data_dir: str, *, image_dir: str = "images", label_dir: str = "labels",
          split_dir: str = "splits", class_names: Sequence[str] = (),
          classes_file: str = "classes.txt", ignore_index: int = 255, val_fraction: float = 0.1,
          split_seed: int = 0, skip_bad_records: bool = False) -> JaxdetSegmentationFolder:
    """Convert the folder ``path`` under ``data_dir`` unless done; returns the builder (metadata
    ``class_names``, ``colors``, ``ignore_index``, ``skipped``). FileNotFoundError if the image or
    label folder is missing.
    """
    path = os.path.abspath(os.path.expanduser(path))
    names, colours = class_names_and_colours(path, class_names, classes_file)
    labels = os.path.join(path, label_dir)
    if not os.path.isdir(labels) or not os.path.isdir(os.path.join(path, image_dir)):
        raise FileNotFoundError(f"segmentation folder {path}: expected {path}/{image_dir}/ "
                                f"and {labels}/")
    label_files = sorted(os.listdir(labels))
    if not colours:
        colours = _palette_colours(labels, label_files, len(names))
    options = dict(image_dir=image_dir, label_dir=label_dir, split_dir=split_dir,
                   class_names=names, colours=colours, ignore_index=int(ignore_index),
                   val_fraction=float(val_fraction), split_seed=int(split_seed),
                   skip_bad_records=bool(skip_bad_records))
    split_files = [os.path.join(path, split_dir, f) for f in SPLIT_FILES.values()]
    files = [os.path.join(labels, f) for f in label_files]
    files += [f for f in split_files if os.path.isfile(f)]
    files += local_tfds.files_under(os.path.join(path, image_dir))
    digest = local_tfds.fingerprint({"path": path, **options}, files, root=path)
    config = FolderConfig(
        name=local_tfds.config_name(path, digest), path=path,
        description=f"segmentation folder {path}",
        **{**options, "class_names": tuple(names),
           "colours": tuple(tuple(int(v) for v in c) for c in colours)})
    return tfds_build.prepare(JaxdetSegmentationFolder, config, data_dir)

