"""The TFDS pose builder: build, read back through as_data_source, rebuild is a no-op."""

import os

import numpy as np
import pytest

from jaxdet.data import pose_tfds, stick_figures
from jaxdet.data.scenes_tfds import example_rng

TINY = dict(image_size=32, num_train=8, num_val=4, seed=3)


@pytest.fixture(scope="module")
def tiny(data_dir):
    return data_dir, pose_tfds.build_pose(data_dir, **TINY)


def test_config_name_follows_every_parameter():
    base = pose_tfds.PoseConfig.create(**TINY)
    assert base.name == "img32_train8_val4_seed3"
    names = {base.name}
    for key, value in [("image_size", 64), ("num_train", 9), ("num_val", 5), ("seed", 4)]:
        names.add(pose_tfds.PoseConfig.create(**{**TINY, key: value}).name)
    assert len(names) == 5


def test_bad_config_is_refused_before_building():
    with pytest.raises(ValueError):
        pose_tfds.PoseConfig.create(num_train=0)
    with pytest.raises(ValueError):
        pose_tfds.PoseConfig.create(image_size=8)


def test_example_depends_only_on_seed_split_and_index():
    small = pose_tfds.PoseConfig.create(**TINY)
    large = pose_tfds.PoseConfig.create(**{**TINY, "num_train": 1000, "num_val": 50})
    a = pose_tfds.generate_example(small, "train", 5)
    b = pose_tfds.generate_example(large, "train", 5)
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["keypoints"], b["keypoints"])
    for other in (pose_tfds.generate_example(small, "validation", 5),
                  pose_tfds.generate_example(small, "train", 6)):
        assert np.abs(a["image"].astype(int) - other["image"]).mean() > 10


def test_builds_into_a_directory_named_by_the_config(tiny):
    data_dir, builder = tiny
    expected = os.path.join(data_dir, "jaxdet_pose", "img32_train8_val4_seed3", "1.0.0")
    assert os.fspath(builder.data_dir) == expected
    assert builder.is_prepared()
    assert builder.info.splits["train"].num_examples == 8
    assert builder.info.splits["validation"].num_examples == 4


def test_data_source_gives_back_what_the_generator_made(tiny):
    _, builder = tiny
    sources = builder.as_data_source()
    spec = stick_figures.PoseSpec(image_size=32)
    expected = {
        "image": ((32, 32, 3), np.uint8),
        "keypoints": ((17, 3), np.float32),
        "box": ((4,), np.float32),
        "mask": ((32, 32, 1), np.uint8),
    }
    for split, size in (("train", 8), ("validation", 4)):
        source = sources[split]
        assert len(source) == size
        for i in range(size):
            got = source[i]
            want = stick_figures.generate_pose_example(example_rng(3, split, i), spec)
            assert got.keys() == {*expected, "image_id"}
            assert got["image_id"] == i
            for key, (shape, dtype) in expected.items():
                value = got[key]
                assert isinstance(value, np.ndarray) and value.shape == shape, key
                assert value.dtype == dtype, key
                np.testing.assert_array_equal(value.reshape(want[key].shape), want[key])


def test_metadata_records_keypoint_names_flip_pairs_and_skeleton(tiny):
    _, builder = tiny
    metadata = builder.info.metadata
    assert metadata["keypoint_names"] == list(stick_figures.KEYPOINT_NAMES)
    assert [tuple(p) for p in metadata["flip_pairs"]] == list(stick_figures.FLIP_PAIRS)
    assert [tuple(p) for p in metadata["skeleton"]] == list(stick_figures.SKELETON)
    default = pose_tfds.JaxdetPose.BUILDER_CONFIGS[0]
    assert default.name == "img64_train1000_val200_seed0"
    assert default.pose_spec() == stick_figures.PoseSpec()


def test_second_build_reuses_the_data(tiny, monkeypatch):
    data_dir, builder = tiny
    files = sorted(os.fspath(f) for f in builder.data_path.glob("*"))
    stamps = [os.stat(f).st_mtime_ns for f in files]

    def refuse(*args, **kwargs):
        raise AssertionError("build_pose generated the dataset a second time")

    monkeypatch.setattr(pose_tfds.JaxdetPose, "_generate_examples", refuse)
    again = pose_tfds.build_pose(data_dir, **TINY)
    assert again.is_prepared() and os.fspath(again.data_dir) == os.fspath(builder.data_dir)
    assert sorted(os.fspath(f) for f in again.data_path.glob("*")) == files
    assert [os.stat(f).st_mtime_ns for f in files] == stamps
