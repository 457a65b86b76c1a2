"""TFDS builder for the procedural scenes of `jaxdet.data.scenes`, built locally, no download.

Difficulty: `scenes.SceneSpec.for_image_size(image_size)` with the configured counts. One
directory per `ScenesConfig`: `<data_dir>/jaxdet_scenes/<config name>/<version>/`
(ArrayRecord, `builder.as_data_source()`).

Example (N objects back to front, H = W = image_size): `image` uint8 [H, W, 3];
`segmentation` uint8 [H, W, 1] (0 background, k + 1 = `CLASS_NAMES[k]`); `objects/bbox`
float32 [N, 4] **absolute (x1, y1, x2, y2) pixels** of the visible part (x2 = last column + 1;
not `BBoxFeature`'s normalised format); `objects/label` int64 0-based; `objects/mask` uint8
[N, H, W, 1] disjoint; `objects/area` int64; `image_id` (`source[i]["image_id"] == i`). With
`person_fraction > 0` (name suffix `_person<fraction>`, label 4 = "person"):
`objects/keypoints` float32 [N, 17, 3] (v = 2 visible, 1 covered; zeros for shapes).

Example i is drawn from (config seed, split, i): independent of split sizes and build order.
"""

from __future__ import annotations

import dataclasses
import io
import zlib
from typing import Any

import numpy as np
import PIL.Image
import tensorflow_datasets as tfds

from jaxdet.data import scenes
from jaxdet.data.tfds_build import prepare

_SPLITS = ("train", "validation")


@dataclasses.dataclass(eq=False)
class ScenesConfig(tfds.core.BuilderConfig):
    """Generator parameters of one scenes dataset; build with `ScenesConfig.create`."""

    image_size: int = 128
    min_objects: int = 2
    max_objects: int = 6
    num_train: int = 1000
    num_val: int = 200
    seed: int = 0
    min_size: int = 0  # object size range in px; 0 = the default range scaled to image_size
    max_size: int = 0
    person_fraction: float = 0.0  # probability that an object is a stick-figure person

    @classmethod
    def create(cls, *, image_size: int = 128, min_objects: int = 2, max_objects: int = 6,
               num_train: int = 1000, num_val: int = 200, seed: int = 0, min_size: int = 0,
               max_size: int = 0, person_fraction: float = 0.0) -> ScenesConfig:
        """A config named after every parameter (one directory per parameter set).

        ``min_size``/``max_size`` (px), when non-zero, replace the ends of the default size
        range scaled to ``image_size`` (and appear in the name); ``person_fraction > 0`` adds
        persons (suffix ``_person<fraction>``). ValueError on empty splits or bad parameters.
        """
        sizes = f"_size{min_size}-{max_size}" if (min_size or max_size) else ""
        person = f"_person{person_fraction:g}" if person_fraction > 0 else ""
        name = (f"img{image_size}_obj{min_objects}-{max_objects}{sizes}"
                f"_train{num_train}_val{num_val}_seed{seed}{person}")
        config = cls(name=name, image_size=image_size, min_objects=min_objects,
                     max_objects=max_objects, num_train=num_train, num_val=num_val, seed=seed,
                     min_size=min_size, max_size=max_size, person_fraction=person_fraction,
                     description=f"Procedural scenes, {name}.")
        if num_train < 1 or num_val < 1:  # TFDS refuses to write an empty split
            raise ValueError(f"need num_train, num_val >= 1, got {num_train}, {num_val}")
        config.scene_spec()  # validates the generator parameters before anything is built
        return config

    def scene_spec(self) -> scenes.SceneSpec:
        """The generator spec for this config."""
        sizes = {k: v for k, v in (("min_size", self.min_size), ("max_size", self.max_size)) if v}
        return scenes.SceneSpec.for_image_size(
            self.image_size, min_objects=self.min_objects, max_objects=self.max_objects,
            person_fraction=self.person_fraction, **sizes)

    def split_size(self, split: str) -> int:
        return {"train": self.num_train, "validation": self.num_val}[split]


def example_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of example `index` of `split`: a function of (seed, split, index) only."""
    return np.random.default_rng([seed, zlib.crc32(split.encode()), index])


def generate_example(config: ScenesConfig, split: str, index: int) -> dict[str, Any]:
    """Example `index` of `split` as the data source decodes it (module docstring)."""
    scene = scenes.generate_scene(example_rng(config.seed, split, index), config.scene_spec())
    example = {
        "image": scene["image"],
        "segmentation": scene["segmentation"][..., None],
        "objects": {
            "bbox": scene["boxes"],
            "label": scene["labels"],
            "mask": scene["masks"][..., None],
            "area": scene["areas"],
        },
        "image_id": index,
    }
    if "keypoints" in scene:
        example["objects"]["keypoints"] = scene["keypoints"]
    return example


def _features(hw: int, keypoints: bool = False) -> tfds.features.FeaturesDict:
    # Per-object fields are Tensors with a leading None dimension, not a tfds Sequence: in
    # tfds 4.9 the NumPy decoder (as_data_source) returns a Sequence's fields as Python lists
    # of per-object arrays; a Tensor decodes to one [N, ...] array, also when N = 0.
    objects = {
        "bbox": tfds.features.Tensor(
            shape=(None, 4), dtype=np.float32,
            doc="absolute (x1, y1, x2, y2) pixels, x2 = last column + 1; NOT BBoxFeature"),
        "label": tfds.features.Tensor(
            shape=(None,), dtype=np.int64, doc="0-based index into CLASS_NAMES"),
        "mask": tfds.features.Tensor(
            shape=(None, hw, hw, 1), dtype=np.uint8, encoding=tfds.features.Encoding.ZLIB,
            doc="0/1 visible part of each object, disjoint"),
        "area": tfds.features.Tensor(
            shape=(None,), dtype=np.int64, doc="visible pixel count"),
    }
    if keypoints:
        objects["keypoints"] = tfds.features.Tensor(
            shape=(None, 17, 3), dtype=np.float32,
            doc="(x, y, v) COCO keypoints of persons (v 2 visible, 1 covered); 0 for shapes")
    return tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(hw, hw, 3), doc="uint8 RGB"),
        "segmentation": tfds.features.Image(
            shape=(hw, hw, 1), doc="uint8 label map: 0 background, k+1 = CLASS_NAMES[k]"),
        "objects": tfds.features.FeaturesDict(objects),
        "image_id": tfds.features.Scalar(dtype=np.int64, doc="index within the split"),
    })


def png_bytes(array: np.ndarray) -> bytes:
    """PNG bytes of a uint8 [H, W, C] array (PIL: building needs no TensorFlow)."""
    buffer = io.BytesIO()
    image = array[..., 0] if array.shape[-1] == 1 else array
    PIL.Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


class JaxdetScenes(tfds.core.GeneratorBasedBuilder):
    """Procedural scenes of 4 shape classes (circle, square, triangle, cross) for segmentation,
    detection and instance masks; default config 128×128, 2–6 objects, 1,000 train + 200
    validation, seed 0. Format: module docstring.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First version: circles, squares, triangles, crosses."}
    BUILDER_CONFIGS = [ScenesConfig.create()]

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.__doc__,
            features=_features(self.builder_config.image_size,
                               keypoints=self.builder_config.person_fraction > 0),
            metadata=tfds.core.MetadataDict(class_names=list(
                scenes.scene_class_names(self.builder_config.scene_spec()))),
            disable_shuffling=True,  # keep index order: source[i] is example i
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        del dl_manager  # nothing to download
        return {split: self._generate_examples(split) for split in _SPLITS}

    def _generate_examples(self, split: str):
        config = self.builder_config
        for index in range(config.split_size(split)):
            example = generate_example(config, split, index)
            example["image"] = png_bytes(example["image"])
            example["segmentation"] = png_bytes(example["segmentation"])
            yield index, example


def build_scenes(data_dir: str, *, image_size: int = 128, min_objects: int = 2,
                 max_objects: int = 6, num_train: int = 1000, num_val: int = 200,
                 seed: int = 0, min_size: int = 0, max_size: int = 0,
                 person_fraction: float = 0.0) -> JaxdetScenes:
    """Build the scenes dataset under `data_dir` unless already built (idempotent, no network, no
    TensorFlow; not safe to run twice at once on one directory); returns the builder. Read with
    `builder.as_data_source()["train"|"validation"]`.
    """
    config = ScenesConfig.create(image_size=image_size, min_objects=min_objects,
                                 max_objects=max_objects, num_train=num_train, num_val=num_val,
                                 seed=seed, min_size=min_size, max_size=max_size,
                                 person_fraction=person_fraction)
    return prepare(JaxdetScenes, config, data_dir)
