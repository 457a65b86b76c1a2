"""The tasks' real-data sources, chosen by ``config.data.source``.

``config.data.source``: ``"scenes"`` (default; the synthetic data, handled by the tasks
themselves), ``"coco"`` (a COCO-format folder, :mod:`jaxdet.data.coco`), ``"tfds_coco"``
(TFDS ``coco/2017`` prepared under ``config.data.data_dir``), ``"voc"`` (:mod:`jaxdet.data.voc`)
for detection, ``"folder"`` (:mod:`jaxdet.data.segmentation_folder`) for segmentation. Each
folder is converted once into a TFDS dataset under ``config.data.data_dir`` and read
through the same pipeline as the synthetic data.

``config.data`` fields read here (defaults in brackets): ``path`` (the folder), ``data_dir``,
``image_size`` [0: images as they are] — every image scaled to fit ``image_size x
image_size`` and padded (:class:`jaxdet.data.local_tfds.FitToSquare`; the batches stack one
static size), ``skip_bad_records`` [False], ``class_names`` [(): from the data],
``val_fraction`` [0.1] and ``split_seed`` [0] (when there are no split files),
``keep_difficult`` [False] (VOC), ``masks`` [True], ``keypoints`` [False] and ``instances``
[True] (COCO; False: the ``person_keypoints_*`` files alone), ``category_labels``
[``"contiguous"``] (COCO; ``"ids"``: label = category id - 1, torchvision's released weights),
``image_dir`` / ``annotation_dir`` / ``label_dir`` / ``split_dir`` / ``classes_file``
(the converters' defaults), ``ignore_index`` [255] (segmentation), ``random_flip`` [False]:
the training split doubled with each image's horizontal flip
(:class:`jaxdet.data.augment.FlipDoubled`; keypoints swap ``left_*`` / ``right_*``).

Augmentation and sizes (:class:`jaxdet.data.augment.GeometryTransform`; all off by default,
then every image is fitted into ``image_size`` as above): ``pad_sizes`` [()] the declared
``(h, w)`` sizes (one entry: a fixed size; several: one per global training batch of
``config.batch_size``, evaluation at the last; () = ``((image_size, image_size),)``) padded
to with the validity ``image_hw``; ``resize_short`` [0] / ``resize_max`` [0] the shorter
side resized to ``resize_short``, the longer at most ``resize_max`` (0: fitted into the
size); ``scale_jitter`` [()] ``(min, max)`` scale factor of the training images, cropped to
the size at a random place (boxes clipped, instances outside dropped); ``photometric``
[0.0] the brightness / contrast / saturation jitter strength of training images;
``augment_seed`` [``config.seed``]. Any of these set switches the chain on (training draws
through :class:`jaxdet.data.augment.Augmented`: seeded by the draw's position, resumable).

Detection: at most ``max_instances`` objects per image are kept, the excess counted and
logged (:class:`jaxdet.data.augment.InstanceLimit`). COCO crowd objects (``is_crowd``) stay
in the examples: the detection task leaves them out of the training targets
(``gt_valid`` False) and passes them to pycocotools as ``iscrowd=1`` ground truth
(``gt_iscrowd``: detections on crowd regions are ignored, COCO's rule). VOC ``difficult``
objects are left out (:class:`jaxdet.data.local_tfds.DropObjects`) unless
``keep_difficult``. With the augmentation chain on, evaluation runs at the original image
size (the evaluation examples carry ``orig_hw`` and ``orig_objects``: boxes mapped back,
full-size gt masks, COCO areas), as COCO's; images fitted by ``image_size`` alone are
evaluated at the fitted size (boxes scaled with the image).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import ml_collections

from jaxdet.data import augment, local_tfds

DETECTION_SOURCES = ("coco", "tfds_coco", "voc")
SEGMENTATION_SOURCES = ("folder",)
SEGMENTATION_IGNORE = 255


def source_name(config: ml_collections.ConfigDict) -> str:
    return str(config.data.get("source", "scenes"))


def _path(config: ml_collections.ConfigDict) -> str:
    path = config.data.get("path", "")
    if not path:
        raise ValueError(f"config.data.source={source_name(config)!r} needs "
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
    raise ValueError(f"config.data.source={source!r}; detection reads 'scenes' or one of "
                     f"{DETECTION_SOURCES}")


def detection_class_names(config: ml_collections.ConfigDict) -> list[str]:
    """Class names of the detection source (converting it first if needed)."""
    if source_name(config) == "tfds_coco":
        from jaxdet.data import coco

        return coco.tfds_coco(config.data.data_dir)[1]
    return list(_detection_builder(config).info.metadata["class_names"])


AUGMENT_FIELDS = ("pad_sizes", "resize_short", "resize_max", "scale_jitter", "photometric")


def _geometry(config: ml_collections.ConfigDict, splits: dict[str, Any], ignore: int = 255,
              max_instances: int = 0) -> dict[str, Any]:
    """Each split fitted into ``image_size`` (the default) or through the augmentation chain
    (module docstring), then limited to ``max_instances`` objects (> 0)."""
    data = config.data
    size = int(data.get("image_size", 0) or 0)
    limits = {k: augment.InstanceLimit(max_instances, k) for k in splits} if max_instances else {}
    if not any(data.get(f) for f in AUGMENT_FIELDS):
        out = {k: local_tfds.FitToSquare(v, size, ignore) if size else v
               for k, v in splits.items()}
        return {k: augment.Mapped(v, limits[k]) if k in limits else v for k, v in out.items()}
    sizes = [tuple(s) for s in data.get("pad_sizes", ())] or ([(size, size)] if size else [])
    if not sizes:
        raise ValueError("config.data.pad_sizes or config.data.image_size is needed with "
                         f"config.data.{'/'.join(AUGMENT_FIELDS[1:])}")
    common = dict(short=int(data.get("resize_short", 0)), max_size=int(data.get("resize_max", 0)),
                  ignore_index=ignore)
    out = {}
    for k, v in splits.items():
        train = k == "train"
        transform = augment.GeometryTransform(
            sizes, train=train, seed=int(data.get("augment_seed", config.get("seed", 0))),
            batch_size=int(config.get("batch_size", 1)),
            scale_range=tuple(data.get("scale_jitter", ())) if train else (),
            photometric=float(data.get("photometric", 0.0)) if train else 0.0,
            limit=limits.get(k), **common)
        out[k] = augment.Augmented(v, transform) if train else augment.Mapped(v, transform)
    return out


def detection_datasets(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """``{"train": source, "validation": source}`` in the synthetic scenes' example format
    (``image``, ``objects/bbox``, ``objects/label``, ``objects/is_crowd``, ``objects/mask``
    ...), difficult objects dropped, images fitted to ``config.data.image_size`` or through
    the augmentation chain, at most ``config.data.max_instances`` objects."""
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
    return _geometry(config, splits, max_instances=int(config.data.get("max_instances", 0)))


def _folder_options(config: ml_collections.ConfigDict) -> dict[str, Any]:
    return _options(config, ("image_dir", "label_dir", "split_dir", "classes_file"))


def segmentation_class_names(config: ml_collections.ConfigDict) -> list[str]:
    """Class names of the segmentation folder, index order (config, else classes file)."""
    from jaxdet.data import segmentation_folder

    return segmentation_folder.class_names_and_colours(
        _path(config), tuple(config.data.get("class_names", ())),
        config.data.get("classes_file", "classes.txt"))[0]


def segmentation_datasets(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """``{"train": source, "validation": source}`` with ``image`` and ``segmentation``
    ``[H, W, 1]`` (255 = ignored), images fitted to ``config.data.image_size``."""
    from jaxdet.data import segmentation_folder

    if source_name(config) not in SEGMENTATION_SOURCES:
        raise ValueError(f"config.data.source={source_name(config)!r}; segmentation reads "
                         f"'scenes' or one of {SEGMENTATION_SOURCES}")
    ignore = int(config.data.get("ignore_index", SEGMENTATION_IGNORE))
    if ignore != SEGMENTATION_IGNORE:
        raise ValueError(f"config.data.ignore_index={ignore}: the segmentation task ignores "
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
