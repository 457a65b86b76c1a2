"""The TFDS scenes builder: build, read back through as_data_source, rebuild is a no-op."""

import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from jaxdet.data import scenes, scenes_tfds

TINY = dict(image_size=64, min_objects=2, max_objects=6, num_train=8, num_val=4, seed=3)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    return data_dir, scenes_tfds.build_scenes(str(data_dir), **TINY)


def test_config_name_follows_every_parameter():
    base = scenes_tfds.ScenesConfig.create(**TINY)
    assert base.name == "img64_obj2-6_train8_val4_seed3"
    names = {base.name}
    for key, value in [("image_size", 32), ("min_objects", 1), ("max_objects", 5),
                       ("num_train", 9), ("num_val", 5), ("seed", 4), ("max_size", 40)]:
        names.add(scenes_tfds.ScenesConfig.create(**{**TINY, key: value}).name)
    assert len(names) == 8
    sized = scenes_tfds.ScenesConfig.create(**{**TINY, "min_size": 16, "max_size": 48})
    assert sized.name == "img64_obj2-6_size16-48_train8_val4_seed3"


def test_object_size_range_overrides_the_scaled_default():
    default = scenes_tfds.ScenesConfig.create(**TINY).scene_spec()
    assert (default.min_size, default.max_size) == (6, 35)  # 10-70 px scaled to 64 px
    config = scenes_tfds.ScenesConfig.create(
        **{**TINY, "min_objects": 1, "max_objects": 1, "min_size": 16, "max_size": 48})
    assert (config.scene_spec().min_size, config.scene_spec().max_size) == (16, 48)
    sides = []
    for i in range(20):
        box = scenes_tfds.generate_example(config, "train", i)["objects"]["bbox"][0]
        sides.append(max(box[2] - box[0], box[3] - box[1]))
    # the visible box's longer side is at most the drawn size and, alone in the image, close
    # to it (rotation can shrink a side's box only a little)
    assert 14 <= min(sides) and max(sides) <= 48, sides
    with pytest.raises(ValueError, match="max_size"):
        scenes_tfds.ScenesConfig.create(**{**TINY, "min_size": 16, "max_size": 80})


def test_bad_config_is_refused_before_building():
    with pytest.raises(ValueError):
        scenes_tfds.ScenesConfig.create(num_val=0)
    with pytest.raises(ValueError):
        scenes_tfds.ScenesConfig.create(min_objects=4, max_objects=3)


def test_example_depends_only_on_seed_split_and_index():
    small = scenes_tfds.ScenesConfig.create(**TINY)
    large = scenes_tfds.ScenesConfig.create(**{**TINY, "num_train": 1000, "num_val": 50})
    a = scenes_tfds.generate_example(small, "train", 5)
    b = scenes_tfds.generate_example(large, "train", 5)
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["objects"]["mask"], b["objects"]["mask"])
    val = scenes_tfds.generate_example(small, "validation", 5)
    other = scenes_tfds.generate_example(small, "train", 6)
    for c in (val, other):
        assert np.abs(a["image"].astype(int) - c["image"]).mean() > 10


def test_builds_into_a_directory_named_by_the_config(tiny):
    data_dir, builder = tiny
    expected = data_dir / "jaxdet_scenes" / "img64_obj2-6_train8_val4_seed3" / "1.0.0"
    assert os.fspath(builder.data_dir) == os.fspath(expected)
    assert builder.is_prepared()
    assert builder.info.splits["train"].num_examples == 8
    assert builder.info.splits["validation"].num_examples == 4
    assert sorted(f.name for f in expected.glob("*.array_record*")) == [
        "jaxdet_scenes-train.array_record-00000-of-00001",
        "jaxdet_scenes-validation.array_record-00000-of-00001",
    ]


def test_data_source_gives_back_what_the_generator_made(tiny):
    _, builder = tiny
    sources = builder.as_data_source()
    config = builder.builder_config
    for split, size in (("train", 8), ("validation", 4)):
        source = sources[split]
        assert len(source) == size
        for i in range(size):
            got = source[i]
            want = scenes_tfds.generate_example(config, split, i)
            n = len(want["objects"]["label"])
            assert 2 <= n <= 6
            assert got["image_id"] == i
            assert got["image"].dtype == np.uint8 and got["image"].shape == (64, 64, 3)
            assert got["segmentation"].dtype == np.uint8
            assert got["segmentation"].shape == (64, 64, 1)
            np.testing.assert_array_equal(got["image"], want["image"])
            np.testing.assert_array_equal(got["segmentation"], want["segmentation"])
            expected = {"bbox": ((n, 4), np.float32), "label": ((n,), np.int64),
                        "mask": ((n, 64, 64, 1), np.uint8), "area": ((n,), np.int64)}
            assert got["objects"].keys() == expected.keys()
            for key, (shape, dtype) in expected.items():
                value = got["objects"][key]
                assert isinstance(value, np.ndarray) and value.shape == shape, key
                assert value.dtype == dtype, key
                np.testing.assert_array_equal(value, want["objects"][key])
            # The stored label map and masks agree (class id = label + 1).
            labels = got["objects"]["label"]
            painted = ((labels + 1)[:, None, None, None] * got["objects"]["mask"]).sum(0)
            np.testing.assert_array_equal(painted, got["segmentation"])


def test_data_source_pickles_for_grain_workers(tiny):
    _, builder = tiny
    source = builder.as_data_source()["validation"]
    clone = pickle.loads(pickle.dumps(source))
    np.testing.assert_array_equal(clone[2]["image"], source[2]["image"])


def test_second_build_reuses_the_data(tiny, monkeypatch):
    data_dir, builder = tiny
    files = sorted(os.fspath(f) for f in builder.data_path.glob("*"))
    stamps = [os.stat(f).st_mtime_ns for f in files]

    def refuse(*args, **kwargs):
        raise AssertionError("build_scenes generated the dataset a second time")

    monkeypatch.setattr(scenes_tfds.JaxdetScenes, "_generate_examples", refuse)
    again = scenes_tfds.build_scenes(str(data_dir), **TINY)
    assert again.is_prepared() and os.fspath(again.data_dir) == os.fspath(builder.data_dir)
    assert sorted(os.fspath(f) for f in again.data_path.glob("*")) == files
    assert [os.stat(f).st_mtime_ns for f in files] == stamps
    assert len(again.as_data_source()["train"]) == 8


def test_other_parameters_build_elsewhere_and_empty_scenes_decode(tmp_path):
    builder = scenes_tfds.build_scenes(str(tmp_path), image_size=32, min_objects=0,
                                       max_objects=0, num_train=2, num_val=1, seed=0)
    assert builder.data_path.parent.name == "img32_obj0-0_train2_val1_seed0"
    objects = builder.as_data_source()["train"][1]["objects"]
    assert objects["bbox"].shape == (0, 4) and objects["bbox"].dtype == np.float32
    assert objects["mask"].shape == (0, 32, 32, 1) and objects["mask"].dtype == np.uint8
    assert objects["label"].shape == (0,) and objects["area"].shape == (0,)


def test_default_config_and_class_names_are_recorded(tiny):
    default = scenes_tfds.JaxdetScenes.BUILDER_CONFIGS[0]
    assert default.name == "img128_obj2-6_train1000_val200_seed0"
    assert default.scene_spec() == scenes.SceneSpec()
    _, builder = tiny
    assert builder.info.metadata["class_names"] == list(scenes.CLASS_NAMES)


def test_builds_without_tensorflow_or_network(tmp_path):
    """In a fresh process whose socket connections raise, the build works and never
    imports TensorFlow (PNG encoding is done with PIL, GCS lookups are off)."""
    script = textwrap.dedent(f"""
        import socket, sys
        def no_network(*args, **kwargs):
            raise OSError("network access attempted")
        socket.socket.connect = no_network
        socket.create_connection = no_network
        from jaxdet.data import scenes_tfds
        b = scenes_tfds.build_scenes({os.fspath(tmp_path)!r}, image_size=32, num_train=3,
                                     num_val=2)
        assert len(b.as_data_source()["train"]) == 3
        print("BUILT", "tensorflow" in sys.modules and sys.modules["tensorflow"] is not None)
    """)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=env, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "BUILT False" in result.stdout


def test_persons_build_with_keypoints_under_their_own_name(tmp_path):
    builder = scenes_tfds.build_scenes(str(tmp_path), image_size=48, min_objects=2,
                                       max_objects=2, num_train=2, num_val=1, seed=0,
                                       person_fraction=0.5)
    assert builder.data_path.parent.name == "img48_obj2-2_train2_val1_seed0_person0.5"
    assert builder.info.metadata["class_names"] == [*scenes.CLASS_NAMES, "person"]
    config = builder.builder_config
    for i in range(2):
        want = scenes_tfds.generate_example(config, "train", i)["objects"]
        got = builder.as_data_source()["train"][i]["objects"]
        assert got["keypoints"].shape == (2, 17, 3) and got["keypoints"].dtype == np.float32
        np.testing.assert_array_equal(got["keypoints"], want["keypoints"])
        np.testing.assert_array_equal(got["label"], want["label"])
    # Without persons: no keypoints feature, the name and the data as before.
    assert "keypoints" not in scenes_tfds.generate_example(
        scenes_tfds.ScenesConfig.create(**TINY), "train", 0)["objects"]
