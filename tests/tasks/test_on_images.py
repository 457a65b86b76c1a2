"""jaxdet.tasks.on_images: outputs at the original image's pixels, checked against a
hand-placed object. The models are oracles (``apply`` finds the bright pixels of the fitted
network input), so the test sees only the fitting and the mapping back: a 360 x 480 photo goes
through a 64 (or 32) px model, and the object's box, mask, label map and joints come back where
they were drawn."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from jaxdet.tasks import on_images
from tests.helpers import load_config

# The object: x 120..240, y 60..150 of a 360 x 480 image (multiples of 480 / 64 and 480 / 32,
# so its edges fall on input pixel edges at both model sizes).
H, W = 360, 480
BOX = (120, 60, 240, 150)
TOLERANCE = 480 / 32  # one input pixel of the 32-px model, in original pixels


def _photo() -> np.ndarray:
    image = np.zeros((H, W, 3), np.uint8)
    image[BOX[1]:BOX[3], BOX[0]:BOX[2]] = 255
    return image


def _bright(images: jnp.ndarray) -> jnp.ndarray:
    return images.mean(-1) > 0.5  # [B, H, W]


def _bright_box(images: jnp.ndarray) -> jnp.ndarray:
    """``[B, 4]`` (x1, y1, x2, y2) input pixels of the bright pixels."""
    bright = _bright(images)
    cols, rows = bright.any(1), bright.any(2)

    def span(mask):
        idx = jnp.arange(mask.shape[-1])
        return (jnp.min(jnp.where(mask, idx, 10**6), -1),
                jnp.max(jnp.where(mask, idx, -1), -1) + 1)

    (x1, x2), (y1, y2) = span(cols), span(rows)
    return jnp.stack([x1, y1, x2, y2], -1).astype(jnp.float32)


class Oracle:
    """Stands in for a Flax module: ``apply`` answers with the bright region."""

    def __init__(self, task: str, masks: bool = False):
        self.task, self.masks = task, masks

    def apply(self, variables, images, *args, **kwargs):
        del variables, args, kwargs
        b, h, w = images.shape[:3]
        box = _bright_box(images)
        if self.task == "detection":
            out = {"boxes": box[:, None], "scores": jnp.full((b, 1), 0.9),
                   "classes": jnp.ones((b, 1), jnp.int32), "valid": jnp.ones((b, 1), bool),
                   "proposals": box[:, None], "proposal_valid": jnp.ones((b, 1), bool)}
            if self.masks:
                out["masks"] = jnp.ones((b, 1, 28, 28), jnp.float32)
            return out
        if self.task == "segmentation":
            bright = _bright(images).astype(jnp.float32)
            return jnp.stack([1 - bright, bright], -1) * 10
        if self.task == "localization":
            return {"class_logits": jnp.tile(jnp.array([[0.0, 5.0]]), (b, 1)),
                    "box": box / jnp.array([w, h, w, h], jnp.float32)}
        centre = (box[:, :2] + box[:, 2:]) / 2 / jnp.array([w, h], jnp.float32)
        return {"joints": jnp.tile(centre, (1, 17))}


def _run(config, task):
    image = _photo()
    fitted = on_images.fit_image(image, config)
    batch = {k: jnp.asarray(v[None]) for k, v in fitted.items()}
    batch["mask"] = jnp.ones((1,), jnp.float32)
    oracle = Oracle(task, masks="mask" in config.get("model", {}))
    out = on_images.make_batch_predict_fn(oracle, config)({}, {}, batch)
    out = {k: np.asarray(v[0]) for k, v in out.items()}
    return on_images.image_results(image, fitted, out, config, ["a", "b"], [3, 17])


def _xyxy(bbox):
    x, y, w, h = bbox
    return [x, y, x + w, y + h]


@pytest.mark.parametrize("name", ["faster_rcnn_shapes", "mask_rcnn_shapes"])
def test_detection_box_and_mask_come_back_in_original_pixels(name):
    config = load_config(name, "runlocal")
    config.data.image_size = 64
    (record,), picture = _run(config, "detection")
    np.testing.assert_allclose(_xyxy(record["bbox"]), BOX, atol=TOLERANCE)
    assert (record["category_id"], record["category_name"]) == (17, "b")
    assert picture.size == (W, H)
    if "mask" in name:
        mask = mask_utils.decode(record["segmentation"])
        assert mask.shape == (H, W)
        drawn = np.zeros((H, W), bool)
        drawn[BOX[1]:BOX[3], BOX[0]:BOX[2]] = True
        iou = (mask.astype(bool) & drawn).sum() / (mask.astype(bool) | drawn).sum()
        assert iou > 0.85
    else:
        assert "segmentation" not in record


def test_segmentation_label_map_is_the_drawn_region_at_the_original_size():
    config = load_config("segmentation", "runlocal")  # a 32 x 32 model
    label_map, overlay = _run(config, "segmentation")
    assert label_map.shape == (H, W) and overlay.size == (W, H)
    drawn = np.zeros((H, W), bool)
    drawn[BOX[1]:BOX[3], BOX[0]:BOX[2]] = True
    iou = ((label_map == 1) & drawn).sum() / ((label_map == 1) | drawn).sum()
    assert iou > 0.9


def test_localization_box_and_pose_joints_come_back_in_original_pixels():
    config = load_config("localization", "runlocal")
    config.model.box_format = "xyxy"
    (record,), _ = _run(config, "localization")
    np.testing.assert_allclose(_xyxy(record["bbox"]), BOX, atol=TOLERANCE)
    assert record["category_name"] == "b" and record["score"] > 0.9
    (record,), picture = _run(load_config("pose", "runlocal"), "pose")
    joints = np.asarray(record["keypoints"]).reshape(17, 3)
    centre = [(BOX[0] + BOX[2]) / 2, (BOX[1] + BOX[3]) / 2]
    np.testing.assert_allclose(joints[:, :2], np.tile(centre, (17, 1)), atol=TOLERANCE)
    assert picture.size == (W, H)


def test_fit_image_follows_the_configs_resize_and_padding():
    config = load_config("faster_rcnn_shapes", "runlocal")
    config.data.image_size = 64
    fitted = on_images.fit_image(_photo(), config)
    assert fitted["image"].shape == (64, 64, 3)
    np.testing.assert_array_equal(fitted["image_hw"], [48, 64])
    np.testing.assert_array_equal(fitted["orig_hw"], [H, W])
    assert fitted["image"][48:].max() == 0  # padding below the fitted image


def test_stack_batch_pads_with_zeros_and_masks_the_padding():
    config = load_config("faster_rcnn_shapes", "runlocal")
    config.data.image_size = 64
    fitted = [on_images.fit_image(_photo(), config),
              on_images.fit_image(np.full((20, 10, 3), 9, np.uint8), config)]
    batch = on_images.stack_batch(fitted, 3)
    np.testing.assert_array_equal(batch["mask"], [1, 1, 0])
    np.testing.assert_array_equal(batch["index"], [0, 1, 0])
    np.testing.assert_array_equal(batch["image_hw"], [[48, 64], [64, 32], [0, 0]])
    np.testing.assert_array_equal(batch["orig_hw"], [[H, W], [20, 10], [0, 0]])
    assert batch["image"].shape == (3, 64, 64, 3) and batch["image"][2].max() == 0
    np.testing.assert_array_equal(batch["image"][1], fitted[1]["image"])
