"""The tasks' real-data sources, chosen by ``config.data.source``.

``"scenes"`` (default, handled by the tasks); detection ``"coco"``, ``"tfds_coco"``, ``"voc"``;
segmentation ``"folder"``. Folders are converted once into TFDS under ``data_dir``.

``config.data`` fields [defaults]: ``path``, ``data_dir``, ``image_size`` [0: as is; else
:class:`~jaxdet.data.local_tfds.FitToSquare`], ``skip_bad_records`` [False], ``class_names``
[()], ``val_fraction`` [0.1], ``split_seed`` [0], ``keep_difficult`` [False] (VOC),
``masks`` [True] / ``keypoints`` [False] / ``instances`` [True] / ``category_labels``
[``"contiguous"``] (COCO), ``image_dir`` / ``annotation_dir`` / ``label_dir`` /
``split_dir`` / ``classes_file``, ``ignore_index`` [255], ``random_flip`` [False]
(:class:`~jaxdet.data.augment.FlipDoubled`), ``max_instances`` [0] (detection).
Augmentation (:class:`~jaxdet.data.augment.GeometryTransform`, on when any is set):
``pad_sizes`` [()], ``resize_short`` / ``resize_max`` [0], ``scale_jitter`` [()],
``photometric`` [0.0], ``augment_seed`` [``config.seed``], ``num_workers`` [0: batches made by
reader threads in the training process; N: in N worker processes], ``group_by_aspect_ratio``
[False]
(training batches of one ``pad_sizes`` entry, the nearest to their images' aspect ratio:
:mod:`jaxdet.data.buckets`; evaluation uses the last entry, e.g. ``((800, 1344), (1344, 800),
(1344, 1344))``).

COCO crowds stay in the examples (not training targets, ``iscrowd=1`` in evaluation); VOC
``difficult`` objects are dropped unless ``keep_difficult``. With augmentation, evaluation
uses the original size (``orig_hw``, ``orig_objects``); else the fitted size.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import ml_collections

from jaxdet.core import ConfigError
from jaxdet.data import augment, buckets, local_tfds

DETECTION_SOURCES = ("coco", "tfds_coco", "voc")
SEGMENTATION_SOURCES = ("folder",)
SEGMENTATION_IGNORE = 255


def source_name(config: ml_collections.ConfigDict) -> str:
    return str(config.data.get("source", "scenes"))


def _path(config: ml_collections.ConfigDict) -> str:
    path = config.data.get("path", "")
    if not path:
        raise ConfigError(f"config.data.source={source_name(config)!r} needs "
                         "--config.data.path=<folder>")
    return os.path.expanduser(path)


def _options(config: ml_collections.ConfigDict, names: Sequence[str]) -> dict[str, Any]:
    return {n: config.data[n] for n in names if n in config.data}


#: Builders already converted in this process, by their arguments (class_names() is called
#: often: each call would otherwise stat every annotation file and re-read dataset_info).
_BUILDERS: dict[str, Any] = {}


def _cached(build, *args, **kwargs):
    key = repr((build.__module__, args, sorted(kwargs.items())))
    if key not in _BUILDERS:
        _BUILDERS[key] = build(*args, **kwargs)
    return _BUILDERS[key]


def _detection_builder(config: ml_collections.ConfigDict):
    data, source = config.data, source_name(config)
    common = dict(skip_bad_records=bool(data.get("skip_bad_records", False)))
    if source == "coco":
        from jaxdet.data import coco

        return _cached(coco.build, _path(config), data.data_dir,
                       masks=bool(data.get("masks", True)),
                       keypoints=bool(data.get("keypoints", False)),
                       instances=bool(data.get("instances", True)),
                       category_labels=str(data.get("category_labels", "contiguous")), **common,
                       **_options(config, ("annotation_dir",)))
    if source == "voc":
        from jaxdet.data import voc

        return _cached(voc.build, _path(config), data.data_dir, **common,
                       class_names=tuple(data.get("class_names", ())),
                       val_fraction=float(data.get("val_fraction", 0.1)),
                       split_seed=int(data.get("split_seed", 0)),
                       **_options(config, ("image_dir", "annotation_dir", "split_dir")))
    raise ConfigError(f"config.data.source={source!r}; detection reads 'scenes' or one of "
                     f"{DETECTION_SOURCES}")


def detection_class_names(config: ml_collections.ConfigDict) -> list[str]:
    """Class names of the detection source (converting it first if needed)."""
    if source_name(config) == "tfds_coco":
        from jaxdet.data import coco

        return coco.tfds_coco(config.data.data_dir)[1]
    return list(_detection_builder(config).info.metadata["class_names"])


def detection_dataset_ids(config: ml_collections.ConfigDict, split: str) -> dict[str, Any]:
    """The dataset's own ids of ``split``'s examples 0, 1, ... for results files:
    ``image_ids`` (COCO ``images[].id``), ``file_names`` and ``category_ids`` (the COCO id of
    label 0, 1, ...); a key is absent where the source has no such ids (synthetic scenes, TFDS
    COCO; VOC has no numeric ids)."""
    if source_name(config) not in ("coco", "voc"):
        return {}
    meta = _detection_builder(config).info.metadata
    out = {key: list(meta[key][split]) for key in ("image_ids", "file_names")
           if split in meta.get(key, {})}
    if meta.get("category_ids") and config.data.get("category_labels",
                                                    "contiguous") == "contiguous":
        out["category_ids"] = [int(c) for c in meta["category_ids"]]
    return out


AUGMENT_FIELDS = ("pad_sizes", "resize_short", "resize_max", "scale_jitter", "photometric")


def _geometry(config: ml_collections.ConfigDict, splits: dict[str, Any], ignore: int = 255,
              max_instances: int = 0, sizes_cache: str = "") -> dict[str, Any]:
    """Each split fitted into ``image_size`` (default) or through the augmentation chain, then
    limited to ``max_instances`` objects (> 0). ``data.group_by_aspect_ratio``: training batches
    by the ``pad_sizes`` bucket of their images' aspect ratio (:mod:`jaxdet.data.buckets`; the
    training images' sizes kept in ``sizes_cache``).
    """
    data = config.data
    size = int(data.get("image_size", 0) or 0)
    limits = {k: augment.InstanceLimit(max_instances, k) for k in splits} if max_instances else {}
    if not any(data.get(f) for f in AUGMENT_FIELDS):
        out = {k: local_tfds.FitToSquare(v, size, ignore) if size else v
               for k, v in splits.items()}
        return {k: augment.Mapped(v, limits[k]) if k in limits else v for k, v in out.items()}
    sizes = [tuple(s) for s in data.get("pad_sizes", ())] or ([(size, size)] if size else [])
    if not sizes:
        raise ConfigError("config.data.pad_sizes or config.data.image_size is needed with "
                         f"config.data.{'/'.join(AUGMENT_FIELDS[1:])}")
    common = dict(short=int(data.get("resize_short", 0)), max_size=int(data.get("resize_max", 0)),
                  ignore_index=ignore)
    seed = int(data.get("augment_seed", config.get("seed", 0)))
    order = None
    if data.get("group_by_aspect_ratio", False) and "train" in splits:
        if len(sizes) < 2:
            raise ConfigError("config.data.group_by_aspect_ratio=True needs two or more "
                              f"config.data.pad_sizes, got {sizes}")
        hw = buckets.image_sizes(splits["train"], sizes_cache)
        order = buckets.BucketedOrder([buckets.nearest_size(h, w, sizes) for h, w in hw],
                                      len(sizes), int(config.get("batch_size", 1)), seed)
    out = {}
    for k, v in splits.items():
        train = k == "train"
        transform = augment.GeometryTransform(
            sizes, train=train, seed=seed, batch_size=int(config.get("batch_size", 1)),
            scale_range=tuple(data.get("scale_jitter", ())) if train else (),
            photometric=float(data.get("photometric", 0.0)) if train else 0.0,
            limit=limits.get(k), order=order if train else None, **common)
        out[k] = augment.Augmented(v, transform) if train else augment.Mapped(v, transform)
    return out


def detection_datasets(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """``{"train", "validation"}`` sources in the scenes' example format (``image``,
    ``objects/bbox``, ``label``, ``is_crowd``, ``mask`` ...), difficult objects dropped, fitted or
    augmented, at most ``max_instances`` objects.
    """
    if source_name(config) == "tfds_coco":
        from jaxdet.data import coco

        splits = coco.tfds_coco(config.data.data_dir)[0]
    else:
        sources = _detection_builder(config).as_data_source()
        splits = {k: sources[k] for k in ("train", "validation") if k in sources}
    if not config.data.get("keep_difficult", False):
        splits = {k: local_tfds.DropObjects(v, ["difficult"]) for k, v in splits.items()}
    if config.data.get("random_flip", False) and "train" in splits:
        names = [] if source_name(config) == "tfds_coco" else list(
            _detection_builder(config).info.metadata.get("keypoint_names", []))
        splits["train"] = augment.FlipDoubled(splits["train"],
                                              augment.flip_pairs_from_names(names))
    grouped = config.data.get("group_by_aspect_ratio", False)
    cache = os.path.join(str(_detection_builder(config).data_path), "train_image_sizes.npy") if (
        grouped and source_name(config) != "tfds_coco") else ""
    return _geometry(config, splits, max_instances=int(config.data.get("max_instances", 0)),
                     sizes_cache=cache)


def _folder_options(config: ml_collections.ConfigDict) -> dict[str, Any]:
    return _options(config, ("image_dir", "label_dir", "split_dir", "classes_file"))


def segmentation_class_names(config: ml_collections.ConfigDict) -> list[str]:
    """Class names of the segmentation folder, index order (config, else classes file)."""
    from jaxdet.data import segmentation_folder

    return segmentation_folder.class_names_and_colours(
        _path(config), tuple(config.data.get("class_names", ())),
        config.data.get("classes_file", "classes.txt"))[0]


def segmentation_datasets(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """``{"train", "validation"}`` sources with ``image`` and ``segmentation`` ``[H, W, 1]`` (255
    ignored). ValueError on another source or ``ignore_index``.
    """
    from jaxdet.data import segmentation_folder

    if source_name(config) not in SEGMENTATION_SOURCES:
        raise ConfigError(f"config.data.source={source_name(config)!r}; segmentation reads "
                         f"'scenes' or one of {SEGMENTATION_SOURCES}")
    ignore = int(config.data.get("ignore_index", SEGMENTATION_IGNORE))
    if ignore != SEGMENTATION_IGNORE:
        raise ConfigError(f"config.data.ignore_index={ignore}: the segmentation task ignores "
                         f"{SEGMENTATION_IGNORE} only")
    opts = {k: v for k, v in _folder_options(config).items() if k != "classes_file"}
    builder = _cached(
        segmentation_folder.build, _path(config), config.data.data_dir,
        class_names=tuple(segmentation_class_names(config)),
        ignore_index=ignore, val_fraction=float(config.data.get("val_fraction", 0.1)),
        split_seed=int(config.data.get("split_seed", 0)),
        skip_bad_records=bool(config.data.get("skip_bad_records", False)), **opts)
    sources = builder.as_data_source()
    splits = {k: sources[k] for k in ("train", "validation") if k in sources}
    if config.data.get("random_flip", False) and "train" in splits:
        splits["train"] = augment.FlipDoubled(splits["train"])
    return _geometry(config, splits, ignore)
