"""TFDS builder for the stick-figure pose data of `jaxdet.data.stick_figures`, built locally.

Difficulty: that of `stick_figures.PoseSpec(image_size=image_size)`: one stick figure per
image facing the viewer, height 35–90 % of the image side, random articulated pose rotated by
up to ±20°, 0–2 flat-colour occluders over it (keypoints under them have visibility 1, ≥ 50 %
of the figure stays visible), colour independent of the pose, textured background. See
`stick_figures` for the full statement.

Each builder config (`PoseConfig`) names its generator parameters, so different parameters
build into different directories: `<data_dir>/jaxdet_pose/<config name>/<version>/`. The data
are written as ArrayRecord so they read with `builder.as_data_source()` (random access,
grain). Building imports neither TensorFlow nor anything from the network.

Example format (what `builder.as_data_source()[split][i]` decodes to; H = W = image_size):

* `image`: uint8 [H, W, 3] RGB.
* `keypoints`: float32 [17, 3] (x, y, v) in `stick_figures.KEYPOINT_NAMES` (COCO) order;
  (x, y) absolute continuous pixel coordinates (pixel (row i, col j) covers
  [j, j+1) × [i, i+1), centre (j + 0.5, i + 0.5)), always inside the image; v = 2 visible,
  v = 1 labelled but covered by an occluder (COCO visibility; 0 does not occur).
* `box`: float32 [4] **absolute (x1, y1, x2, y2) pixels** tight around the visible figure,
  x2 = last column + 1. Not `tfds.features.BBoxFeature`'s normalised (ymin, xmin, ymax, xmax).
* `mask`: uint8 [H, W, 1] 0/1 visible part of the figure.
* `image_id`: int64, the example's index within its split (`source[i]["image_id"] == i`).

The metadata record `keypoint_names`, `flip_pairs` and `skeleton` (`stick_figures`
constants). Example i of a split is drawn from a generator seeded by (config seed, split name,
i) (`scenes_tfds.example_rng`), so it does not depend on the split sizes or the build order.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from jaxdet.data import stick_figures
from jaxdet.data.scenes_tfds import example_rng, png_bytes, prepare

_SPLITS = ("train", "validation")


@dataclasses.dataclass(eq=False)
class PoseConfig(tfds.core.BuilderConfig):
    """Generator parameters of one pose dataset; build with `PoseConfig.create`."""

    image_size: int = 64
    num_train: int = 1000
    num_val: int = 200
    seed: int = 0

    @classmethod
    def create(cls, *, image_size: int = 64, num_train: int = 1000, num_val: int = 200,
               seed: int = 0) -> PoseConfig:
        """A config whose name is derived from every parameter (one directory per params)."""
        name = f"img{image_size}_train{num_train}_val{num_val}_seed{seed}"
        config = cls(name=name, image_size=image_size, num_train=num_train, num_val=num_val,
                     seed=seed, description=f"Procedural stick figures, {name}.")
        if num_train < 1 or num_val < 1:  # TFDS refuses to write an empty split
            raise ValueError(f"need num_train, num_val >= 1, got {num_train}, {num_val}")
        config.pose_spec()  # validates the generator parameters before anything is built
        return config

    def pose_spec(self) -> stick_figures.PoseSpec:
        """The generator spec for this config (the pinned difficulty at this image size)."""
        return stick_figures.PoseSpec(image_size=self.image_size)

    def split_size(self, split: str) -> int:
        return {"train": self.num_train, "validation": self.num_val}[split]


def generate_example(config: PoseConfig, split: str, index: int) -> dict[str, Any]:
    """Example `index` of `split` as the data source decodes it (see the module docstring)."""
    example = stick_figures.generate_pose_example(example_rng(config.seed, split, index),
                                                  config.pose_spec())
    return {
        "image": example["image"],
        "keypoints": example["keypoints"],
        "box": example["box"],
        "mask": example["mask"][..., None],
        "image_id": index,
    }


def _features(hw: int) -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(hw, hw, 3), doc="uint8 RGB"),
        "keypoints": tfds.features.Tensor(
            shape=(stick_figures.NUM_KEYPOINTS, 3), dtype=np.float32,
            doc="(x, y, v): absolute pixels (pixel centres at +0.5), COCO visibility 1 or 2"),
        "box": tfds.features.Tensor(
            shape=(4,), dtype=np.float32,
            doc="absolute (x1, y1, x2, y2) pixels, x2 = last column + 1; NOT BBoxFeature"),
        "mask": tfds.features.Image(shape=(hw, hw, 1), doc="uint8 0/1 visible figure"),
        "image_id": tfds.features.Scalar(dtype=np.int64, doc="index within the split"),
    })


class JaxdetPose(tfds.core.GeneratorBasedBuilder):
    """Procedural stick figures with the 17 COCO person keypoints, one per image.

    Default config: 64×64 RGB, one figure of height 35–90 % of the image in a random pose,
    0–2 occluders over it, keypoints (x, y, v) in absolute pixels with COCO visibility, the
    visible mask and its box; 1,000 train + 200 validation examples, seed 0. See the module
    docstring for the full example format.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First version: one stick figure per image, 0-2 occluders."}
    BUILDER_CONFIGS = [PoseConfig.create()]

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.__doc__,
            features=_features(self.builder_config.image_size),
            metadata=tfds.core.MetadataDict(
                keypoint_names=list(stick_figures.KEYPOINT_NAMES),
                flip_pairs=[list(p) for p in stick_figures.FLIP_PAIRS],
                skeleton=[list(p) for p in stick_figures.SKELETON],
            ),
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
            example["mask"] = png_bytes(example["mask"])
            yield index, example


def build_pose(data_dir: str, *, image_size: int = 64, num_train: int = 1000,
               num_val: int = 200, seed: int = 0) -> JaxdetPose:
    """Builds the pose dataset under `data_dir` unless already built; returns the builder.

    Safe to call again: a prepared directory is reused without generating anything. Building
    the default (1,000 + 200 examples at 64×64, 12 MB) took 10 s wall / 8 s CPU on the 2-core
    development machine while other jobs ran. Not safe to run twice at once on one directory.
    Read with `builder.as_data_source()["train"|"validation"]`.
    """
    config = PoseConfig.create(image_size=image_size, num_train=num_train, num_val=num_val,
                               seed=seed)
    return prepare(JaxdetPose, config, data_dir)
