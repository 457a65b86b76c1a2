"""Augmentations against hand-computed boxes, masks, keypoints, pixels and label maps;
the seeded training chain is a function of (seed, position) and resumes exactly."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest

from jaxdet.data import augment


def _example():
    image = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)  # H = 4, W = 6
    mask = np.zeros((1, 4, 6, 1), np.uint8)
    mask[0, 1:3, 0:2] = 1  # columns 0-1 -> box x 0..2
    seg = np.zeros((4, 6, 1), np.uint8)
    seg[:, 5] = 2
    keypoints = np.array([[[1.5, 2.5, 2], [0.5, 1.5, 1], [0, 0, 0]]], np.float32)
    return {"image": image, "segmentation": seg, "image_id": 4,
            "objects": {"bbox": np.array([[0, 1, 2, 3]], np.float32), "label": np.array([3]),
                        "mask": mask, "keypoints": keypoints}}


def test_hflip_by_hand():
    ex = _example()
    out = augment.hflip(ex, flip_pairs=[(0, 1)])
    np.testing.assert_array_equal(out["image"][:, 0], ex["image"][:, 5])
    np.testing.assert_array_equal(out["objects"]["bbox"], [[4, 1, 6, 3]])  # W - x2, W - x1
    want = np.zeros((4, 6), np.uint8)
    want[1:3, 4:6] = 1
    np.testing.assert_array_equal(out["objects"]["mask"][0, ..., 0], want)
    np.testing.assert_array_equal(out["segmentation"][:, 0, 0], [2, 2, 2, 2])
    np.testing.assert_array_equal(out["segmentation"][:, 1:], 0)
    # x -> 6 - x (pixel 1 centre 1.5 -> pixel 4 centre 4.5), then points 0 and 1 swapped;
    # the unlabelled point stays zeros
    np.testing.assert_array_equal(out["objects"]["keypoints"],
                                  [[[5.5, 1.5, 1], [4.5, 2.5, 2], [0, 0, 0]]])
    np.testing.assert_array_equal(out["objects"]["label"], [3])
    assert out["image_id"] == 4
    # flipping twice gives the example back, and the input is untouched
    back = augment.hflip(out, flip_pairs=[(0, 1)])
    for key in ("bbox", "mask", "keypoints"):
        np.testing.assert_array_equal(back["objects"][key], ex["objects"][key])
    np.testing.assert_array_equal(back["image"], ex["image"])
    np.testing.assert_array_equal(_example()["image"], ex["image"])


def test_flip_pairs_from_coco_names():
    names = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "right_hip", "left_hip"]
    assert augment.flip_pairs_from_names(names) == [(1, 2), (3, 4), (6, 5)]


def test_flip_doubled_source():
    source = augment.FlipDoubled([_example(), _example()], flip_pairs=[(0, 1)])
    assert len(source) == 4
    np.testing.assert_array_equal(source[1]["objects"]["bbox"], [[0, 1, 2, 3]])
    np.testing.assert_array_equal(source[3]["objects"]["bbox"], [[4, 1, 6, 3]])
    with pytest.raises(IndexError, match=r"index 4 outside \[0, 4\)"):
        source[4]


def _two_objects():
    """4 x 6 image; object A box (0, 1)-(2, 3), object B box (3, 0)-(6, 4) (columns 3-5)."""
    ex = _example()
    mask = np.zeros((2, 4, 6, 1), np.uint8)
    mask[0, 1:3, 0:2] = 1
    mask[1, :, 3:6] = 1
    keypoints = np.array([[[1.5, 2.5, 2], [0, 0, 0], [0, 0, 0]],
                          [[4.5, 1.5, 2], [5.5, 3.5, 1], [0, 0, 0]]], np.float32)
    ex["objects"] = {"bbox": np.array([[0, 1, 2, 3], [3, 0, 6, 4]], np.float32),
                     "label": np.array([3, 1]), "is_crowd": np.array([False, True]),
                     "area": np.array([4.0, 12.0], np.float32), "mask": mask,
                     "keypoints": keypoints}
    return ex


def test_shorter_side_size_with_max_size():
    assert augment.shorter_side_size(4, 6, 8) == (8, 12)  # x2
    assert augment.shorter_side_size(4, 6, 8, 10) == (7, 10)  # x2 would be 12 > 10: x10/6
    assert augment.shorter_side_size(600, 400, 800, 1333) == (1200, 800)
    assert augment.shorter_side_size(480, 640, 800, 1333) == (800, 1067)  # 1066.67


def test_resize_shorter_side_by_hand():
    out = augment.resize_shorter_side(_two_objects(), 8, 10)  # 4 x 6 -> 7 x 10
    sx, sy = 10 / 6, 7 / 4
    assert out["image"].shape == (7, 10, 3)
    np.testing.assert_allclose(out["objects"]["bbox"], [[0, sy, 2 * sx, 3 * sy],
                                                        [3 * sx, 0, 10, 7]], rtol=1e-6)
    np.testing.assert_allclose(out["objects"]["keypoints"][0, 0], [1.5 * sx, 2.5 * sy, 2])
    np.testing.assert_allclose(out["objects"]["area"], [4 * sx * sy, 12 * sx * sy], rtol=1e-6)
    # nearest rows (i + 0.5) * 4 / 7 -> 0 0 1 2 2 3 3; columns (j + 0.5) * 0.6 ->
    # 0 0 1 2 2 3 3 4 5 5 (A: rows 1-2, B: columns 3-5)
    np.testing.assert_array_equal(out["objects"]["mask"][0, :, :, 0].any(1),
                                  [0, 0, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(out["objects"]["mask"][1, 0, :, 0],
                                  [0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    assert out["segmentation"].shape == (7, 10, 1)


def test_resize_crop_clips_boxes_and_drops_instances_outside():
    # x2 to 8 x 12, window rows 2-5, columns 4-9: A (0,2)-(4,6) falls left of it (dropped),
    # B (6,0)-(12,8) -> shifted (2,-2)-(8,6) -> clipped (2,0)-(6,4)
    out = augment.resize_crop(_two_objects(), (8, 12), (2, 4, 4, 6))
    o = out["objects"]
    np.testing.assert_array_equal(o["bbox"], [[2, 0, 6, 4]])
    np.testing.assert_array_equal(o["label"], [1])
    np.testing.assert_array_equal(o["is_crowd"], [True])
    # B's points: (4.5, 1.5) -> (9, 3) -> (5, 1) inside; (5.5, 3.5) -> (11, 7) -> (7, 5)
    # outside the 6 x 4 window: unlabelled
    np.testing.assert_array_equal(o["keypoints"], [[[5, 1, 2], [0, 0, 0], [0, 0, 0]]])
    # rows 2-5 <- source rows 1 1 2 2; columns 4-9 <- 2 2 3 3 4 4: B covers source columns 3-5
    np.testing.assert_array_equal(o["mask"][0, ..., 0], [[0, 0, 1, 1, 1, 1]] * 4)
    ex = _two_objects()
    full = np.asarray(PIL.Image.fromarray(ex["image"]).resize((12, 8), PIL.Image.BILINEAR))
    np.testing.assert_array_equal(out["image"], full[2:6, 4:10])  # resized, then cut
    assert out["segmentation"].shape == (4, 6, 1)
    with pytest.raises(ValueError, match="not inside"):
        augment.resize_crop(ex, (8, 12), (6, 0, 4, 6))


def test_scale_jitter_crop_draws_scale_then_offsets():
    ex = _two_objects()
    out = augment.scale_jitter_crop(ex, np.random.default_rng(5), (4, 6), (2.0, 2.0))
    rng = np.random.default_rng(5)  # the same draws: factor, row offset, column offset
    assert rng.uniform(2.0, 2.0) == 2.0
    y0, x0 = int(rng.integers(0, 5)), int(rng.integers(0, 7))
    want = augment.resize_crop(ex, (8, 12), (y0, x0, 4, 6))
    np.testing.assert_array_equal(out["objects"]["bbox"], want["objects"]["bbox"])
    np.testing.assert_array_equal(out["image"], want["image"])
    # a factor below 1: the whole (smaller) image is kept, nothing cropped
    small = augment.scale_jitter_crop(ex, np.random.default_rng(0), (4, 6), (0.5, 0.5))
    np.testing.assert_array_equal(small["objects"]["bbox"], [[0, 0.5, 1, 1.5], [1.5, 0, 3, 2]])
    assert small["image"].shape == (2, 3, 3)


def test_adjust_colour_by_hand():
    image = np.array([[[100, 50, 0], [200, 100, 50]]], np.uint8)
    # brightness x1.5: (150, 75, 0), (300 -> 255, 150, 75); saturation 0: each pixel's luma
    # .299 * 150 + .587 * 75 = 88.875 -> 89; .299 * 255 + .587 * 150 + .114 * 75 = 172.845
    grey = augment.adjust_colour(image, brightness=1.5, saturation=0.0)
    np.testing.assert_array_equal(grey, [[[89] * 3, [173] * 3]])
    # contrast 0.5 around the mean luma m = (.299 * 100 + .587 * 50) / 2 + (.299 * 200 +
    # .587 * 100 + .114 * 50) / 2 = 29.675 + 61.8 = 91.475
    m = 91.475
    want = np.rint((image.astype(float) - m) * 0.5 + m)
    np.testing.assert_array_equal(augment.adjust_colour(image, contrast=0.5), want)
    np.testing.assert_array_equal(augment.adjust_colour(image), image)


def test_pad_to_a_fixed_size_with_validity():
    out = augment.pad_to(_two_objects(), (5, 8))
    np.testing.assert_array_equal(out["image_hw"], [4, 6])
    assert out["image"].shape == (5, 8, 3) and out["objects"]["mask"].shape == (2, 5, 8, 1)
    np.testing.assert_array_equal(out["image"][:4, :6], _two_objects()["image"])
    assert out["image"][4:].max() == 0 and out["image"][:, 6:].max() == 0
    np.testing.assert_array_equal(out["segmentation"][4, :, 0], [255] * 8)
    np.testing.assert_array_equal(out["objects"]["bbox"], _two_objects()["objects"]["bbox"])
    with pytest.raises(ValueError, match="does not fit the 3x8"):
        augment.pad_to(_two_objects(), (3, 8))


def test_instance_limit_counts_the_excess(caplog):
    limit = augment.InstanceLimit(1, "train")
    out = limit(_two_objects())
    np.testing.assert_array_equal(out["objects"]["bbox"], [[0, 1, 2, 3]])
    assert out["objects"]["mask"].shape == (1, 4, 6, 1) and len(out["objects"]["is_crowd"]) == 1
    limit(_two_objects())
    assert (limit.images_truncated, limit.instances_dropped) == (2, 2)
    assert limit.report() == ("train: 2 images had more than max_instances=1 objects; 2 "
                              "objects beyond the limit were left out")
    assert "max_instances=1" in caplog.text
    assert augment.InstanceLimit(2)(_two_objects())["objects"]["label"].tolist() == [3, 1]


def _transform(**kwargs):
    return augment.GeometryTransform([(6, 8)], seed=3, batch_size=2, **kwargs)


def test_geometry_transform_train_is_a_function_of_seed_and_position():
    t = _transform(train=True, scale_range=(0.5, 2.0), photometric=0.3)
    a, b, c = (t(_two_objects(), p) for p in (7, 7, 8))
    for key in ("image", "image_hw"):
        np.testing.assert_array_equal(a[key], b[key])
    assert a["image"].shape == c["image"].shape == (6, 8, 3)
    assert not np.array_equal(a["image"], c["image"])
    source = augment.Augmented([_two_objects()], t)
    np.testing.assert_array_equal(source.draw(0, 7)["image"], a["image"])
    np.testing.assert_array_equal(source[0]["image"], t(_two_objects(), 0)["image"])


def test_geometry_transform_eval_resizes_then_fits_and_pads():
    # shorter side 4 -> 8 gives 8 x 12, larger than 6 x 8: lowered to fit, x1.333 -> 5 x 8
    out = _transform(train=False, short=8)(_two_objects())
    np.testing.assert_array_equal(out["image_hw"], [5, 8])
    np.testing.assert_array_equal(out["orig_hw"], [4, 6])  # evaluated at the original size
    assert out["orig_objects"]["mask"].shape == (2, 4, 6, 1)
    assert out["image"].shape == (6, 8, 3)
    np.testing.assert_allclose(out["objects"]["bbox"][1], [4, 0, 8, 5], rtol=1e-6)
    # the declared set: one size per global batch of 2 draws in training, the last in eval
    t = augment.GeometryTransform([(6, 8), (8, 12)], train=True, seed=0, batch_size=2)
    sizes = [t.size(p) for p in range(40)]
    assert all(sizes[2 * k] == sizes[2 * k + 1] for k in range(20))
    assert set(sizes) == {(6, 8), (8, 12)}
    assert augment.GeometryTransform([(6, 8), (8, 12)], train=False).size(5) == (8, 12)


def test_augmented_training_stream_resumes_exactly():
    from jaxdet.data import pipeline

    examples = [_two_objects() for _ in range(3)]
    source = augment.Augmented(examples, _transform(train=True, scale_range=(0.5, 2.0),
                                                    photometric=0.3))

    def prep(ex):
        return {"image": ex["image"], "image_hw": ex["image_hw"]}

    it = iter(pipeline.train_dataset(source, prep, 2, seed=0, process_index=0,
                                     process_count=1, num_threads=1))
    first = [next(it) for _ in range(2)]
    state = it.get_state()
    rest = [next(it) for _ in range(2)]
    again = iter(pipeline.train_dataset(source, prep, 2, seed=0, process_index=0,
                                        process_count=1, num_threads=1))
    again.set_state(state)
    for want in rest:
        got = next(again)
        for key in ("image", "image_hw", "index"):
            np.testing.assert_array_equal(got[key], want[key])
    # an image drawn twice gets two different augmentations (the position seeds them)
    images = {}
    for batch in first + rest:
        for idx, image in zip(batch["index"], batch["image"], strict=True):
            images.setdefault(int(idx), []).append(image)
    assert any(len(v) > 1 and not np.array_equal(v[0], v[1]) for v in images.values())


def test_augmented_draws_do_not_depend_on_the_process_count():
    from jaxdet.data import pipeline

    source = augment.Augmented([_two_objects() for _ in range(3)],
                               _transform(train=True, scale_range=(0.5, 2.0), photometric=0.3))

    def prep(ex):
        return {"image": ex["image"]}

    one = next(iter(pipeline.train_dataset(source, prep, 4, seed=2, process_index=0,
                                           process_count=1, num_threads=1)))
    parts = [next(iter(pipeline.train_dataset(source, prep, 2, seed=2, process_index=p,
                                              process_count=2, num_threads=1)))
             for p in range(2)]
    for key in ("image", "index"):
        np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), one[key])
