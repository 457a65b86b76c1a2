"""TFDS builder for the stick-figure pose data of `jaxdet.data.stick_figures`, built locally.

Difficulty: `stick_figures.PoseSpec(image_size=image_size)`. One directory per `PoseConfig`:
`<data_dir>/jaxdet_pose/<config name>/<version>/` (ArrayRecord; no TensorFlow, no network).

Example (H = W = image_size): `image` uint8 [H, W, 3]; `keypoints` float32 [17, 3] (x, y, v)
in COCO order, absolute continuous pixels inside the image, v = 2 visible / 1 occluded;
`box` float32 [4] **absolute (x1, y1, x2, y2) pixels** of the visible figure (x2 = last
column + 1; not `BBoxFeature`'s format); `mask` uint8 [H, W, 1]; `image_id` (index).
Metadata: `keypoint_names`, `flip_pairs`, `skeleton`. Example i is drawn from (config seed,
split, i) (`scenes_tfds.example_rng`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from jaxdet.data import stick_figures
from jaxdet.data.scenes_tfds import example_rng, png_bytes
from jaxdet.data.tfds_build import prepare

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
        """A config named after every parameter; ValueError on empty splits or bad parameters."""
        name = f"img{image_size}_train{num_train}_val{num_val}_seed{seed}"
        config = cls(name=name, image_size=image_size, num_train=num_train, num_val=num_val,
                     seed=seed, description=f"Procedural stick figures, {name}.")
        if num_train < 1 or num_val < 1:  # TFDS refuses to write an empty split
            raise ValueError(f"need num_train, num_val >= 1, got {num_train}, {num_val}")
        config.pose_spec()  # validates the generator parameters before anything is built
        return config

    def pose_spec(self) -> stick_figures.PoseSpec:
        """The generator spec for this config."""
        return stick_figures.PoseSpec(image_size=self.image_size)

    def split_size(self, split: str) -> int:
        return {"train": self.num_train, "validation": self.num_val}[split]


def generate_example(config: PoseConfig, split: str, index: int) -> dict[str, Any]:
    """Example `index` of `split` as the data source decodes it (module docstring)."""
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
    """Procedural stick figures with the 17 COCO person keypoints, one per image; default config
    64×64, 1,000 train + 200 validation, seed 0. Format: module docstring.
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
    """Build the pose dataset under `data_dir` unless already built (idempotent; not safe to run
    twice at once on one directory); returns the builder. Read with
    `builder.as_data_source()["train"|"validation"]`.
    """
    config = PoseConfig.create(image_size=image_size, num_train=num_train, num_val=num_val,
                               seed=seed)
    return prepare(JaxdetPose, config, data_dir)
