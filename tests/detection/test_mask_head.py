"""Mask branch: box-cropped gt masks, RoI mask targets against a NumPy reference of the
full-resolution path, the loss over positives only with the gt class's channel, head shapes and
parameter names, and the wiring into FasterRCNN (traced with eval_shape, nothing compiled)."""

import functools

import chex
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet import ops
from jaxdet.detection import faster_rcnn, mask_head
from tests import helpers


def _np_roi_align_mask(mask: np.ndarray, box, size: int, ratio: int = 2) -> np.ndarray:
    """Direct NumPy RoIAlign (aligned=True, scale 1) of one [H, W] mask, loop over samples."""
    h, w = mask.shape
    x1, y1, x2, y2 = (float(v) - 0.5 for v in box)
    bw, bh = (x2 - x1) / size, (y2 - y1) / size
    out = np.zeros((size, size))
    for py in range(size):
        for px in range(size):
            acc = 0.0
            for iy in range(ratio):
                for ix in range(ratio):
                    y = y1 + py * bh + (iy + 0.5) * bh / ratio
                    x = x1 + px * bw + (ix + 0.5) * bw / ratio
                    if y < -1 or y > h or x < -1 or x > w:
                        continue
                    y, x = max(y, 0.0), max(x, 0.0)
                    yl, xl = int(y), int(x)
                    if yl >= h - 1:
                        yl = yh = h - 1
                        y = float(yl)
                    else:
                        yh = yl + 1
                    if xl >= w - 1:
                        xl = xh = w - 1
                        x = float(xl)
                    else:
                        xh = xl + 1
                    ly, lx = y - yl, x - xl
                    acc += ((1 - ly) * (1 - lx) * mask[yl, xl] + (1 - ly) * lx * mask[yl, xh]
                            + ly * (1 - lx) * mask[yh, xl] + ly * lx * mask[yh, xh])
            out[py, px] = acc / ratio**2
    return out


def _scene():
    """Two hand-built 64x64 instance masks: a rectangle and a right triangle."""
    rect = np.zeros((64, 64), np.uint8)
    rect[10:30, 8:40] = 1
    tri = np.zeros((64, 64), np.uint8)
    tri[34:60, 20:46] = np.tril(np.ones((26, 26), np.uint8))
    masks = np.stack([rect, tri])
    boxes = np.array([[8, 10, 40, 30], [20, 34, 46, 60]], np.float32)  # tight boxes
    return masks, boxes


def test_crop_gt_masks_is_roi_align_over_the_gt_box():
    masks, boxes = _scene()
    crops = mask_head.crop_gt_masks(masks, boxes, 20)
    assert crops.shape == (2, 20, 20) and crops.dtype == np.uint8
    ref = np.stack([_np_roi_align_mask(m.astype(float), b, 20)
                    for m, b in zip(masks, boxes, strict=True)])
    np.testing.assert_allclose(crops / 255.0, ref, atol=0.5 / 255 + 1e-9)
    assert crops[0].min() >= 128  # the rectangle fills its box
    assert mask_head.crop_gt_masks(np.zeros((0, 8, 8)), np.zeros((0, 4)), 5).shape == (0, 5, 5)


def test_mask_targets_match_the_full_resolution_reference():
    masks, boxes = _scene()
    crops = mask_head.crop_gt_masks(masks, boxes, 56)
    rois = np.array([
        [8, 10, 40, 30],  # the rectangle's own box: all ones
        [8, 10, 72, 30],  # twice as wide: left half ones, right half zeros
        [40, 10, 72, 30],  # beside it: nothing
        [4, 6, 30, 26],  # shifted, partly outside the gt box
        [20, 34, 46, 60],  # the triangle's box
        [15, 30, 40, 55],  # shifted over the triangle
        [0, 0, 10, 10],  # background RoI (matched -1): zeros whatever the box
    ], np.float32)
    matched = np.array([0, 0, 0, 0, 1, 1, -1], np.int32)
    got = np.asarray(mask_head.mask_targets(rois, matched, boxes, crops, mask_size=28))
    assert got.shape == (7, 28, 28)
    ref = np.stack([
        (_np_roi_align_mask(masks[max(m, 0)].astype(float), r, 28) >= 0.5) * (m >= 0)
        for r, m in zip(rois, matched, strict=True)])
    np.testing.assert_array_equal(got[0], 1.0)
    np.testing.assert_array_equal(got[1][:, :14], 1.0)
    np.testing.assert_array_equal(got[1][:, 14:], 0.0)
    np.testing.assert_array_equal(got[2], 0.0)
    np.testing.assert_array_equal(got[6], 0.0)
    np.testing.assert_array_equal(got[:3], ref[:3])
    # The crop is resampled once more: a few border pixels may differ from the full-res path.
    disagree = np.mean(got != ref, axis=(1, 2))
    assert disagree.max() <= 0.02, disagree
    # The same targets from the full-resolution op (the path the crops stand in for).
    full = np.asarray(ops.crop_and_resize_masks(masks, rois, np.maximum(matched, 0), 28))
    np.testing.assert_array_equal(full[:6], ref[:6])


def test_loss_is_bce_of_the_gt_class_over_positives_only():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 3, 4, 4, 3)).astype(np.float32)  # [B, R, S, S, C + 1]
    logits[0, 2] = np.nan  # a non-positive row: must not leak
    logits[1, 0] = np.inf
    targets = (rng.random((2, 3, 4, 4)) > 0.5).astype(np.float32)
    labels = np.array([[1, 2, 0], [2, 1, 1]], np.int32)
    positive = np.array([[True, True, False], [False, True, True]])

    def reference():
        total = 0.0
        for b, r in zip(*np.nonzero(positive), strict=True):
            x = logits[b, r, :, :, labels[b, r]].astype(np.float64)
            p = 1 / (1 + np.exp(-x))
            t = targets[b, r]
            total += np.mean(-(t * np.log(p) + (1 - t) * np.log(1 - p)))
        return total

    loss = jax.jit(mask_head.mask_loss)
    s, n = loss(jnp.asarray(logits), labels, targets, positive)
    np.testing.assert_allclose(float(s), reference(), rtol=1e-5)
    assert float(n) == 4.0
    grad = jax.jit(jax.grad(lambda x: mask_head.mask_loss(x, labels, targets, positive)[0]))(
        jnp.asarray(logits))
    grad = np.asarray(grad)
    assert np.isfinite(grad).all()
    np.testing.assert_array_equal(grad[~positive], 0.0)
    # Only the gt class's channel gets gradient.
    channel = np.arange(3)[None, None, :] == labels[..., None]  # [B, R, C + 1]
    off = np.broadcast_to(~channel[:, :, None, None, :], grad.shape)
    np.testing.assert_array_equal(grad[off], 0.0)
    # Changing other classes' logits changes nothing.
    shuffled = logits.copy()
    shuffled[..., 0] += 5.0
    s2, _ = loss(jnp.asarray(shuffled), labels, targets, positive)
    np.testing.assert_allclose(float(s2), float(s), rtol=1e-6)


def test_select_class_picks_the_channel():
    x = np.arange(2 * 3 * 3 * 4, dtype=np.float32).reshape(2, 3, 3, 4)
    got = jax.jit(mask_head.select_class)(x, np.array([3, 1]))
    np.testing.assert_array_equal(got[0], x[0, :, :, 3])
    np.testing.assert_array_equal(got[1], x[1, :, :, 1])


def test_head_and_predictor_shapes_and_names():
    def run(x):
        feats = mask_head.MaskRCNNHeads(width=8)
        pred = mask_head.MaskRCNNPredictor(num_classes=4, width=8)
        v1 = feats.init(jax.random.key(0), x)
        y = feats.apply(v1, x)
        v2 = pred.init(jax.random.key(1), y)
        return v1, v2, pred.apply(v2, y)

    v1, v2, out = jax.eval_shape(run, jnp.zeros((5, 14, 14, 6)))
    assert out.shape == (5, 28, 28, 5) and out.dtype == jnp.float32
    assert sorted(v1["params"]) == ["0", "1", "2", "3"]
    assert v1["params"]["0"]["kernel"].shape == (3, 3, 6, 8)
    assert v2["params"]["conv5_mask"]["kernel"].shape == (2, 2, 8, 8)
    assert v2["params"]["mask_fcn_logits"]["kernel"].shape == (1, 1, 8, 5)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_predictor_with_classes_equals_selecting_from_all_logits(dtype):
    pred = mask_head.MaskRCNNPredictor(num_classes=4, width=8, dtype=dtype)
    x = jax.random.normal(jax.random.key(0), (3, 14, 14, 8))
    classes = jnp.array([4, 0, 2])
    variables = pred.init(jax.random.key(1), x)
    variables = jax.tree.map(lambda v: v + 0.1, variables)  # a nonzero bias
    targets = jax.random.uniform(jax.random.key(2), (3, 28, 28)) > 0.5
    positive = jnp.array([True, False, True])

    def loss(variables, selected):
        if selected:
            logits = pred.apply(variables, x, classes)
            return mask_head.class_mask_loss(logits, targets, positive)[0], logits
        full = pred.apply(variables, x)
        assert full.dtype == jnp.float32
        return (mask_head.mask_loss(full, classes, targets, positive)[0],
                mask_head.select_class(full, classes))

    (value, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True),
                                     static_argnums=1)(variables, True)
    (want_value, want_logits), want_grads = jax.value_and_grad(loss, has_aux=True)(
        variables, False)
    chex.assert_shape(logits, (3, 28, 28))
    assert logits.dtype == jnp.float32
    tol = 1e-5 if dtype == jnp.float32 else 2e-2
    np.testing.assert_allclose(logits, want_logits, rtol=tol, atol=tol)
    np.testing.assert_allclose(value, want_value, rtol=tol)
    if dtype == jnp.bfloat16:
        return  # bfloat16 gradients sum 28 * 28 * R rounded terms in another order
    for g, w in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads), strict=True):
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol * float(jnp.max(jnp.abs(w))))


def _tiny_detector(mask: bool):
    spec = mask_head.MaskSpec(width=8, rois_per_image=3)
    return helpers.tiny_two_stage_detector(16, mask=spec if mask else None)


def test_faster_rcnn_mask_branch_wiring():
    model = _tiny_detector(mask=True)
    images = jnp.zeros((2, 64, 64, 3))
    targets = {"gt_boxes": jnp.array([[[4, 4, 30, 30], [0, 0, 0, 0]]] * 2, jnp.float32),
               "gt_labels": jnp.zeros((2, 2), jnp.int32),
               "gt_valid": jnp.array([[True, False]] * 2),
               "gt_masks": jnp.zeros((2, 2, 16, 16), jnp.uint8)}

    def run():
        test, v = model.init_with_output(jax.random.key(0), images, train=False)
        train, _ = model.apply(v, images, train=True, targets=targets,
                               rng=jax.random.split(jax.random.key(1), 2),
                               mutable=["batch_stats"])
        return v, test, train

    v, test, train = jax.eval_shape(run)
    params = flax.traverse_util.flatten_dict(v["params"], sep="/")
    assert "mask_head/3/kernel" in params and "mask_predictor/conv5_mask/kernel" in params
    assert params["mask_predictor/mask_fcn_logits/kernel"].shape == (1, 1, 8, 4)
    assert test["masks"].shape == (2, 5, 28, 28)
    assert set(train["terms"]) == set(faster_rcnn.LOSS_TERMS) | {"roi_mask"}
    assert faster_rcnn.loss_terms_for({"mask": {}}, 3)[-1] == "roi_mask"
    # Off by default: no mask loss term (the detector tests cover the plain model).
    assert faster_rcnn.loss_terms_for({}, 3) == faster_rcnn.LOSS_TERMS
    assert _tiny_detector(mask=False).spec.mask is None


def test_crop_gt_masks_on_a_full_resolution_mask_equals_the_full_products():
    """The products restricted to each box's rows/columns give the full products' values
    (the terms left out are exact zeros) on COCO-sized 1344 x 1344 masks, boxes at the
    borders, fractional, tiny and covering the whole image."""
    rng = np.random.default_rng(0)
    h = w = 1344
    boxes = np.array([[100.3, 200.7, 420.2, 333.9],  # fractional
                      [0, 0, 1344, 1344],  # the whole image
                      [1300.5, 10, 1344, 60.25],  # at the right border
                      [0, 1330, 7.5, 1344],  # bottom-left corner
                      [700, 700, 700.5, 701]], np.float64)  # smaller than one pixel
    masks = (rng.random((len(boxes), h, w)) < 0.5).astype(np.uint8)
    got = mask_head.crop_gt_mask_values(masks, boxes, 56)
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        wy = mask_head._align_weights(y1, y2 - y1, h, 56, 2)
        wx = mask_head._align_weights(x1, x2 - x1, w, 56, 2)
        np.testing.assert_allclose(got[k], wy @ masks[k].astype(np.float64) @ wx.T,
                                   rtol=0, atol=1e-12)
    want = np.clip(np.rint(got * 255.0), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(mask_head.crop_gt_masks(masks, boxes, 56), want)
    # and the direct loop over samples (the bottom-left corner box)
    ref = _np_roi_align_mask(masks[3].astype(float), boxes[3], 56)
    np.testing.assert_allclose(got[3], ref, atol=1e-12)


@pytest.mark.parametrize("boxes_per_image", [(1, 1), (3, 3), (3, 0)])
def test_mask_loss_in_slot_chunks_equals_one_pass(monkeypatch, boxes_per_image):
    """The batch's positives packed first, chunks of 2 slots per image (4 of the 8; the second
    skipped where it holds no positive, e.g. all positives in one image) give the loss and
    gradients of one pass over all slots."""
    model = helpers.tiny_two_stage_detector(16, mask=mask_head.MaskSpec(width=8, rois_per_image=4))
    images = jax.random.uniform(jax.random.key(0), (2, 64, 64, 3))
    corners = jnp.array([[4, 4, 30, 30], [30, 10, 60, 40], [8, 36, 28, 60]], jnp.float32)
    targets = {"gt_boxes": jnp.stack([corners] * 2),
               "gt_labels": jnp.array([[0, 1, 2]] * 2, jnp.int32),
               "gt_valid": jnp.arange(3)[None] < jnp.array(boxes_per_image)[:, None],
               "gt_masks": jnp.full((2, 3, 16, 16), 255, jnp.uint8)}
    variables = model.init(jax.random.key(1), images, train=False)
    rng = jax.random.split(jax.random.key(2), 2)

    def mask_loss(params, flip=False):
        batch = jax.tree.map(lambda a: a[::-1] if flip else a, (images, targets, rng))
        out, _ = model.apply({**variables, "params": params}, batch[0], train=True,
                             targets=batch[1], rng=batch[2], mutable=["batch_stats"])
        total, count = out["terms"]["roi_mask"]
        return total, count

    def run(flip=False):
        loss = functools.partial(mask_loss, flip=flip)
        return jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"])

    (whole, count), grads = run()
    monkeypatch.setattr(mask_head, "MASK_SLOT_CHUNK", 2)
    (chunked, chunked_count), chunked_grads = run()
    assert float(count) >= sum(boxes_per_image) and float(chunked_count) == float(count)
    np.testing.assert_allclose(chunked, whole, rtol=1e-5)
    for g, w in zip(jax.tree.leaves(chunked_grads), jax.tree.leaves(grads), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6)
    # Each packed RoI reads its own image's features and gt: the images' order is irrelevant.
    (flipped, flipped_count), _ = run(flip=True)
    assert float(flipped_count) == float(count)
    np.testing.assert_allclose(flipped, whole, rtol=1e-5)


@pytest.mark.parametrize("num_positive, batch, slots_per_image, want", [
    (0, 4, 128, 128), (82, 4, 128, 128), (128, 4, 128, 128), (129, 4, 128, 256),
    (512, 4, 128, 512),  # whole chunks of MASK_SLOT_CHUNK * batch = 128
    (3, 2, 4, 8), (40, 1, 48, 48)])  # slots not a multiple of the chunk: one chunk of all
def test_training_head_slots_are_whole_chunks_holding_the_positives(num_positive, batch,
                                                                    slots_per_image, want):
    assert mask_head.MASK_SLOT_CHUNK == 32
    assert mask_head.training_head_slots(num_positive, batch, slots_per_image) == want
