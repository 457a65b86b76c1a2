"""RPN: head layout vs anchor order, targets, losses, proposals, recall; jit and vmap."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet import ops
from jaxdet.detection import rpn

# --- hand-built image: two real gt and one padded row, eight anchors ------------------------

GT = np.array([[0, 0, 10, 10], [40, 40, 60, 60], [0, 0, 0, 0]], np.float32)
GT_VALID = np.array([True, True, False])
ANCHORS = np.array(
    [
        [0, 0, 10, 10],  # 0: IoU 1 with gt 0 -> positive
        [0, 0, 10, 12],  # 1: IoU 100/120 = 0.83 with gt 0 -> positive
        [0, 0, 10, 20],  # 2: IoU 0.5 -> ignored
        [20, 20, 30, 30],  # 3: IoU 0 -> negative
        [5, 0, 15, 10],  # 4: IoU 50/150 = 0.33 -> ignored
        [40, 40, 56, 56],  # 5: IoU 256/400 = 0.64 with gt 1, its best -> low-quality positive
        [40, 40, 50, 50],  # 6: IoU 0.25 -> negative
        [44, 44, 60, 60],  # 7: IoU 0.64 too, ties with 5 -> low-quality positive
    ],
    np.float32,
)
EXPECTED_LABELS = np.array([1, 1, -1, 0, -1, 1, 0, 1], np.int32)
EXPECTED_MATCHES = np.array([0, 0, -2, -1, -2, 1, -1, 1], np.int32)
L125 = math.log(1.25)
EXPECTED_REG = {  # positive anchor -> encode(matched gt, anchor), worked out by hand
    0: [0.0, 0.0, 0.0, 0.0],
    1: [0.0, (5.0 - 6.0) / 12.0, 0.0, math.log(10.0 / 12.0)],
    5: [2.0 / 16, 2.0 / 16, L125, L125],
    7: [-2.0 / 16, -2.0 / 16, L125, L125],
}


# Jitted once per shape and static configuration (eager op-by-op dispatch is slower here).
_TARGET_KW = ("fg_iou", "bg_iou", "batch_size_per_image", "positive_fraction", "weights")
rpn_targets = jax.jit(rpn.rpn_targets, static_argnames=_TARGET_KW)
_PROPOSAL_KW = ("pre_nms_top_n", "post_nms_top_n")  # thresholds traced: one compile
generate_proposals = jax.jit(rpn.generate_proposals, static_argnames=_PROPOSAL_KW)
rpn_losses = jax.jit(rpn.rpn_losses)


def _np_bce(x, z):
    p = 1.0 / (1.0 + np.exp(-x.astype(np.float64)))
    return -(z * np.log(p) + (1 - z) * np.log(1 - p))


def _np_smooth_l1(d, beta):
    a = np.abs(d.astype(np.float64))
    return np.where(a < beta, 0.5 * a * a / beta, a - 0.5 * beta)


# --- RPNHead --------------------------------------------------------------------------------


def test_head_params_names_shapes_and_init():
    c, a = 64, 3
    feats = [jnp.zeros((2, 4, 5, c)), jnp.zeros((2, 2, 3, c))]
    params = rpn.RPNHead(num_anchors=a).init(jax.random.key(0), feats)["params"]
    assert set(params) == {"conv", "cls_logits", "bbox_pred"}
    chex.assert_shape(params["conv"]["kernel"], (3, 3, c, c))
    chex.assert_shape(params["cls_logits"]["kernel"], (1, 1, c, a))
    chex.assert_shape(params["bbox_pred"]["kernel"], (1, 1, c, 4 * a))
    for name in params:
        np.testing.assert_array_equal(params[name]["bias"], 0.0)
    std = float(jnp.std(params["conv"]["kernel"]))
    assert 0.0095 < std < 0.0105, std
    deep = rpn.RPNHead(num_anchors=a, conv_depth=2).init(jax.random.key(0), feats)["params"]
    assert set(deep) == {"conv_0", "conv_1", "cls_logits", "bbox_pred"}


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_head_output_shapes_dtypes(dtype):
    a, c = 3, 8
    feats = [jnp.ones((2, 4, 5, c), dtype), jnp.ones((2, 2, 3, c), dtype)]
    head = rpn.RPNHead(num_anchors=a, dtype=dtype)
    variables = head.init(jax.random.key(1), feats)
    chex.assert_type(jax.tree.leaves(variables), jnp.float32)  # parameters stay float32
    obj, deltas = jax.jit(head.apply)(variables, feats)
    assert len(obj) == len(deltas) == 2
    chex.assert_shape(obj, [(2, 4 * 5 * a), (2, 2 * 3 * a)])
    chex.assert_shape(deltas, [(2, 4 * 5 * a, 4), (2, 2 * 3 * a, 4)])
    chex.assert_type(obj + deltas, jnp.float32)


def test_head_order_matches_generate_level_anchors():
    """Row r of each output belongs to the location and cell anchor of anchor row r.

    The 3x3 conv is made the identity (centre tap), the feature map holds (x, y) of each
    location, cls_logits reads x and bbox_pred writes (x, y, a, k) into anchor a's 4 slots.
    """
    a, c, stride = 3, 2, 8
    sizes, ratios = (32,), (0.5, 1.0, 2.0)
    levels = [(4, 5), (3, 2)]
    feats = []
    for h, w in levels:
        y, x = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        feats.append(jnp.asarray(np.stack([x, y], -1)[None].repeat(2, 0), jnp.float32))
    head = rpn.RPNHead(num_anchors=a)
    params = jax.tree.map(jnp.zeros_like, head.init(jax.random.key(0), feats)["params"])
    params["conv"]["kernel"] = params["conv"]["kernel"].at[1, 1].set(jnp.eye(c))
    params["cls_logits"]["kernel"] = params["cls_logits"]["kernel"].at[0, 0, 0, :].set(1.0)
    k = np.zeros((1, 1, c, 4 * a), np.float32)
    bias = np.zeros((4 * a,), np.float32)
    for i in range(a):
        k[0, 0, 0, 4 * i] = 1.0  # dx <- x
        k[0, 0, 1, 4 * i + 1] = 1.0  # dy <- y
        bias[4 * i + 2] = i  # dw <- anchor index
        bias[4 * i + 3] = -1.0  # dh <- constant
    params["bbox_pred"] = {"kernel": jnp.asarray(k), "bias": jnp.asarray(bias)}
    obj, deltas = head.apply({"params": params}, feats)
    cells = ops.cell_anchors(sizes, ratios)
    for lvl, (h, w) in enumerate(levels):
        anchors = np.asarray(ops.generate_level_anchors((h, w), stride, sizes, ratios))
        centre = (anchors[:, :2] + anchors[:, 2:]) / 2
        d = np.asarray(deltas[lvl][1])
        np.testing.assert_array_equal(d[:, 0] * stride, centre[:, 0])  # x of the location
        np.testing.assert_array_equal(d[:, 1] * stride, centre[:, 1])  # y of the location
        np.testing.assert_array_equal(d[:, 3], -1.0)
        a_idx = d[:, 2].astype(int)
        np.testing.assert_array_equal(anchors - np.concatenate([centre, centre], 1), cells[a_idx])
        np.testing.assert_array_equal(np.asarray(obj[lvl][0]) * stride, centre[:, 0])
        # The documented closed form: row (y * W + x) * A + a.
        r = (2 * w + 1) * a + 2
        assert tuple(d[r, :3]) == (1.0, 2.0, 2.0)


# --- targets --------------------------------------------------------------------------------


def test_targets_hand_built():
    t = rpn_targets(ANCHORS, GT, GT_VALID, jax.random.key(0), batch_size_per_image=8)
    np.testing.assert_array_equal(t["anchor_labels"], EXPECTED_LABELS)
    np.testing.assert_array_equal(t["matched_gt"], EXPECTED_MATCHES)
    chex.assert_shape([t["indices"], t["valid"], t["labels"], t["positive"]], (8,))
    chex.assert_shape(t["regression_targets"], (8, 4))
    chex.assert_type(
        [t["indices"], t["labels"], t["regression_targets"]], [jnp.int32, jnp.float32, jnp.float32]
    )
    idx, valid = np.asarray(t["indices"]), np.asarray(t["valid"])
    # 4 positives (<= int(8 * 0.5)) then 2 negatives, then padding.
    np.testing.assert_array_equal(valid, [True] * 6 + [False] * 2)
    np.testing.assert_array_equal(idx[6:], -1)
    assert sorted(idx[:4]) == [0, 1, 5, 7] and sorted(idx[4:6]) == [3, 6]
    np.testing.assert_array_equal(t["labels"], [1, 1, 1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(t["positive"], [True] * 4 + [False] * 4)
    reg = np.asarray(t["regression_targets"])
    for slot in range(4):
        np.testing.assert_allclose(reg[slot], EXPECTED_REG[int(idx[slot])], atol=1e-6)
    np.testing.assert_array_equal(reg[4:], 0.0)


def test_targets_positive_fraction_and_anchor_valid():
    t = rpn_targets(ANCHORS, GT, GT_VALID, jax.random.key(3), batch_size_per_image=4)
    assert int(t["positive"].sum()) == 2 and int(t["valid"].sum()) == 4
    invalid = np.ones(8, bool)
    invalid[5] = False  # anchor 5 is removed; its tie (7) still takes gt 1's low-quality match
    t = rpn_targets(
        ANCHORS, GT, GT_VALID, jax.random.key(0), anchor_valid=invalid, batch_size_per_image=8
    )
    expected = EXPECTED_LABELS.copy()
    expected[5] = -1
    np.testing.assert_array_equal(t["anchor_labels"], expected)
    assert 5 not in np.asarray(t["indices"]).tolist()
    assert int(t["positive"].sum()) == 3 and int(t["valid"].sum()) == 5


def test_zero_gt_image():
    gt_valid = np.zeros(3, bool)
    t = rpn_targets(ANCHORS, GT, gt_valid, jax.random.key(0), batch_size_per_image=4)
    np.testing.assert_array_equal(t["anchor_labels"], 0)
    np.testing.assert_array_equal(t["valid"], True)  # 4 of the 8 negatives
    np.testing.assert_array_equal(t["labels"], 0.0)
    np.testing.assert_array_equal(t["positive"], False)
    np.testing.assert_array_equal(t["regression_targets"], 0.0)
    obj = jnp.linspace(-2.0, 2.0, 8)
    deltas = jnp.ones((8, 4))

    def total(o, d):
        loss = rpn_losses(o, d, t)
        return loss["objectness_loss"] + loss["box_loss"], loss

    (_, loss), grads = jax.value_and_grad(total, argnums=(0, 1), has_aux=True)(obj, deltas)
    assert float(loss["box_sum"]) == 0.0 and float(loss["box_loss"]) == 0.0
    assert float(loss["count"]) == 4.0
    x = np.asarray(obj)[np.asarray(t["indices"])]
    np.testing.assert_allclose(loss["objectness_loss"], _np_bce(x, 0.0).mean(), rtol=1e-6)
    chex.assert_tree_all_finite(grads)
    np.testing.assert_array_equal(grads[1], 0.0)
    # A static empty gt table behaves the same.
    t0 = rpn_targets(ANCHORS, np.zeros((0, 4)), np.zeros((0,), bool), jax.random.key(0))
    np.testing.assert_array_equal(t0["anchor_labels"], 0)
    assert int(t0["valid"].sum()) == 8 and not bool(t0["positive"].any())


def test_nothing_to_sample_is_finite():
    """All anchors ignored: no sample, every loss term 0, no NaN."""
    t = rpn_targets(ANCHORS, GT, GT_VALID, jax.random.key(0), anchor_valid=np.zeros(8, bool))
    assert not bool(t["valid"].any())
    loss = rpn_losses(jnp.ones(8), jnp.ones((8, 4)), t)
    chex.assert_tree_all_finite(loss)
    assert all(float(v) == 0.0 for v in loss.values())


# --- losses ---------------------------------------------------------------------------------


def test_losses_match_numpy_reference():
    rng = np.random.default_rng(0)
    beta = 1.0 / 9
    obj = rng.normal(size=8).astype(np.float32) * 3
    deltas = rng.normal(size=(8, 4)).astype(np.float32) * 0.3  # both smooth-L1 branches
    t = rpn_targets(ANCHORS, GT, GT_VALID, jax.random.key(1), batch_size_per_image=8)
    loss = jax.jit(rpn.rpn_losses)(obj, deltas, t)
    chex.assert_shape(list(loss.values()), ())
    # NumPy: 6 sampled anchors (4 positives), torchvision's formulas.
    idx = np.asarray(t["indices"])[:6]
    z = np.asarray(EXPECTED_LABELS[idx], np.float64)
    bce = _np_bce(obj[idx], z)
    reg = np.array([EXPECTED_REG[i] for i in idx[:4]])
    box = _np_smooth_l1(deltas[idx[:4]] - reg, beta).sum()
    assert float(loss["count"]) == 6.0
    np.testing.assert_allclose(loss["objectness_sum"], bce.sum(), rtol=1e-5)
    np.testing.assert_allclose(loss["objectness_loss"], bce.mean(), rtol=1e-5)
    np.testing.assert_allclose(loss["box_sum"], box, rtol=1e-5)
    np.testing.assert_allclose(loss["box_loss"], box / 6, rtol=1e-5)
    # bfloat16 predictions are computed in float32.
    loss16 = rpn_losses(obj.astype(jnp.bfloat16), deltas.astype(jnp.bfloat16), t)
    chex.assert_type(list(loss16.values()), jnp.float32)


def test_targets_and_losses_jit_vmap_batch_of_two():
    """Batch mean = sum of per-image sums over sum of counts (torchvision concatenates)."""
    gt = np.stack([GT, GT])
    gt_valid = np.stack([GT_VALID, np.zeros(3, bool)])  # image 1 has no gt
    rngs = jax.random.split(jax.random.key(7), 2)
    obj = jnp.asarray(np.random.default_rng(1).normal(size=(2, 8)), jnp.float32)
    deltas = jnp.full((2, 8, 4), 0.05)

    @jax.jit
    def step(obj, deltas, gt, gt_valid, rngs):
        targets = jax.vmap(lambda g, v, r: rpn_targets(ANCHORS, g, v, r, batch_size_per_image=8))(
            gt, gt_valid, rngs
        )
        return targets, jax.vmap(rpn.rpn_losses)(obj, deltas, targets)

    targets, loss = step(obj, deltas, gt, gt_valid, rngs)
    chex.assert_shape(targets["indices"], (2, 8))
    chex.assert_shape(loss["count"], (2,))
    np.testing.assert_array_equal(loss["count"], [6.0, 8.0])
    for i in range(2):  # the same as one image at a time
        t = rpn_targets(ANCHORS, gt[i], gt_valid[i], rngs[i], batch_size_per_image=8)
        np.testing.assert_array_equal(targets["indices"][i], t["indices"])
        single = rpn_losses(obj[i], deltas[i], t)
        np.testing.assert_allclose(loss["objectness_sum"][i], single["objectness_sum"], 1e-6)
    # torchvision: BCE mean over the 14 sampled anchors of the batch.
    x = np.concatenate([np.asarray(obj[i])[np.asarray(targets["indices"][i])] for i in (0, 1)])
    x = x[np.asarray(targets["valid"]).reshape(-1)]
    z = np.asarray(targets["labels"])[np.asarray(targets["valid"])]
    batch_mean = loss["objectness_sum"].sum() / loss["count"].sum()
    np.testing.assert_allclose(batch_mean, _np_bce(x, z).mean(), rtol=1e-5)


# --- proposals ------------------------------------------------------------------------------

L0_ANCHORS = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], np.float32)
L0_LOGITS = np.array([3.0, 2.0, -1.0], np.float32)  # box 1: IoU 90/110 with box 0 -> suppressed
L1_ANCHORS = np.array(
    [
        [0, 0, 10, 10],  # identical to level 0's best: another level, survives
        [-5, -5, 5, 5],  # clipped to (0, 0, 5, 5)
        [95, 20, 105, 30],  # clipped to (95, 20, 100, 30)
        [30, 30, 30.0005, 40],  # width 5e-4 < min_size: dropped
    ],
    np.float32,
)
L1_LOGITS = np.array([1.0, 0.5, 0.0, 4.0], np.float32)
IMAGE_HW = (80, 100)


def _proposals(l0=L0_LOGITS, l1=L1_LOGITS, d0=None, d1=None, size=IMAGE_HW, **kw):
    d0 = np.zeros((3, 4), np.float32) if d0 is None else d0
    d1 = np.zeros((4, 4), np.float32) if d1 is None else d1
    kw = {"pre_nms_top_n": 10, "post_nms_top_n": 8} | kw
    return generate_proposals([l0, l1], [d0, d1], [L0_ANCHORS, L1_ANCHORS], size, **kw)


def test_proposals_nms_per_level_clip_min_size_padding():
    boxes, scores, valid = _proposals()
    chex.assert_shape([boxes, scores, valid], [(8, 4), (8,), (8,)])
    chex.assert_type([boxes, scores, valid], [jnp.float32, jnp.float32, bool])
    np.testing.assert_array_equal(valid, [True] * 5 + [False] * 3)
    expected = [[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 5, 5], [95, 20, 100, 30], [50, 50, 60, 60]]
    np.testing.assert_array_equal(boxes[:5], expected)
    np.testing.assert_array_equal(boxes[5:], 0.0)
    sig = 1 / (1 + np.exp(-np.array([3.0, 1.0, 0.5, 0.0, -1.0])))
    np.testing.assert_allclose(scores[:5], sig, rtol=1e-6)
    np.testing.assert_array_equal(scores[5:], 0.0)
    assert np.all(np.diff(np.asarray(scores)[:5]) < 0)  # descending


def test_proposals_top_n_and_thresholds():
    # pre_nms_top_n=1: the top of level 1 is the tiny box, removed after the top-k (torchvision
    # order), so only level 0's best remains.
    boxes, _, valid = _proposals(pre_nms_top_n=1)
    np.testing.assert_array_equal(valid, [True] + [False] * 7)
    np.testing.assert_array_equal(boxes[0], [0, 0, 10, 10])
    # post_nms_top_n truncates to the best over all levels.
    boxes, scores, valid = _proposals(post_nms_top_n=2)
    assert bool(valid.all())
    np.testing.assert_allclose(scores, 1 / (1 + np.exp(-np.array([3.0, 1.0]))), rtol=1e-6)
    # score_thresh on the probability: sigmoid(0) = 0.5 passes >= 0.5, sigmoid(-1) does not.
    _, scores, valid = _proposals(score_thresh=0.5)
    assert int(valid.sum()) == 4 and float(scores[3]) == 0.5
    # min_size=6 also drops the clipped (0, 0, 5, 5) and (95, 20, 100, 30).
    _, _, valid = _proposals(min_size=6.0)
    assert int(valid.sum()) == 3
    # Above IoU 90/110 = 0.82 level 0's box 1 is no longer suppressed.
    _, _, valid = _proposals(nms_thresh=0.85)
    assert int(valid.sum()) == 6


def test_proposals_decode_deltas_and_scale_clip():
    d0 = np.zeros((3, 4), np.float32)
    d0[2] = [0.5, -0.5, math.log(2.0), 0.0]  # (50, 50, 60, 60): centre (60, 50), width 20
    d1 = np.zeros((4, 4), np.float32)
    d1[0] = [0.0, 0.0, 20.0, 0.0]  # dw clamped at log(1000/16): width 625, clipped to [0, 100]
    boxes, _, valid = _proposals(d0=d0, d1=d1)
    assert int(valid.sum()) == 5
    np.testing.assert_allclose(boxes[4], [50, 45, 70, 55], atol=1e-5)
    np.testing.assert_allclose(boxes[1], [0, 0, 100, 10], atol=1e-5)


def test_proposals_jit_vmap_batch_of_two():
    logits0 = np.stack([L0_LOGITS, -L0_LOGITS])
    logits1 = np.stack([L1_LOGITS, L1_LOGITS])
    sizes = jnp.array([IMAGE_HW, (8, 8)], jnp.float32)  # traced per-image sizes

    @jax.jit
    def batch(l0, l1, sizes):
        fn = lambda a, b, s: rpn.generate_proposals(  # noqa: E731
            [a, b],
            [jnp.zeros((3, 4)), jnp.zeros((4, 4))],
            [L0_ANCHORS, L1_ANCHORS],
            s,
            pre_nms_top_n=10,
            post_nms_top_n=8,
        )
        return jax.vmap(fn)(l0, l1, sizes)

    boxes, scores, valid = batch(logits0, logits1, sizes)
    chex.assert_shape([boxes, scores, valid], [(2, 8, 4), (2, 8), (2, 8)])
    ref_boxes, ref_scores, ref_valid = _proposals()
    np.testing.assert_array_equal(boxes[0], ref_boxes)
    np.testing.assert_allclose(scores[0], ref_scores, rtol=1e-6)
    np.testing.assert_array_equal(valid[0], ref_valid)
    # Image 1 (8 x 8, level-0 logits negated): level 0's boxes 1 (logit -2) and 0 (-3) clip to
    # (1, 0, 8, 8) and (0, 0, 8, 8), IoU 7/8, so box 0 goes; its box 2 collapses to zero size.
    # Level 1: (0, 0, 8, 8) and (0, 0, 5, 5) survive, box 2 and the tiny box collapse.
    np.testing.assert_array_equal(valid[1], [True] * 3 + [False] * 5)
    np.testing.assert_array_equal(boxes[1, :3], [[0, 0, 8, 8], [0, 0, 5, 5], [1, 0, 8, 8]])
    np.testing.assert_allclose(scores[1, :3], 1 / (1 + np.exp(-np.array([1.0, 0.5, -2.0]))), 1e-6)


# --- recall ---------------------------------------------------------------------------------


def test_proposal_recall():
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60], [0, 0, 0, 0]], np.float32)
    gt_valid = np.array([True, True, True, False])
    proposals = np.array(
        [
            [0, 0, 10, 20],  # IoU 0.5 with gt 0: recalled (>=)
            [20, 20, 30, 30],  # exact gt 1, but padding: does not count
            [50, 50, 60, 61],  # IoU 100/110 with gt 2
            [0, 0, 0, 0],  # padding
        ],
        np.float32,
    )
    pv = np.array([True, False, True, False])
    hit, n = jax.jit(rpn.proposal_recall)(proposals, pv, gt, gt_valid)
    chex.assert_type([hit, n], jnp.int32)
    assert (int(hit), int(n)) == (2, 3)
    hit, _ = rpn.proposal_recall(proposals, pv, gt, gt_valid, iou_threshold=0.95)
    assert int(hit) == 0
    hit, n = jax.vmap(rpn.proposal_recall)(
        np.stack([proposals] * 2), np.stack([pv, ~pv]), np.stack([gt] * 2), np.stack([gt_valid] * 2)
    )
    np.testing.assert_array_equal(hit, [2, 1])
    np.testing.assert_array_equal(n, [3, 3])


@pytest.mark.parametrize("top_n, expected_hits", [(4, [2, 1]), (2, [1, 1]), (1, [1, 0])])
def test_batch_proposal_recall_reads_only_the_first_top_n(top_n, expected_hits):
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60], [0, 0, 0, 0]], np.float32)
    gt_valid = np.array([True, True, True, False])
    # image 0: gt 0 at rank 0, gt 2 at rank 2; image 1: gt 1 at rank 1 (rank 0 is padding)
    proposals = np.array([[[0, 0, 10, 20], [0, 0, 1, 1], [50, 50, 60, 61], [0, 0, 0, 0]],
                          [[50, 50, 60, 60], [20, 20, 30, 30], [0, 0, 1, 1], [0, 0, 0, 0]]],
                         np.float32)
    valid = np.array([[True, True, True, False], [False, True, True, False]])
    hit, n = jax.jit(rpn.batch_proposal_recall, static_argnums=4)(
        proposals, valid, np.stack([gt] * 2), np.stack([gt_valid] * 2), top_n)
    chex.assert_type([hit, n], jnp.int32)
    np.testing.assert_array_equal(hit, expected_hits)
    np.testing.assert_array_equal(n, [3, 3])
