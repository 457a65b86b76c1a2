"""SSD: default boxes by hand, matching with forced best boxes, hard-negative mining and
losses against NumPy, output shapes, a few Adam steps, no recompilation."""

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jaxdet import ops
from jaxdet.detection import ssd, ssd_default_boxes

SIZE = 32


def _config(**overrides) -> ml_collections.ConfigDict:
    model = {
        "depth": 0, "stage_sizes": (1, 1, 1), "block": "basic", "width": 4, "stem": "small",
        "norm": "group", "gn_groups": 2, "input_norm": "none",
        # C4 (stride 4: 8x8) + one extra map (4x4), 4 boxes per location: A = 80 * 4
        "ssd_feature_maps": ("C4",), "ssd_extra_channels": (8,), "ssd_min_scale": 0.3,
        "ssd_max_scale": 0.6, "ssd_aspect_ratios": (2.0, 0.5), "ssd_pre_nms_top_n": 50,
        "postprocess": {"detections_per_img": 6}, "recall_top_n": 10,
    }
    model.update(overrides)
    return ml_collections.ConfigDict({"model": model})


def _inputs(batch=2):
    rng = np.random.default_rng(0)
    images = np.full((batch, SIZE, SIZE, 3), 0.2, np.float32)
    images += rng.uniform(0, 0.05, images.shape).astype(np.float32)
    images[:, 2:14, 2:14] = [0.9, 0.1, 0.1]  # class 0 object
    images[:, 14:30, 10:26] = [0.1, 0.1, 0.9]  # class 1 object
    gt_boxes = np.zeros((batch, 3, 4), np.float32)
    gt_boxes[:, 0] = [2, 2, 14, 14]
    gt_boxes[:, 1] = [10, 14, 26, 30]
    targets = {"gt_boxes": jnp.asarray(gt_boxes),
               "gt_labels": jnp.asarray([[0, 1, 0]] * batch, jnp.int32),
               "gt_valid": jnp.asarray([[True, True, False]] * batch)}
    return jnp.asarray(images), targets


@pytest.fixture(scope="module")
def setup():
    model = ssd.create_model(_config(), num_classes=2)
    images, targets = _inputs()
    variables = jax.jit(model.init, static_argnames="train")(
        jax.random.key(0), images, train=False)
    return model, variables, images, targets


# --- default boxes ---------------------------------------------------------------------------


def test_scales_follow_the_paper_rule():
    # SSD300: s_min 0.2, s_max 0.9 over 6 maps, continued one step (Caffe's last max_size).
    np.testing.assert_allclose(ssd_default_boxes.ssd_scales(6, 0.2, 0.9),
                               [0.2, 0.34, 0.48, 0.62, 0.76, 0.9, 1.04], atol=1e-12)
    np.testing.assert_allclose(ssd_default_boxes.ssd_scales(1, 0.3, 0.5), [0.3, 0.5])


def test_default_boxes_by_hand():
    # 100x100 image, maps 2x2 and 1x1, scales 0.2, 0.9 (and 1.6 continued); ratio 2 on the
    # first map only. Per location: square s_k, square sqrt(s_k s_k+1), then the ratios.
    b = ssd_default_boxes.default_boxes([(2, 2), (1, 1)], (100, 100), 0.2, 0.9, [(2.0,), ()],
                                        clip=False)
    assert b.shape == (2 * 2 * 3 + 2, 4) and b.dtype == np.float32
    e = 0.5 * np.sqrt(0.2 * 0.9) * 100  # 21.2132
    rw, rh = 0.5 * 0.2 / np.sqrt(2) * 100, 0.5 * 0.2 * np.sqrt(2) * 100  # 7.0711, 14.1421
    np.testing.assert_allclose(b[0], [15, 15, 35, 35], atol=1e-4)  # cell (0, 0), centre 25
    np.testing.assert_allclose(b[1], [25 - e, 25 - e, 25 + e, 25 + e], atol=1e-4)
    np.testing.assert_allclose(b[2], [25 - rw, 25 - rh, 25 + rw, 25 + rh], atol=1e-4)
    np.testing.assert_allclose(b[3], [65, 15, 85, 35], atol=1e-4)  # cell (0, 1): x = 75
    np.testing.assert_allclose(b[6], [15, 65, 35, 85], atol=1e-4)  # cell (1, 0): y = 75
    np.testing.assert_allclose(b[12], [5, 5, 95, 95], atol=1e-4)  # map 2, scale 0.9
    np.testing.assert_allclose(b[13], [-10, -10, 110, 110], atol=1e-4)  # sqrt(0.9 * 1.6)
    clipped = ssd_default_boxes.default_boxes([(2, 2), (1, 1)], (100, 100), 0.2, 0.9, [(2.0,), ()])
    np.testing.assert_allclose(clipped[13], [0, 0, 100, 100])
    np.testing.assert_allclose(clipped[:13], b[:13])
    # Non-square image: sizes are fractions of each axis; ratio 2 is twice as tall as wide
    # in normalised units (200 x 100 image: 70.71 x 70.71 px).
    r = ssd_default_boxes.default_boxes([(1, 1)], (100, 200), 0.5, 0.5, [(2.0,)], clip=False)
    h = 0.5 * 0.5 * np.sqrt(2) * 100
    np.testing.assert_allclose(r, [[50, 25, 150, 75], [50, 25, 150, 75],
                                   [100 - h, 50 - h, 100 + h, 50 + h]], atol=1e-4)


def test_spec_reads_the_config_and_validates():
    spec = ssd.SSDSpec.from_config(_config().model, 2)
    assert spec.num_maps == 2 and spec.boxes_per_location == (4, 4)
    per_map = ssd.SSDSpec.from_config(
        _config(ssd_aspect_ratios=((2.0,), (2.0, 0.5, 3.0))).model, 2)
    assert per_map.boxes_per_location == (3, 5)
    with pytest.raises(ValueError, match="!= 1"):
        ssd.SSDSpec.from_config(_config(ssd_aspect_ratios=(1.0, 2.0)).model, 2)
    with pytest.raises(ValueError, match="feature maps"):
        ssd.SSDSpec.from_config(_config(ssd_aspect_ratios=((2.0,),)).model, 2)


# --- matching and mining ---------------------------------------------------------------------


def test_matching_threshold_and_forced_best_box():
    iou = jnp.asarray([
        [0.60, 0.45, 0.00, 0.00, 0.9, 0.0],  # gt 0: box 0 by threshold
        [0.20, 0.40, 0.30, 0.00, 0.0, 0.0],  # gt 1: best box 1 (0.40) - forced, though box
                                             # 1's own argmax is gt 0 (0.45)
        [0.00, 0.00, 0.00, 0.00, 0.0, 0.0],  # gt 2: no overlap, forces nothing
        [0.90, 0.90, 0.90, 0.90, 0.9, 0.9],  # gt 3: padding row
    ], jnp.float32)
    gt_valid = jnp.asarray([True, True, True, False])
    box_valid = jnp.asarray([True, True, True, True, False, True])
    match = jax.jit(ssd.match_default_boxes, static_argnums=3)
    m = match(iou, gt_valid, box_valid, 0.5)
    np.testing.assert_array_equal(m, [0, 1, -1, -1, -2, -1])
    # ops.match's low-quality matches would give box 1 to gt 0 and leave gt 1 unmatched.
    low = jax.jit(ops.match, static_argnums=(2, 3, 4))(
        jnp.where(box_valid, iou, 0.0), gt_valid, 0.5, 0.5, True)
    np.testing.assert_array_equal(low[:2], [0, 0])
    # A forced match overrides a threshold match of another gt; shared best: last gt wins.
    iou2 = jnp.asarray([[0.7, 0.6], [0.3, 0.1], [0.3, 0.2]], jnp.float32)
    m2 = match(iou2, jnp.ones(3, bool), jnp.ones(2, bool), 0.5)
    np.testing.assert_array_equal(m2, [2, 0])


def _mined_ref(loss, negative, num_pos, ratio=3.0, budget=0):
    cand = np.flatnonzero(negative)
    order = cand[np.argsort(-loss[cand], kind="stable")]
    n = min(int(np.floor(ratio * num_pos)), len(cand), budget or len(loss))
    out = np.zeros(len(loss), bool)
    out[order[:n]] = True
    return out


@pytest.mark.parametrize("num_pos,budget", [(5, 0), (20, 0), (5, 9), (0, 0)])
def test_hard_negative_mining_matches_numpy(num_pos, budget):
    rng = np.random.default_rng(num_pos + budget)
    loss = rng.permutation(60).astype(np.float32) / 7.0  # distinct values
    negative = rng.uniform(size=60) < 0.7
    got = np.asarray(jax.jit(ssd.hard_negative_mask, static_argnums=(3, 4))(
        jnp.asarray(loss), jnp.asarray(negative), num_pos, 3.0, budget))
    ref = _mined_ref(loss, negative, num_pos, budget=budget)
    np.testing.assert_array_equal(got, ref)
    expected = min(3 * num_pos, int(negative.sum()), budget or 60)
    assert got.sum() == expected and not np.any(got & ~negative)


# --- losses ----------------------------------------------------------------------------------


def _iou_np(a, b):
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def _losses_np(logits, offsets, boxes, gt_boxes, gt_labels, weights=(10, 10, 5, 5)):
    """SSD's loss sums for one image with every gt and default box valid (NumPy)."""
    iou = _iou_np(gt_boxes, boxes)
    best = iou.max(0)
    match = np.where(best >= 0.5, iou.argmax(0), -1)
    for g in range(len(gt_boxes)):
        match[iou[g].argmax()] = g
    pos = match >= 0
    labels = np.where(pos, gt_labels[np.maximum(match, 0)] + 1, 0)
    z = logits - logits.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    ce = -logp[np.arange(len(labels)), labels]
    mined = _mined_ref(ce, ~pos, pos.sum())
    g = gt_boxes[match[pos]]
    a = boxes[pos]
    aw, ah = a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]
    gw, gh = g[:, 2] - g[:, 0], g[:, 3] - g[:, 1]
    t = np.stack([weights[0] * ((g[:, 0] + gw / 2) - (a[:, 0] + aw / 2)) / aw,
                  weights[1] * ((g[:, 1] + gh / 2) - (a[:, 1] + ah / 2)) / ah,
                  weights[2] * np.log(gw / aw), weights[3] * np.log(gh / ah)], 1)
    d = np.abs(offsets[pos] - t)
    sl1 = np.where(d < 1.0, 0.5 * d * d, d - 0.5)
    return ce[pos | mined].sum(), sl1.sum(), pos.sum()


def test_loss_values_match_numpy():
    spec = ssd.SSDSpec.from_config(_config().model, 2)
    boxes = ssd_default_boxes.default_boxes([(4, 4), (2, 2)], (SIZE, SIZE), 0.3, 0.6,
                                            [(2.0, 0.5)] * 2)
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(len(boxes), 3)).astype(np.float32)
    offsets = rng.normal(scale=0.5, size=(len(boxes), 4)).astype(np.float32)
    gt = np.asarray([[2, 2, 14, 14], [10, 14, 26, 30], [20, 1, 23, 5]], np.float32)
    labels = np.asarray([0, 1, 1], np.int32)
    got = jax.jit(ssd.ssd_image_losses, static_argnums=7)(
        logits, offsets, boxes, jnp.ones(len(boxes), bool), gt, labels,
        jnp.ones(3, bool), spec)
    ref = _losses_np(logits, offsets, boxes, gt, labels)
    # The tiny gt 2 (3x4 px) has IoU < 0.5 with every box: only its forced match.
    assert ref[2] >= 4 and float(got[2]) == ref[2]
    np.testing.assert_allclose([float(got[0]), float(got[1])], ref[:2], rtol=1e-5)


# --- the model -------------------------------------------------------------------------------


def test_outputs_shapes_and_terms(setup):
    model, variables, images, targets = setup
    assert sorted(variables["params"]) == ["body", "extra0", "head"]
    assert "layer4_0" not in variables["params"]["body"]  # cut after C4
    fn = jax.jit(chex.assert_max_traces(
        lambda v, t: model.apply(v, images, train=True, targets=t), n=1))
    out = fn(variables, dict(targets, example_mask=jnp.ones(2)))
    assert set(out["terms"]) == set(ssd.LOSS_TERMS)
    chex.assert_shape(list(jax.tree.leaves(out)), ())
    chex.assert_type(list(jax.tree.leaves(out)), jnp.float32)
    n = float(out["terms"]["ssd_classifier"][1])
    assert n == float(out["terms"]["ssd_box"][1]) == float(out["num_foreground_rois"][0])
    assert n >= 4  # at least the two forced matches per image
    assert float(out["recall"][1]) == 4.0
    # A padded example adds nothing; the same call does not compile again.
    padded = dict(targets, example_mask=jnp.asarray([1.0, 0.0]))
    a = fn(variables, padded)
    other = dict(padded, gt_boxes=padded["gt_boxes"].at[1].set(
        jnp.asarray([[1, 2, 30, 31]] * 3, jnp.float32)))
    b = fn(variables, other)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-6)
    assert float(a["num_foreground_rois"][1]) == 1.0 and float(a["recall"][1]) == 2.0
    assert 0 < float(a["terms"]["ssd_box"][1]) < n

    hw = jnp.asarray([[SIZE, SIZE], [16, SIZE]], jnp.int32)
    test = jax.jit(chex.assert_max_traces(
        lambda v, x, h: model.apply(v, x, h, train=False), n=1))
    det = test(variables, images, hw)
    chex.assert_shape([det["boxes"], det["proposals"]], (2, None, 4))
    chex.assert_shape([det["scores"], det["classes"], det["valid"]], (2, 6))
    chex.assert_shape([det["proposals"], det["proposal_valid"]], (2, 10, ...))
    chex.assert_type([det["classes"], det["valid"]], [jnp.int32, jnp.bool_])
    boxes = np.asarray(det["boxes"])[1][np.asarray(det["valid"])[1]]
    assert np.all(boxes[:, 3] <= 16 + 1e-4)  # clipped to the unpadded image
    test(variables, images + 0.1, hw)  # new values, same shapes: no second trace


def test_adam_steps_lower_the_loss(setup):
    model, variables, images, targets = setup

    def loss(params):
        out = model.apply({"params": params}, images, train=True, targets=targets)
        return sum(s / jnp.maximum(n, 1) for s, n in out["terms"].values())

    opt = optax.adam(2e-2)

    @jax.jit
    def step(params, state):
        value, grads = jax.value_and_grad(loss)(params)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, value

    params = variables["params"]
    state = opt.init(params)
    values = []
    for _ in range(10):
        params, state, value = step(params, state)
        values.append(float(value))
    assert np.all(np.isfinite(values))
    assert values[-1] < 0.6 * values[0], values


def test_detections_sorted_and_thresholded(setup):
    _, variables, images, _ = setup
    low = ssd.create_model(_config(postprocess={"detections_per_img": 6, "score_thresh": 0.0}),
                           num_classes=2)
    out = jax.jit(lambda v: low.apply(v, images, train=False))(variables)
    scores, valid = np.asarray(out["scores"]), np.asarray(out["valid"])
    assert valid.all()  # 50 candidates above 0 for 6 slots
    assert np.all(np.diff(scores, axis=1) <= 0)
    # The scores are softmax probabilities of the (box, class) candidates.
    assert np.all((scores > 0) & (scores < 1))
