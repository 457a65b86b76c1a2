"""The stick-figure pose generator: format, keypoint/mask consistency, pinned difficulty."""

import numpy as np
import pytest

from jaxdet.data import stick_figures as sf

SPEC = sf.PoseSpec()
HW = SPEC.image_size


def _examples(n: int, spec: sf.PoseSpec = SPEC, offset: int = 0) -> list[dict]:
    return [sf.generate_pose_example(np.random.default_rng(offset + i), spec) for i in range(n)]


@pytest.fixture(scope="module")
def many() -> list[dict]:
    return _examples(300)


def _pixels(keypoints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the pixel each keypoint lies in."""
    cols, rows = np.floor(keypoints[:, :2]).astype(int).T
    return rows, cols


def _heights(examples: list[dict]) -> np.ndarray:
    """Figure height in pixels, from the torso: hips to shoulders is 0.30 of the height."""
    kp = np.stack([e["keypoints"][:, :2] for e in examples]).astype(float)
    torso = kp[:, 5:7].mean(1) - kp[:, 11:13].mean(1)
    return np.hypot(*torso.T) / 0.30


def test_keypoint_names_flip_pairs_and_skeleton():
    assert sf.KEYPOINT_NAMES == (
        "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
        "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip",
        "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle")
    assert sf.NUM_KEYPOINTS == 17
    flipped = [i for pair in sf.FLIP_PAIRS for i in pair]
    assert sorted(flipped) == list(range(1, 17))  # every keypoint but the nose, once
    for left, right in sf.FLIP_PAIRS:
        name = sf.KEYPOINT_NAMES[left]
        assert name.startswith("left_") and sf.KEYPOINT_NAMES[right] == "right_" + name[5:]
    used = {i for limb in sf.SKELETON for i in limb}
    assert used == set(range(5, 17)) and len(set(sf.SKELETON)) == len(sf.SKELETON)


def test_same_seed_same_example_other_seed_other_example():
    a = sf.generate_pose_example(np.random.default_rng(7))
    b = sf.generate_pose_example(np.random.default_rng(7))
    c = sf.generate_pose_example(np.random.default_rng(8))
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert np.abs(a["image"].astype(int) - c["image"]).mean() > 10
    assert np.abs(a["keypoints"] - c["keypoints"]).max() > 1


def test_shapes_and_dtypes(many):
    expected = {
        "image": ((HW, HW, 3), np.uint8),
        "keypoints": ((17, 3), np.float32),
        "box": ((4,), np.float32),
        "mask": ((HW, HW), np.uint8),
    }
    for example in many[:20]:
        assert example.keys() == expected.keys()
        for key, (shape, dtype) in expected.items():
            assert example[key].shape == shape, key
            assert example[key].dtype == dtype, key


def test_keypoints_lie_inside_the_image_on_the_drawn_figure(many):
    for example in many:
        kp = example["keypoints"]
        assert (kp[:, :2] > 0).all() and (kp[:, :2] < HW).all()
        # Drawn with the thinnest limbs the spec allows, the figure is a subset of the real
        # one, and it already covers every keypoint's pixel.
        thin = sf.rasterise_person(kp[:, :2], SPEC.min_thickness_px, HW)
        assert thin[_pixels(kp)].all()
        # Nothing visible lies outside the figure drawn with the thickest limbs.
        thick = sf.rasterise_person(kp[:, :2], SPEC.max_thickness * SPEC.max_height * HW, HW)
        assert not (example["mask"].astype(bool) & ~thick).any()
        # Occluders leave at least half of the figure: more than half of the thin one.
        assert example["mask"].sum() >= 0.5 * thin.sum()


def test_visibility_flags_follow_the_visible_mask(many):
    for example in many:
        kp, mask = example["keypoints"], example["mask"]
        assert set(np.unique(kp[:, 2])) <= {1.0, 2.0}
        # Every keypoint's pixel belongs to the figure (previous test), so a keypoint whose
        # pixel is not on the visible mask is under an occluder: v = 1; otherwise v = 2.
        np.testing.assert_array_equal(kp[:, 2], np.where(mask[_pixels(kp)] == 1, 2.0, 1.0))


def test_mask_is_binary_and_the_box_is_tight(many):
    for example in many:
        mask = example["mask"]
        assert set(np.unique(mask)) == {0, 1}
        rows, cols = np.nonzero(mask)
        expected = [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
        np.testing.assert_array_equal(example["box"], np.asarray(expected, np.float32))


def test_some_figures_are_partly_occluded_and_some_not(many):
    occluded = np.array([(e["keypoints"][:, 2] == 1).sum() for e in many])
    assert 0.2 < (occluded > 0).mean() < 0.8
    assert (occluded == 0).sum() > 60
    assert occluded.max() < 17


def test_figure_heights_span_35_to_90_percent(many):
    heights = _heights(many) / HW
    assert heights.min() >= 0.35 - 1e-3 and heights.max() <= 0.9 + 1e-3
    assert heights.min() < 0.38 and heights.max() > 0.87
    assert abs(np.median(heights) - 0.625) < 0.06  # uniform: 0.625, shrinking lowers a few


def test_figures_are_rotated_up_to_20_degrees(many):
    kp = np.stack([e["keypoints"][:, :2] for e in many]).astype(float)
    up = kp[:, 5:7].mean(1) - kp[:, 11:13].mean(1)  # hips -> shoulders
    tilt = np.rad2deg(np.arctan2(up[:, 0], -up[:, 1]))
    assert np.abs(tilt).max() <= 20 + 1e-2 and np.abs(tilt).max() > 18
    assert (tilt > 5).mean() > 0.2 and (tilt < -5).mean() > 0.2


def test_figures_are_flat_colour_on_a_textured_background(many):
    for example in many[:50]:
        image, mask = example["image"].astype(float), example["mask"].astype(bool)
        box = example["box"].astype(int)
        assert image[mask].std(axis=0).max() < 6  # one colour plus noise of std 4
        background = ~mask
        background[box[1]:box[3], box[0]:box[2]] = False  # away from figure and occluders
        if background.sum() > 200:
            assert image[background].std(axis=0).max() > 4


@pytest.mark.parametrize("angle", [0.0, 0.3])
def test_person_keypoints_pose_is_human_like(angle):
    rng = np.random.default_rng(0)
    for _ in range(100):
        kp = sf.person_keypoints(rng, 100.0, angle)
        assert kp.shape == (17, 2) and kp.dtype == np.float32
        upright = kp.astype(float) @ np.array([[np.cos(angle), -np.sin(angle)],
                                               [np.sin(angle), np.cos(angle)]])
        np.testing.assert_allclose(upright[11:13].mean(0), 0, atol=1e-3)  # hips at origin
        x, y = upright.T
        for left, right in sf.FLIP_PAIRS:  # the person's left is on the image's right
            assert x[left] > x[right]
            if left >= 5:  # limbs never cross the body's midline
                assert x[left] > 0 > x[right]
        assert (y[:5] < y[5:7].min()).all()  # face above the shoulders
        assert (y[[13, 14, 15, 16]] > y[[11, 12, 11, 12]] - 1e-3).all()  # knees, ankles low
        np.testing.assert_allclose(y[5] - y[11], -30.0, atol=1e-3)  # torso: 0.30 height
        np.testing.assert_allclose(np.hypot(*(upright[13] - upright[11])), 25.0, atol=1e-3)
        np.testing.assert_allclose(np.hypot(*(upright[9] - upright[7])), 15.0, atol=1e-3)


def test_rasterise_person_draws_limbs_head_and_torso():
    kp = sf.person_keypoints(np.random.default_rng(1), 50.0, 0.0) + np.float32(32)
    thin = sf.rasterise_person(kp, 2.0, 64)
    thick = sf.rasterise_person(kp, 6.0, 64)
    assert thin.dtype == bool and thin.shape == (64, 64)
    assert not (thin & ~thick).any() and thick.sum() > 1.3 * thin.sum()
    assert thin[_pixels(kp)].all()
    # The torso is filled: the pixel between shoulders and hips is drawn.
    centre = kp[[5, 6, 11, 12]].mean(0)
    assert thin[int(centre[1]), int(centre[0])]
    # Parts outside the image are clipped, not wrapped.
    shifted = sf.rasterise_person(kp - np.float32(40), 2.0, 64)
    assert shifted.sum() < thin.sum() and not shifted[:, 40:].any()


def test_other_image_size_and_no_occluders():
    spec = sf.PoseSpec(image_size=32, min_occluders=0, max_occluders=0)
    for example in _examples(20, spec):
        assert example["image"].shape == (32, 32, 3) and example["mask"].shape == (32, 32)
        assert (example["keypoints"][:, 2] == 2).all()
        assert (example["keypoints"][:, :2] < 32).all()


@pytest.mark.parametrize("kwargs", [
    dict(image_size=8),
    dict(min_height=0.6, max_height=0.5),
    dict(max_height=1.2),
    dict(min_thickness_px=1.0),
    dict(min_occluders=3, max_occluders=2),
])
def test_bad_spec_is_refused(kwargs):
    with pytest.raises(ValueError):
        sf.PoseSpec(**kwargs)
