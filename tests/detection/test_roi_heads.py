"""RoI heads: targets, box head, losses and detection post-processing (hand-built cases)."""

import functools
import math

import chex
import flax
import jax
import jax.numpy as jnp
import numpy as np

from jaxdet.detection import roi_heads

# ----------------------------------------------------------------------------------------------
# roi_targets
# ----------------------------------------------------------------------------------------------

GT_BOXES = np.array([[0, 0, 10, 10], [20, 20, 40, 40], [0, 0, 0, 0]], np.float32)
GT_LABELS = np.array([2, 0, -1], np.int32)  # 0-based object classes; row 2 is padding
GT_VALID = np.array([True, True, False])
PROPOSALS = np.array(
    [
        [0, 0, 10, 8],  # IoU 0.8 with gt 0 -> label 3
        [20, 20, 40, 30],  # IoU exactly 0.5 with gt 1 -> label 1
        [5, 0, 15, 10],  # IoU 1/3 with gt 0 -> background
        [100, 100, 120, 120],  # IoU 0 -> background
        [0, 0, 10, 10],  # a perfect match, but padding: never sampled
        [20, 20, 40, 29],  # IoU 0.45 with gt 1 -> background
    ],
    np.float32,
)
PROPOSAL_VALID = np.array([True, True, True, True, False, True])

# (roi, label, matched gt, regression target with weights (10, 10, 5, 5)) by hand.
EXPECTED_FG = {
    (0, 0, 10, 8): (3, 0, [0.0, 10 * 1 / 8, 0.0, 5 * math.log(10 / 8)]),
    (20, 20, 40, 30): (1, 1, [0.0, 10 * 5 / 10, 0.0, 5 * math.log(2)]),
    (0, 0, 10, 10): (3, 0, [0.0, 0.0, 0.0, 0.0]),  # gt 0 appended
    (20, 20, 40, 40): (1, 1, [0.0, 0.0, 0.0, 0.0]),  # gt 1 appended
}
EXPECTED_BG = {(5, 0, 15, 10), (100, 100, 120, 120), (20, 20, 40, 29)}


def _targets(rng=0, **kw):
    return roi_heads.roi_targets(
        PROPOSALS, PROPOSAL_VALID, GT_BOXES, GT_LABELS, GT_VALID, jax.random.key(rng), **kw
    )


def _rows(t):
    """Valid rows of RoiTargets as {roi tuple: (label, matched_gt, target)}, in order."""
    out = []
    for i in np.flatnonzero(np.asarray(t.valid)):
        roi = tuple(float(v) for v in np.asarray(t.rois[i]))
        out.append(
            (roi, int(t.labels[i]), int(t.matched_gt[i]), np.asarray(t.regression_targets[i]))
        )
    return out


def test_roi_targets_hand_built():
    t = _targets(batch_size_per_image=8, positive_fraction=0.5)
    chex.assert_shape(t.rois, (8, 4))
    chex.assert_shape(t.regression_targets, (8, 4))
    chex.assert_shape([t.labels, t.matched_gt, t.valid], (8,))
    chex.assert_type([t.rois, t.regression_targets], jnp.float32)
    chex.assert_type([t.labels, t.matched_gt], jnp.int32)
    valid = np.asarray(t.valid)
    # 4 foreground (2 proposals + 2 appended gts) then 3 background, then 1 padding row.
    np.testing.assert_array_equal(valid, [True] * 7 + [False])
    rows = _rows(t)
    fg, bg = rows[:4], rows[4:]
    assert {r[0] for r in fg} == set(EXPECTED_FG)
    for roi, label, m, target in fg:
        exp_label, exp_m, exp_target = EXPECTED_FG[roi]
        assert (label, m) == (exp_label, exp_m), roi
        np.testing.assert_allclose(target, exp_target, rtol=1e-5, atol=1e-6)
    assert {r[0] for r in bg} == EXPECTED_BG
    for _, label, m, target in bg:
        assert (label, m) == (0, -1)
        np.testing.assert_array_equal(target, 0.0)
    # Padding rows are all zeros.
    np.testing.assert_array_equal(np.asarray(t.rois)[~valid], 0.0)
    np.testing.assert_array_equal(np.asarray(t.labels)[~valid], 0)
    np.testing.assert_array_equal(np.asarray(t.matched_gt)[~valid], -1)


def test_roi_targets_positive_fraction_caps_foreground():
    # 8 slots at 0.25: at most 2 foreground, then all 3 background.
    for seed in range(4):
        t = _targets(seed, batch_size_per_image=8, positive_fraction=0.25)
        labels, valid = np.asarray(t.labels), np.asarray(t.valid)
        np.testing.assert_array_equal(valid, [True] * 5 + [False] * 3)
        assert (labels[:2] > 0).all() and (labels[2:] == 0).all()
        rows = _rows(t)
        assert {r[0] for r in rows[:2]} <= set(EXPECTED_FG)
        assert {r[0] for r in rows[2:]} == EXPECTED_BG


def test_roi_targets_zero_gt_is_all_background_and_losses_finite():
    t = roi_heads.roi_targets(
        PROPOSALS,
        PROPOSAL_VALID,
        np.zeros((3, 4), np.float32),
        np.zeros(3, np.int32),
        np.zeros(3, bool),
        jax.random.key(0),
        batch_size_per_image=8,
    )
    # The 5 valid proposals are background; appended padded gts and the padded proposal never.
    np.testing.assert_array_equal(np.asarray(t.valid), [True] * 5 + [False] * 3)
    np.testing.assert_array_equal(np.asarray(t.labels), 0)
    np.testing.assert_array_equal(np.asarray(t.matched_gt), -1)
    np.testing.assert_array_equal(np.asarray(t.regression_targets), 0.0)
    rois = {tuple(float(v) for v in r) for r in np.asarray(t.rois)[:5]}
    assert rois == {tuple(float(v) for v in p) for p in PROPOSALS[PROPOSAL_VALID]}

    num_classes = 3
    logits = jax.random.normal(jax.random.key(1), (8, num_classes + 1))
    deltas = jax.random.normal(jax.random.key(2), (8, 4 * (num_classes + 1)))

    def total(logits, deltas):
        terms = roi_heads.roi_losses(logits, deltas, t)
        return sum(s / jnp.maximum(n, 1.0) for s, n in terms.values()), terms

    (_, terms), grads = jax.jit(jax.value_and_grad(total, argnums=(0, 1), has_aux=True))(
        logits, deltas
    )
    ce_sum, n = terms["loss_classifier"]
    box_sum, n_box = terms["loss_box_reg"]
    assert float(n) == float(n_box) == 5.0
    assert float(box_sum) == 0.0
    ref_ce = -jax.nn.log_softmax(logits[:5])[:, 0].sum()
    np.testing.assert_allclose(float(ce_sum), float(ref_ce), rtol=1e-5)
    for g in grads:
        assert np.isfinite(np.asarray(g)).all()
    np.testing.assert_array_equal(np.asarray(grads[1]), 0.0)  # no foreground: no box gradient


# ----------------------------------------------------------------------------------------------
# roi_losses
# ----------------------------------------------------------------------------------------------


def np_losses(logits, deltas, labels, targets, valid, beta):
    """torchvision's fastrcnn_loss in NumPy on the valid rows of a [B, S] batch."""
    logits, deltas = logits[valid].astype(np.float64), deltas[valid].astype(np.float64)
    labels, targets = labels[valid], targets[valid]
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    ce = -logp[np.arange(len(labels)), labels].mean()
    pos = np.flatnonzero(labels > 0)
    pred = deltas.reshape(len(labels), -1, 4)[pos, labels[pos]]
    x = np.abs(pred - targets[pos])
    sl1 = np.where(x < beta, 0.5 * x**2 / beta, x - 0.5 * beta)
    return ce, sl1.sum() / len(labels)


def _loss_batch(seed=0, b=2, s=6, num_classes=3):
    rng = np.random.default_rng(seed)
    k = num_classes + 1
    logits = rng.normal(size=(b, s, k)).astype(np.float32)
    deltas = rng.normal(size=(b, s, 4 * k)).astype(np.float32)
    labels = np.array([[2, 1, 0, 0, 3, 0], [1, 0, 0, 0, 0, 0]], np.int32)
    valid = np.array([[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]], bool)
    labels = np.where(valid, labels, 0)
    targets = rng.normal(size=(b, s, 4)).astype(np.float32) * (labels > 0)[..., None]
    # Garbage where it must not matter: padding logits/deltas.
    logits[~valid] = np.nan
    deltas[~valid] = np.inf
    t = roi_heads.RoiTargets(
        rois=jnp.zeros((b, s, 4)),
        labels=jnp.asarray(labels),
        regression_targets=jnp.asarray(targets),
        matched_gt=jnp.asarray(np.where(labels > 0, 0, -1).astype(np.int32)),
        valid=jnp.asarray(valid),
    )
    return logits, deltas, labels, targets, valid, t


def test_roi_losses_match_numpy_reference():
    logits, deltas, labels, targets, valid, t = _loss_batch()
    for beta in (1 / 9, 0.0, 1.0):
        terms = jax.jit(functools.partial(roi_heads.roi_losses, smooth_l1_beta=beta))(
            logits, deltas, t
        )
        (ce_sum, n), (box_sum, n2) = terms["loss_classifier"], terms["loss_box_reg"]
        chex.assert_shape([ce_sum, n, box_sum, n2], ())
        chex.assert_type([ce_sum, n, box_sum, n2], jnp.float32)
        assert float(n) == float(n2) == 8.0
        ref_ce, ref_box = np_losses(
            logits, deltas, labels, targets, valid, beta if beta > 0 else 1e-30
        )
        np.testing.assert_allclose(float(ce_sum) / float(n), ref_ce, rtol=1e-5)
        np.testing.assert_allclose(float(box_sum) / float(n), ref_box, rtol=1e-5)
        assert ref_box > 0.1  # the case exercises the box loss


def test_roi_losses_per_image_sums_add_up():
    logits, deltas, _, _, _, t = _loss_batch()
    whole = roi_heads.roi_losses(logits, deltas, t)
    per_image = jax.vmap(roi_heads.roi_losses)(logits, deltas, t)
    for key in whole:
        for a, b in zip(whole[key], per_image[key], strict=True):
            np.testing.assert_allclose(float(a), float(np.sum(b)), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(per_image["loss_box_reg"][1]), [5.0, 3.0])


def test_box_loss_uses_only_gt_class_deltas():
    logits, deltas, labels, _, valid, t = _loss_batch()

    def box_loss(d):
        s, n = roi_heads.roi_losses(logits, d, t)["loss_box_reg"]
        return s / n

    base = float(box_loss(deltas))
    grad = np.asarray(jax.grad(box_loss)(jnp.asarray(deltas))).reshape(*labels.shape, -1, 4)
    assert np.isfinite(grad).all()
    fg = valid & (labels > 0)
    used = np.zeros(grad.shape, bool)
    for i, j in zip(*np.nonzero(fg), strict=True):
        used[i, j, labels[i, j]] = True
    assert np.abs(grad[used]).min() > 0
    np.testing.assert_array_equal(grad[~used], 0.0)
    # Changing any other class's deltas (or background rows) leaves the loss unchanged...
    other = deltas.reshape(grad.shape).copy()
    other[~used & np.isfinite(other)] += 7.0
    assert float(box_loss(other.reshape(deltas.shape))) == base
    # ...and changing the gt class's deltas does not.
    moved = deltas.reshape(grad.shape).copy()
    moved[used] += 1.0
    assert float(box_loss(moved.reshape(deltas.shape))) != base


# ----------------------------------------------------------------------------------------------
# postprocess_detections / rescale_boxes
# ----------------------------------------------------------------------------------------------

# Two object classes (logit columns: background, class 0, class 1); zero deltas, so every
# class's box is its proposal (clipped).
PP_PROPOSALS = np.array(
    [
        [10, 10, 50, 50],
        [12, 12, 52, 52],  # IoU 0.82 with row 0
        [100, 100, 140, 140],  # clipped to the 130 x 120 image
        [10, 10, 50, 50],  # padding with a high score: never detected
        [200, 10, 220, 30],  # outside the image: width 0 after clipping
    ],
    np.float32,
)
PP_VALID = np.array([True, True, True, False, True])
PP_PROBS = np.array(
    [
        [0.1, 0.8, 0.1],  # class 0 0.8 kept; class 1 0.1 suppressed by row 1's class 1
        [0.1, 0.6, 0.3],  # class 0 0.6 suppressed by row 0; class 1 0.3 kept
        [0.9, 0.04, 0.06],  # class 0 below the 0.05 threshold; class 1 kept
        [0.0001, 0.9998, 0.0001],
        [0.0001, 0.9998, 0.0001],
    ],
    np.float32,
)
PP_SIZE = (120, 130)  # (height, width)


def _postprocess(**kw):
    return roi_heads.postprocess_detections(
        np.log(PP_PROBS), np.zeros((5, 12), np.float32), PP_PROPOSALS, PP_VALID, PP_SIZE, **kw
    )


def test_postprocess_nms_threshold_padding_and_order():
    d = _postprocess(detections_per_img=5)
    chex.assert_shape(d.boxes, (5, 4))
    chex.assert_shape([d.scores, d.classes, d.valid], (5,))
    chex.assert_type([d.boxes, d.scores], jnp.float32)
    chex.assert_type(d.classes, jnp.int32)
    np.testing.assert_array_equal(np.asarray(d.valid), [True, True, True, False, False])
    np.testing.assert_allclose(np.asarray(d.scores), [0.8, 0.3, 0.06, 0, 0], rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(d.classes), [0, 1, 1, 0, 0])
    np.testing.assert_allclose(
        np.asarray(d.boxes),
        [[10, 10, 50, 50], [12, 12, 52, 52], [100, 100, 130, 120], [0] * 4, [0] * 4],
        atol=1e-4,
    )


def test_postprocess_nms_threshold_and_truncation():
    # With nms_thresh 0.9 nothing overlaps enough: the same-class pairs all survive.
    d = _postprocess(detections_per_img=6, nms_thresh=0.9)
    np.testing.assert_allclose(np.asarray(d.scores), [0.8, 0.6, 0.3, 0.1, 0.06, 0], rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(d.classes), [0, 0, 1, 1, 1, 0])
    # A higher score threshold drops the 0.06 detection; K=2 truncates to the best two.
    d = _postprocess(detections_per_img=5, score_thresh=0.1)
    np.testing.assert_allclose(np.asarray(d.scores), [0.8, 0.3, 0, 0, 0], rtol=1e-5)
    d = _postprocess(detections_per_img=2)
    np.testing.assert_allclose(np.asarray(d.scores), [0.8, 0.3], rtol=1e-5)
    assert np.asarray(d.valid).all()


def test_postprocess_decodes_with_weights():
    # One proposal, one class: deltas (10, 0, 5 log 2, 0) -> shift by 1 width, double width.
    deltas = np.zeros((1, 8), np.float32)
    deltas[0, 4:] = [10.0, 0.0, 5 * math.log(2.0), 0.0]
    d = roi_heads.postprocess_detections(
        np.array([[0.0, 5.0]], np.float32),
        deltas,
        np.array([[10, 10, 20, 20]], np.float32),
        np.array([True]),
        (100, 100),
        detections_per_img=3,
    )
    np.testing.assert_allclose(np.asarray(d.boxes[0]), [15, 10, 35, 20], atol=1e-4)
    np.testing.assert_array_equal(np.asarray(d.valid), [True, False, False])


def test_rescale_boxes():
    boxes = np.array([[10, 20, 30, 40], [0, 0, 0, 0]], np.float32)
    out = roi_heads.rescale_boxes(boxes, (100, 200), (50, 400))  # h x0.5, w x2
    chex.assert_type(out, jnp.float32)
    np.testing.assert_allclose(np.asarray(out), [[20, 10, 60, 20], [0, 0, 0, 0]])


# ----------------------------------------------------------------------------------------------
# jit + vmap over a batch of 2
# ----------------------------------------------------------------------------------------------


def test_jit_vmap_batch_of_two():
    rngs = jax.random.split(jax.random.key(3), 2)
    props = np.stack([PROPOSALS, PROPOSALS[::-1]])
    pvalid = np.stack([PROPOSAL_VALID, PROPOSAL_VALID[::-1]])
    gts = np.stack([GT_BOXES, np.zeros_like(GT_BOXES)])
    glabels = np.stack([GT_LABELS, GT_LABELS])
    gvalid = np.stack([GT_VALID, np.zeros_like(GT_VALID)])
    targets_fn = jax.jit(jax.vmap(functools.partial(roi_heads.roi_targets, batch_size_per_image=8)))
    t = targets_fn(props, pvalid, gts, glabels, gvalid, rngs)
    chex.assert_shape(t.rois, (2, 8, 4))
    chex.assert_shape(t.labels, (2, 8))
    for i in range(2):
        single = roi_heads.roi_targets(
            props[i], pvalid[i], gts[i], glabels[i], gvalid[i], rngs[i], batch_size_per_image=8
        )
        for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(t), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b[i]))
    assert int((np.asarray(t.labels[0]) > 0).sum()) == 2  # int(8 * 0.25) foreground
    assert int((np.asarray(t.labels[1]) > 0).sum()) == 0  # no gt

    logits = np.stack([np.log(PP_PROBS), np.log(PP_PROBS[::-1])])
    deltas = np.zeros((2, 5, 12), np.float32)
    props = np.stack([PP_PROPOSALS, PP_PROPOSALS[::-1]])
    pvalid = np.stack([PP_VALID, PP_VALID[::-1]])
    sizes = jnp.asarray([PP_SIZE, (140, 140)], jnp.float32)
    post = jax.jit(
        jax.vmap(functools.partial(roi_heads.postprocess_detections, detections_per_img=4))
    )
    d = post(logits, deltas, props, pvalid, sizes)
    chex.assert_shape(d.boxes, (2, 4, 4))
    np.testing.assert_allclose(np.asarray(d.scores), [[0.8, 0.3, 0.06, 0]] * 2, rtol=1e-5)
    # The second image is 140 x 140: row (100, 100, 140, 140) is not clipped, and the row
    # (200, 10, 220, 30) is still outside.
    np.testing.assert_allclose(np.asarray(d.boxes[1, 2]), [100, 100, 140, 140], atol=1e-4)
    np.testing.assert_allclose(np.asarray(d.boxes[0, 2]), [100, 100, 130, 120], atol=1e-4)
    back = jax.vmap(roi_heads.rescale_boxes)(d.boxes, sizes, sizes * 2)
    np.testing.assert_allclose(np.asarray(back), 2 * np.asarray(d.boxes), rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# BoxHead
# ----------------------------------------------------------------------------------------------


def test_box_head_shapes_and_param_names():
    num_classes, ch, rep = 4, 8, 16
    feats = jax.random.normal(jax.random.key(0), (3, 7, 7, ch))
    head = roi_heads.BoxHead(num_classes, representation_size=rep)
    params = head.init(jax.random.key(1), feats)["params"]
    shapes = {"/".join(k): v.shape for k, v in flax.traverse_util.flatten_dict(params).items()}
    assert shapes == {
        "box_head/fc6/kernel": (7 * 7 * ch, rep),
        "box_head/fc6/bias": (rep,),
        "box_head/fc7/kernel": (rep, rep),
        "box_head/fc7/bias": (rep,),
        "box_predictor/cls_score/kernel": (rep, num_classes + 1),
        "box_predictor/cls_score/bias": (num_classes + 1,),
        "box_predictor/bbox_pred/kernel": (rep, 4 * (num_classes + 1)),
        "box_predictor/bbox_pred/bias": (4 * (num_classes + 1),),
    }
    logits, deltas = head.apply({"params": params}, feats)
    chex.assert_shape(logits, (3, num_classes + 1))
    chex.assert_shape(deltas, (3, 4 * (num_classes + 1)))
    chex.assert_type([logits, deltas], jnp.float32)

    bf16 = roi_heads.BoxHead(num_classes, representation_size=rep, dtype=jnp.bfloat16)
    logits16, deltas16 = bf16.apply({"params": params}, feats.astype(jnp.bfloat16))
    chex.assert_type([logits16, deltas16], jnp.float32)
    np.testing.assert_allclose(np.asarray(logits16), np.asarray(logits), atol=0.05)
    chex.assert_type(jax.tree.leaves(params), jnp.float32)  # parameters stay float32


def test_box_head_fc6_import_permutation():
    """The documented NCHW -> NHWC permutation of torchvision's fc6 weight is right."""
    rng = np.random.default_rng(0)
    ch, out = 3, 5
    w_torch = rng.normal(size=(out, ch * 7 * 7)).astype(np.float32)  # Linear weight [out, in]
    x_nhwc = rng.normal(size=(2, 7, 7, ch)).astype(np.float32)
    torch_out = x_nhwc.transpose(0, 3, 1, 2).reshape(2, -1) @ w_torch.T  # flatten NCHW
    kernel = w_torch.reshape(out, ch, 7, 7).transpose(2, 3, 1, 0).reshape(7 * 7 * ch, out)
    head = roi_heads.TwoMLPHead(representation_size=out)
    params = head.init(jax.random.key(0), x_nhwc)["params"]
    params = {**params, "fc6": {"kernel": jnp.asarray(kernel), "bias": jnp.zeros(out)}}
    fc6 = jax.nn.relu(torch_out)
    fc7 = params["fc7"]
    expected = np.maximum(fc6 @ np.asarray(fc7["kernel"]) + np.asarray(fc7["bias"]), 0)
    got = head.apply({"params": params}, x_nhwc)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-4, atol=1e-4)
