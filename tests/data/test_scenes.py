"""The scene generator: format, label consistency, and the difficulty its docstring pins."""


import numpy as np
import pytest
from scipy import stats

from jaxdet.data import scenes

SPEC = scenes.SceneSpec()


def _scenes(n: int, spec: scenes.SceneSpec = SPEC, offset: int = 0) -> list[dict]:
    return [scenes.generate_scene(np.random.default_rng(offset + i), spec) for i in range(n)]


@pytest.fixture(scope="module")
def many() -> list[dict]:
    return _scenes(300)


def _owner(scene: dict) -> np.ndarray:
    """[H, W] index of the visible object at each pixel, -1 for background."""
    owner = np.full(scene["segmentation"].shape, -1)
    for k, mask in enumerate(scene["masks"]):
        owner[mask.astype(bool)] = k
    return owner


def _object_colours(scenes_: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Median RGB of each object's visible pixels [M, 3] and its label [M]."""
    colours, labels = [], []
    for scene in scenes_:
        for mask, label in zip(scene["masks"], scene["labels"], strict=True):
            colours.append(np.median(scene["image"][mask.astype(bool)], axis=0))
            labels.append(label)
    return np.asarray(colours), np.asarray(labels)


def test_constants():
    assert scenes.CLASS_NAMES == ("circle", "square", "triangle", "cross")
    assert scenes.NUM_SEGMENTATION_CLASSES == 5


def test_same_seed_same_scene_other_seed_other_scene():
    a = scenes.generate_scene(np.random.default_rng(7))
    b = scenes.generate_scene(np.random.default_rng(7))
    c = scenes.generate_scene(np.random.default_rng(8))
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert np.abs(a["image"].astype(int) - c["image"]).mean() > 10


def test_shapes_and_dtypes(many):
    for scene in many[:20]:
        n = len(scene["labels"])
        expected = {
            "image": ((128, 128, 3), np.uint8),
            "segmentation": ((128, 128), np.uint8),
            "masks": ((n, 128, 128), np.uint8),
            "boxes": ((n, 4), np.float32),
            "labels": ((n,), np.int64),
            "areas": ((n,), np.int64),
            "full_areas": ((n,), np.int64),
        }
        assert scene.keys() == expected.keys()
        for key, (shape, dtype) in expected.items():
            assert scene[key].shape == shape, key
            assert scene[key].dtype == dtype, key


def test_label_map_is_the_union_of_disjoint_visible_masks(many):
    for scene in many:
        masks = scene["masks"]
        assert set(np.unique(masks)) <= {0, 1}
        assert masks.sum(axis=0).max() == 1  # disjoint, and at least one object pixel
        expected = ((scene["labels"] + 1)[:, None, None] * masks).sum(axis=0)
        np.testing.assert_array_equal(scene["segmentation"], expected)
        np.testing.assert_array_equal(scene["areas"], masks.sum(axis=(1, 2)))


def test_boxes_are_tight_around_visible_masks(many):
    for scene in many[:100]:
        for mask, box in zip(scene["masks"], scene["boxes"], strict=True):
            rows, cols = np.nonzero(mask)
            expected = [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
            np.testing.assert_array_equal(box, np.asarray(expected, np.float32))


def test_object_counts_cover_the_range_uniformly(many):
    counts = np.bincount([len(s["labels"]) for s in many], minlength=7)
    assert counts[:2].sum() == 0 and counts.sum() == 300
    assert counts[2:].min() >= 40  # 60 expected per count


def test_all_classes_appear_about_equally(many):
    labels = np.concatenate([s["labels"] for s in many])
    freq = np.bincount(labels, minlength=5) / len(labels)
    assert freq[4] == 0 and freq[:4].min() > 0.2  # 0.25 each expected
    assert scenes.CLASS_NAMES  # every label indexes CLASS_NAMES
    assert labels.max() == len(scenes.CLASS_NAMES) - 1


def test_object_sizes_span_10_to_70_px():
    # One object per image: nothing occludes it, so its box is the whole shape's box.
    single = _scenes(300, scenes.SceneSpec(min_objects=1, max_objects=1))
    assert all(len(s["labels"]) == 1 for s in single)
    sizes = np.array([(s["boxes"][0, 2:] - s["boxes"][0, :2]).max() for s in single])
    assert sizes.min() >= 10 - 2 and sizes.max() <= 70 + 1  # ±2 px of rasterisation
    assert sizes.min() <= 14 and sizes.max() >= 66
    assert abs(np.median(sizes) - 40) < 6
    for s in single:
        np.testing.assert_array_equal(s["areas"], s["full_areas"])


def test_occlusion_happens_but_leaves_30_percent_visible(many):
    fraction = np.concatenate([s["areas"] / s["full_areas"] for s in many])
    assert fraction.min() >= 0.3
    assert fraction.max() == 1.0
    assert (fraction < 0.95).mean() > 0.2  # a good share of objects is partly hidden
    assert np.concatenate([s["areas"] for s in many]).min() >= 12


def test_squares_are_rotated_up_to_20_degrees():
    spec = scenes.SceneSpec(min_objects=1, max_objects=1, class_names=("square",),
                            min_size=40, max_size=60)
    fill = []
    for s in _scenes(60, spec):
        w, h = s["boxes"][0, 2:] - s["boxes"][0, :2]
        fill.append(s["areas"][0] / (w * h))
    # An axis-aligned square fills its box; rotated by 20° it fills 1/(cos+sin)² ≈ 0.57.
    assert max(fill) > 0.95 and min(fill) < 0.65


def test_colour_does_not_predict_the_class(many):
    colours, labels = _object_colours(many)
    assert len(labels) > 1000
    # 1) Per channel, class means do not differ more than chance (one-way ANOVA).
    for channel in range(3):
        groups = [colours[labels == k, channel] for k in range(4)]
        assert stats.f_oneway(*groups).pvalue > 1e-3
    # 2) A colour-only classifier (15-NN on the object's colour) is at chance level...
    half = len(labels) // 2

    def knn_accuracy(features: np.ndarray) -> float:
        d = ((features[half:, None] - features[None, :half]) ** 2).sum(-1)
        neighbours = labels[:half][np.argsort(d, axis=1)[:, :15]]
        votes = np.stack([(neighbours == k).sum(1) for k in range(4)], axis=1)
        return float((votes.argmax(1) == labels[half:]).mean())

    assert knn_accuracy(colours) < 0.32  # chance = 0.25, ~600 test objects
    # ... while the same classifier does find a class-dependent colour shift.
    assert knn_accuracy(colours + 80.0 * labels[:, None]) > 0.6


def test_object_colours_span_the_rgb_cube_like_the_background(many):
    colours, _ = _object_colours(many)
    background = np.stack([s["image"][s["segmentation"] == 0].mean(axis=0) for s in many])
    for values in (colours, background):
        assert values.min() < 40 and values.max() > 215
    assert colours.std(axis=0).min() > 60  # uniform on 0..255: 73.6


def test_background_is_textured_and_objects_are_flat(many):
    ratios = []
    for scene in many:
        image, owner = scene["image"].astype(float), _owner(scene)
        background = owner == -1
        assert image[background].std(axis=0).max() > 8  # not a constant colour
        bg_grad, obj_grad = [], []
        for axis in (0, 1):  # neighbour differences inside one region, both directions
            grad = np.abs(np.diff(image, axis=axis)).mean(-1)
            near = owner.take(np.arange(1, 128), axis)
            same = near == owner.take(np.arange(127), axis)
            bg_grad.append(grad[same & (near == -1)])
            obj_grad.append(grad[same & (near >= 0)])
        ratios.append(np.concatenate(bg_grad).mean() / np.concatenate(obj_grad).mean())
    ratios = np.asarray(ratios)
    assert ratios.min() > 1.0 and np.median(ratios) > 1.4


def test_for_image_size_scales_object_sizes():
    small = scenes.SceneSpec.for_image_size(64)
    assert (small.image_size, small.min_size, small.max_size) == (64, 6, 35)
    scene = scenes.generate_scene(np.random.default_rng(0), small)
    assert scene["image"].shape == (64, 64, 3) and scene["masks"].shape[1:] == (64, 64)
    assert scenes.SceneSpec.for_image_size(128) == SPEC


def test_zero_objects_gives_empty_arrays():
    scene = scenes.generate_scene(np.random.default_rng(0),
                                  scenes.SceneSpec(min_objects=0, max_objects=0))
    assert scene["masks"].shape == (0, 128, 128) and scene["boxes"].shape == (0, 4)
    assert scene["segmentation"].max() == 0


@pytest.mark.parametrize("kwargs", [
    dict(min_objects=3, max_objects=2),
    dict(max_size=200),
    dict(min_size=20, max_size=10),
    dict(class_names=("circle", "hexagon")),
])
def test_bad_spec_is_refused(kwargs):
    with pytest.raises(ValueError):
        scenes.SceneSpec(**kwargs)


PERSON_SPEC = scenes.SceneSpec(person_fraction=0.5, min_size=30, max_size=90)


def test_persons_are_off_by_default():
    scene = scenes.generate_scene(np.random.default_rng(0), SPEC)
    assert "keypoints" not in scene
    assert scenes.scene_class_names(SPEC) == scenes.CLASS_NAMES
    assert scenes.scene_class_names(PERSON_SPEC) == (*scenes.CLASS_NAMES, "person")


def test_person_keypoints_lie_inside_and_visibility_matches_occlusion():
    persons = v1 = 0
    for scene in _scenes(40, PERSON_SPEC):
        kp, labels, owner = scene["keypoints"], scene["labels"], _owner(scene)
        assert kp.shape == (len(labels), 17, 3) and kp.dtype == np.float32
        person = labels == len(scenes.CLASS_NAMES)
        assert not kp[~person].any()  # shapes carry zero-visibility keypoints
        for k in np.flatnonzero(person):
            persons += 1
            xy, v = kp[k, :, :2], kp[k, :, 2]
            assert ((xy >= 0) & (xy < 128)).all()
            cols, rows = np.floor(xy).astype(int).T
            seen = owner[rows, cols]
            # v = 2 exactly where the person's own visible mask holds the keypoint's pixel;
            # v = 1 where a later object (painted on top) covers it.
            np.testing.assert_array_equal(v == 2, seen == k)
            assert set(np.unique(v)) <= {1.0, 2.0} and (seen[v == 1] > k).all()
            v1 += int((v == 1).sum())
            # The box is tight around the visible mask (the generic test) and holds every
            # visible keypoint.
            x1, y1, x2, y2 = scene["boxes"][k]
            vis = xy[v == 2]
            assert ((vis >= (x1, y1)) & (vis <= (x2, y2))).all()
    assert 20 <= persons and v1 > 0  # about half of ~100 objects; some keypoints occluded
