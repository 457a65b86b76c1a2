"""Mask pasting (torchvision convention) and RoI mask targets (detectron2 convention)."""

import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet import ops
from tests import helpers

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
F32 = np.float32


def np_paste(mask, box, height, width):
    """Loop reference of torchvision's paste_mask_in_image for one ``[m, m]`` mask."""
    m = mask.shape[0]
    padded = np.pad(mask.astype(F32), 1)
    scale = F32((m + 2) / m)
    b = np.asarray(box, F32)
    w_half = (b[2] - b[0]) * F32(0.5) * scale
    h_half = (b[3] - b[1]) * F32(0.5) * scale
    x_c = (b[2] + b[0]) * F32(0.5)
    y_c = (b[3] + b[1]) * F32(0.5)
    x0, y0 = int(x_c - w_half), int(y_c - h_half)  # truncation towards zero
    x1, y1 = int(x_c + w_half), int(y_c + h_half)
    w, h = max(x1 - x0 + 1, 1), max(y1 - y0 + 1, 1)

    def taps(d, out, n):
        src = max((F32(d) + F32(0.5)) * (F32(n) / F32(out)) - F32(0.5), F32(0))
        lo = min(int(np.floor(src)), n - 1)
        lam = min(max(src - F32(lo), F32(0)), F32(1))
        return lo, min(lo + 1, n - 1), F32(1) - lam, lam

    out = np.zeros((height, width), F32)
    for y in range(max(y0, 0), min(y1 + 1, height)):
        ylo, yhi, wy0, wy1 = taps(y - y0, h, m + 2)
        for x in range(max(x0, 0), min(x1 + 1, width)):
            xlo, xhi, wx0, wx1 = taps(x - x0, w, m + 2)
            top = wx0 * padded[ylo, xlo] + wx1 * padded[ylo, xhi]
            bottom = wx0 * padded[yhi, xlo] + wx1 * padded[yhi, xhi]
            out[y, x] = wy0 * top + wy1 * bottom
    return out


@pytest.fixture(scope="module")
def fx():
    return dict(np.load(FIXTURES / "masks.npz"))


# --- pasting (torchvision convention) --------------------------------------------------------


@helpers.with_and_without_jit
def test_paste_matches_torchvision_paste_masks_in_image(variant, fx):
    h, w = int(fx["height"]), int(fx["width"])
    probs = variant(lambda m, b: ops.paste_mask_probs(m, b, h, w))(fx["masks"], fx["boxes"])
    chex.assert_shape(probs, (len(fx["boxes"]), h, w))
    np.testing.assert_allclose(np.asarray(probs), fx["probs"], rtol=1e-5, atol=1e-6)
    assert (fx["probs"] > 0.5).sum() > 100
    binary = ops.paste_masks(fx["masks"], fx["boxes"], h, w)
    chex.assert_type(binary, jnp.bool_)
    # Pixels within float noise of the threshold may go either way; there are none here.
    assert not np.any(np.abs(fx["probs"] - 0.5) < 1e-5)
    np.testing.assert_array_equal(np.asarray(binary), fx["probs"] > 0.5)


def test_paste_matches_numpy_reference_including_boxes_off_the_image():
    rng = np.random.default_rng(0)
    masks = rng.random((16, 6, 6)).astype(np.float32)
    xy = rng.uniform(-30, 40, (16, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(-2, 25, (16, 2))], 1).astype(np.float32)
    boxes[:4] = [[30, 2, 35, 8], [-20, -20, -12, -14], [3.5, 2.5, 9.5, 6.5], [8, 8, 4, 4]]
    out = ops.paste_mask_probs(masks, boxes, 17, 25)
    for i in range(16):
        np.testing.assert_allclose(
            np.asarray(out[i]), np_paste(masks[i], boxes[i], 17, 25), rtol=1e-5, atol=1e-6
        )
    # Boxes wholly past an edge paste nothing (torchvision's slicing wraps around there).
    np.testing.assert_array_equal(np.asarray(out[:2]), 0.0)


def test_paste_constant_mask_hand_computed():
    # A constant mask of 1: inside the padded border the probability is 1; the expanded
    # box of [4, 4, 12, 12] with m = 4 is [2, 2, 14, 14] -> 13x13 pixels pasted.
    out = ops.paste_mask_probs(jnp.ones((1, 4, 4)), jnp.array([[4.0, 4, 12, 12]]), 20, 20)
    o = np.asarray(out[0])
    assert np.all(o[:2] == 0) and np.all(o[15:] == 0) and np.all(o[:, :2] == 0)
    np.testing.assert_allclose(o[5:12, 5:12], 1.0)
    # Separable profile along the 13 pasted pixels: source (d + 0.5) * 6 / 13 - 0.5 in
    # the padded row [0, 1, 1, 1, 1, 0]: 0, 5/26, 17/26, then 1, mirrored at the end.
    p = np.array([0, 5 / 26, 17 / 26] + [1] * 7 + [17 / 26, 5 / 26, 0])
    np.testing.assert_allclose(o[2:15, 2:15], np.outer(p, p), rtol=1e-5, atol=1e-6)
    bin_ = np.asarray(
        ops.paste_masks(jnp.ones((1, 4, 4)), jnp.array([[4.0, 4, 12, 12]]), 20, 20)
    )
    # The paste covers about the box itself: rows/cols 4..12 (ramp crosses 0.5 there).
    np.testing.assert_array_equal(np.nonzero(bin_[0].any(0))[0], np.arange(4, 13))


def test_paste_under_vmap_compiles_once():
    rng = np.random.default_rng(1)
    # chex 0.1.92 refuses to wrap a transformed function: the counter goes inside the vmap.
    paste = jax.vmap(chex.assert_max_traces(lambda m, b: ops.paste_masks(m, b, 12, 14), n=1))
    f = jax.jit(paste)
    for _ in range(3):
        masks = rng.random((2, 3, 5, 5)).astype(np.float32)
        xy = rng.uniform(-2, 10, (2, 3, 2))
        boxes = np.concatenate([xy, xy + 6], -1).astype(np.float32)
        out = f(masks, boxes)
        chex.assert_shape(out, (2, 3, 12, 14))
        for i in range(2):
            for r in range(3):
                np.testing.assert_array_equal(
                    np.asarray(out[i, r]), np_paste(masks[i, r], boxes[i, r], 12, 14) > 0.5
                )


# --- RoI mask targets (detectron2 convention) ------------------------------------------------


@helpers.with_and_without_jit
def test_crop_and_resize_matches_roi_align_of_each_rois_own_mask(variant, fx):
    f = variant(
        lambda m, b, i: ops.crop_and_resize_masks(m, b, i, mask_size=6, threshold=None)
    )
    soft = f(fx["gt_masks"], fx["rois"], fx["mask_index"])
    chex.assert_shape(soft, (len(fx["rois"]), 6, 6))
    np.testing.assert_allclose(np.asarray(soft), fx["targets_soft"], rtol=1e-5, atol=1e-6)
    hard = ops.crop_and_resize_masks(fx["gt_masks"], fx["rois"], fx["mask_index"], 6)
    np.testing.assert_array_equal(np.asarray(hard), fx["targets_soft"] >= 0.5)
    assert 0 < np.asarray(hard).mean() < 1


def test_crop_and_resize_half_mask_hand_computed():
    # Mask 1 on the left half (x < 8) of a 16x16 image; RoI = whole image, 4x4 output:
    # aligned bins of 4 px, samples at x = 0.5 + ... centres; columns 0,1 -> 1; 2,3 -> 0.
    gt = np.zeros((2, 16, 16), bool)
    gt[1, :, :8] = True
    out = ops.crop_and_resize_masks(gt, jnp.array([[0.0, 0, 16, 16]]), jnp.array([1]), 4)
    np.testing.assert_array_equal(np.asarray(out[0]), np.tile([1.0, 1, 0, 0], (4, 1)))
    # The other RoI index reads the other (empty) mask.
    out = ops.crop_and_resize_masks(gt, jnp.array([[0.0, 0, 16, 16]]), jnp.array([0]), 4)
    np.testing.assert_array_equal(np.asarray(out), 0.0)
