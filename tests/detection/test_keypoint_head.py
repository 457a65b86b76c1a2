"""Keypoint R-CNN branch: head shapes and names, person-RoI selection, targets, loss, decoding."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet.data import augment, stick_figures
from jaxdet.detection import faster_rcnn, roi_heads
from jaxdet.detection import keypoint_head as kh
from tests import helpers


def _np_cells(kp: np.ndarray, roi: np.ndarray, s: int) -> tuple[np.ndarray, np.ndarray]:
    """NumPy reference of torchvision's keypoints_to_heatmap for one RoI: [K] index, valid."""
    x1, y1, x2, y2 = roi.astype(np.float32)
    cx = np.floor((kp[:, 0] - x1) * np.float32(s / (x2 - x1)))
    cy = np.floor((kp[:, 1] - y1) * np.float32(s / (y2 - y1)))
    cx = np.where(kp[:, 0] == x2, s - 1, cx)
    cy = np.where(kp[:, 1] == y2, s - 1, cy)
    valid = (cx >= 0) & (cy >= 0) & (cx < s) & (cy < s) & (kp[:, 2] > 0)
    return np.where(valid, cy * s + cx, 0).astype(np.int32), valid


def test_head_and_predictor_shapes_and_torchvision_names():
    heads = kh.KeypointRCNNHeads(width=8, num_convs=8)
    pred = kh.KeypointRCNNPredictor(num_keypoints=17)
    x = jnp.zeros((3, 14, 14, 5))
    v1 = jax.eval_shape(heads.init, jax.random.key(0), x)
    feats = jax.eval_shape(heads.apply, v1, x)
    v2 = jax.eval_shape(pred.init, jax.random.key(0), jnp.zeros(feats.shape))
    out = jax.eval_shape(pred.apply, v2, jnp.zeros(feats.shape))
    names = set(flax.traverse_util.flatten_dict(v1["params"], sep="/"))
    assert names == {f"{i}/{p}" for i in range(0, 16, 2) for p in ("kernel", "bias")}
    assert feats.shape == (3, 14, 14, 8)
    kernel = v2["params"]["kps_score_lowres"]["kernel"]
    assert kernel.shape == (4, 4, 8, 17)
    assert out.shape == (3, 56, 56, 17) and out.dtype == jnp.float32


def test_predictor_upsampling_is_pytorch_bilinear():
    """kps_score_lowres with an identity-like kernel, then the 2x bilinear upsampling equals
    PyTorch's align_corners=False formula (edge pixels clamp)."""
    pred = kh.KeypointRCNNPredictor(num_keypoints=1)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 3, 3, 1)), jnp.float32)
    v = pred.init(jax.random.key(0), x)
    out = np.asarray(jax.jit(pred.apply)(v, x))[0, :, :, 0]  # [12, 12]
    # Recompute the transpose conv with lax and upsample with PyTorch's formula in NumPy.
    kernel = v["params"]["kps_score_lowres"]["kernel"]
    bias = v["params"]["kps_score_lowres"]["bias"]
    lowres = np.asarray(jax.lax.conv_transpose(x, kernel, (2, 2), ((2, 2), (2, 2)),
                                               dimension_numbers=("NHWC", "HWIO", "NHWC"))
                        + bias)[0, :, :, 0]  # [6, 6]
    n = lowres.shape[0]
    src = np.maximum((np.arange(2 * n) + 0.5) / 2 - 0.5, 0.0)
    lo = np.minimum(np.floor(src).astype(int), n - 1)
    hi = np.minimum(lo + 1, n - 1)
    f = src - lo
    interp = np.zeros((2 * n, n))
    np.add.at(interp, (np.arange(2 * n), lo), 1 - f)
    np.add.at(interp, (np.arange(2 * n), hi), f)
    np.testing.assert_allclose(out, interp @ lowres @ interp.T, rtol=1e-5, atol=1e-5)


def test_select_person_rois_keeps_person_positives_first():
    rois = jnp.arange(6 * 4, dtype=jnp.float32).reshape(6, 4)
    labels = jnp.array([2, 5, 5, 0, 5, 5])  # class 4 (person) = label 5
    matched = jnp.array([0, 1, 2, -1, 3, -1])
    valid = jnp.array([True, True, True, True, False, True])
    r, m, pos = jax.jit(kh.select_person_rois, static_argnums=(4, 5))(
        rois, labels, matched, valid, 4, 4)
    # Person positives: slots 1 and 2 (slot 4 is padding, slot 5 unmatched), then the rest.
    np.testing.assert_array_equal(np.asarray(pos), [True, True, False, False])
    np.testing.assert_array_equal(np.asarray(m), [1, 2, -1, -1])
    np.testing.assert_array_equal(np.asarray(r[:2]), np.asarray(rois[1:3]))


def test_keypoint_targets_match_numpy_on_hand_built_rois():
    s = 8
    gt = np.zeros((2, 4, 3), np.float32)
    gt[0] = [[12, 13, 2], [19.99, 10, 1], [20, 20, 2], [5, 5, 2]]  # last: outside the RoI
    gt[1] = [[30, 30, 0], [31, 33, 2], [40, 44, 2], [36.5, 37.5, 1]]  # first: not labelled
    rois = np.array([[10, 10, 20, 20], [30, 30, 40, 46], [10, 10, 20, 20]], np.float32)
    matched = np.array([0, 1, -1])
    cells, weights, valid = jax.jit(kh.keypoint_targets, static_argnums=3)(rois, matched, gt, s)
    t = cells[..., 0]
    np.testing.assert_array_equal(np.asarray(weights[..., 0]), np.asarray(valid, np.float32))
    assert not np.asarray(weights[..., 1:]).any()
    for r in range(2):
        want_t, want_v = _np_cells(gt[matched[r]], rois[r], s)
        np.testing.assert_array_equal(np.asarray(valid[r]), want_v)
        np.testing.assert_array_equal(np.asarray(t[r]), want_t)
    # Hand-computed: (12, 13) in [10, 20) with 8 cells -> cx = floor(1.6) = 1, cy = floor(2.4)
    # = 2 -> 17; (20, 20) lies on the right/bottom edge -> cell (7, 7) = 63.
    assert int(t[0, 0]) == 2 * s + 1 and int(t[0, 2]) == 63
    assert not bool(valid[0, 3]) and not bool(valid[1, 0])
    assert not np.asarray(valid[2]).any()  # unmatched RoI: no target at all


def _np_loss(logits: np.ndarray, targets: np.ndarray, valid: np.ndarray) -> float:
    r, s, _, k = logits.shape
    x = logits.reshape(r, s * s, k).transpose(0, 2, 1).astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    logp = x - np.log(np.exp(x).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, targets[..., None], -1)[..., 0]
    return float(nll[valid].mean())


def test_loss_is_softmax_ce_over_visible_keypoints_of_person_positives_only():
    rng = np.random.default_rng(0)
    s, k = 6, 3
    # 4 sampled RoIs: person positive, shape positive, person positive, background.
    rois = np.array([[0, 0, 12, 12], [0, 0, 12, 12], [6, 6, 18, 18], [0, 0, 6, 6]], np.float32)
    labels = np.array([5, 2, 5, 0])
    matched = np.array([0, 1, 2, -1])
    gt = np.zeros((3, k, 3), np.float32)
    gt[0] = [[1, 1, 2], [7, 3, 1], [11, 11, 0]]  # third not labelled
    gt[1] = [[2, 2, 2], [3, 3, 2], [4, 4, 2]]  # a shape: would count if not filtered
    gt[2] = [[8, 9, 2], [30, 30, 2], [17, 6, 2]]  # second outside its RoI
    @jax.jit
    def pipeline(logits):
        sel_rois, sel_m, _ = kh.select_person_rois(
            jnp.asarray(rois), jnp.asarray(labels), jnp.asarray(matched), jnp.ones(4, bool),
            4, 3)
        cells, weights, valid = kh.keypoint_targets(sel_rois, sel_m, jnp.asarray(gt), s)
        return kh.keypoint_loss(logits, cells, weights, valid), valid

    logits = rng.normal(size=(3, s, s, k)).astype(np.float32)
    (total, count), valid = pipeline(jnp.asarray(logits))
    assert float(count) == 4.0  # 2 labelled in RoI 0, 2 inside RoI 2
    want_v = np.zeros((3, k), bool)
    want_t = np.zeros((3, k), np.int32)
    for row, slot in enumerate([0, 2]):
        want_t[row], want_v[row] = _np_cells(gt[matched[slot]], rois[slot], s)
    np.testing.assert_array_equal(np.asarray(valid), want_v)
    np.testing.assert_allclose(float(total) / float(count),
                               _np_loss(logits, want_t, want_v), rtol=1e-5)
    # Invalid keypoints (and the padding RoI) get no gradient, even with non-finite logits.
    bad = logits.copy()
    bad[2] = np.nan
    grad = jax.jit(jax.grad(lambda x: pipeline(x)[0][0]))(jnp.asarray(bad))
    g = np.asarray(grad)
    assert np.isfinite(g).all() and not g[2].any()
    assert not g[0, :, :, 2].any() and not g[1, :, :, 1].any()


def test_bilinear_loss_is_soft_cross_entropy_minimised_by_the_target():
    rng = np.random.default_rng(2)
    s, k = 6, 2
    rois = jnp.array([[0.0, 0, 12, 12]])
    gt = jnp.array([[[3.3, 7.1, 2], [8.8, 2.4, 2]]], jnp.float32)
    cells, weights, valid = kh.keypoint_targets(rois, jnp.array([0]), gt, s, "bilinear")
    assert np.asarray(valid).all()
    np.testing.assert_allclose(np.asarray(weights).sum(-1), 1.0, rtol=1e-6)
    logits = rng.normal(size=(1, s, s, k)).astype(np.float32)
    total, count = kh.keypoint_loss(jnp.asarray(logits), cells, weights, valid)
    x = logits.reshape(1, s * s, k).transpose(0, 2, 1).astype(np.float64)
    logp = x - np.log(np.exp(x).sum(-1, keepdims=True))
    want = -sum(float(w) * logp[0, j, c] for j in range(k)
                for c, w in zip(np.asarray(cells[0, j]), np.asarray(weights[0, j]), strict=True))
    assert float(count) == 2.0
    np.testing.assert_allclose(float(total), want, rtol=1e-5)
    # At logits = log(target) the loss is the targets' entropy, and every gradient is 0.
    probs = np.zeros((k, s * s))
    for j in range(k):
        np.add.at(probs[j], np.asarray(cells[0, j]), np.asarray(weights[0, j]))
    best = np.log(np.maximum(probs, 1e-30)).T.reshape(1, s, s, k).astype(np.float32)
    loss = lambda lg: kh.keypoint_loss(lg, cells, weights, valid)[0]  # noqa: E731
    entropy = -sum(float(p * np.log(p)) for p in probs.ravel() if p > 0)
    np.testing.assert_allclose(float(loss(jnp.asarray(best))), entropy, rtol=1e-5)
    assert np.abs(np.asarray(jax.grad(loss)(jnp.asarray(best)))).max() < 1e-5
    assert float(loss(jnp.asarray(best))) < float(total)
    with pytest.raises(ValueError, match="'gaussian'"):
        kh.keypoint_targets(rois, jnp.array([0]), gt, s, "gaussian")
    with pytest.raises(ValueError, match="'argmax'"):
        kh.decode_keypoints(jnp.asarray(logits), rois, method="argmax")


def test_keypoint_confidence_is_the_mean_peak_softmax_probability():
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(2, 3, 6, 6, 4)).astype(np.float32) * 3
    got = np.asarray(jax.jit(kh.keypoint_confidence)(jnp.asarray(logits)))
    x = logits.reshape(2, 3, 36, 4).astype(np.float64)
    p = np.exp(x - x.max(2, keepdims=True))
    want = (p.max(2) / p.sum(2)).mean(-1)
    assert got.shape == (2, 3)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(kh.keypoint_confidence(jnp.asarray(logits) + 7.0)),
                               want, rtol=1e-5)  # shift-invariant
    peaked = np.full((1, 6, 6, 2), -50.0, np.float32)
    peaked[0, 2, 3] = 0.0
    assert float(kh.keypoint_confidence(jnp.asarray(peaked))[0]) == pytest.approx(1.0)


def test_decode_round_trip_recovers_keypoints_within_a_cell():
    """Encode gt keypoints as peaked heatmaps at their target cells, decode: each keypoint
    comes back inside its cell (RoIs <= 32 px: the decode is torchvision's, exact)."""
    rng = np.random.default_rng(1)
    s, k = 14, 17
    rois = np.array([[3, 5, 27, 33], [40, 10, 60, 22]], np.float32)
    kp = np.zeros((2, k, 3), np.float32)
    for r, (x1, y1, x2, y2) in enumerate(rois):
        kp[r, :, 0] = rng.uniform(x1, x2, k)
        kp[r, :, 1] = rng.uniform(y1, y2, k)
        kp[r, :, 2] = 2
    @jax.jit
    def round_trip(rois, kp):
        cells, _, valid = kh.keypoint_targets(rois, jnp.arange(2), kp, s)
        onehot = jax.nn.one_hot(cells[..., 0], s * s) * 20.0  # [R, K, S*S]
        logits = jnp.moveaxis(onehot.reshape(2, k, s, s), 1, -1)  # [R, S, S, K]
        return kh.decode_keypoints(logits, rois), valid

    out, valid = round_trip(jnp.asarray(rois), jnp.asarray(kp))
    out = np.asarray(out)
    assert np.asarray(valid).all() and out.shape == (2, k, 3)
    # The decoded point is a pixel centre of the RoI-sized resampled map inside (or next to)
    # the keypoint's cell: within one cell plus one pixel of the truth.
    cell = (rois[:, 2:] - rois[:, :2]) / s  # [R, 2] (w, h) of one cell
    err = np.abs(out[..., :2] - kp[..., :2])
    assert (err <= cell[:, None, :] + 1.0).all(), err.max()
    assert err.mean() < 0.6
    assert (out[..., 2] > 5).all(), out[..., 2].min()  # the peak's interpolated logit


def _tiny_detector(keypoints: bool, **options) -> faster_rcnn.FasterRCNN:
    spec = kh.KeypointSpec(width=8, num_convs=2, roi_output_size=7, class_index=2,
                           rois_per_image=3, detections_per_img=4, **options)
    return helpers.tiny_two_stage_detector(8, keypoint=spec if keypoints else None)


@pytest.mark.parametrize("options", [{}, {"target": "bilinear", "decode": "local_mean",
                                           "rescore": True, "flip_test": True}])
def test_faster_rcnn_keypoint_branch_wiring(options):
    model = _tiny_detector(keypoints=True, **options)
    images = jnp.zeros((2, 64, 64, 3))
    targets = {"gt_boxes": jnp.array([[[4, 4, 30, 30], [0, 0, 0, 0]]] * 2, jnp.float32),
               "gt_labels": jnp.array([[2, 0]] * 2, jnp.int32),
               "gt_valid": jnp.array([[True, False]] * 2),
               "gt_keypoints": jnp.ones((2, 2, 17, 3), jnp.float32) * 10}

    def run():
        test, v = model.init_with_output(jax.random.key(0), images, train=False)
        train, _ = model.apply(v, images, train=True, targets=targets,
                               rng=jax.random.split(jax.random.key(1), 2),
                               mutable=["batch_stats"])
        return v, test, train

    v, test, train = jax.eval_shape(run)
    params = flax.traverse_util.flatten_dict(v["params"], sep="/")
    assert "keypoint_head/2/kernel" in params and "keypoint_head/4/kernel" not in params
    assert params["keypoint_predictor/kps_score_lowres/kernel"].shape == (4, 4, 8, 17)
    assert test["keypoints"].shape == (2, 5, 17, 3)
    assert test["keypoint_scores"].shape == (2, 5)
    assert set(train["terms"]) == set(faster_rcnn.LOSS_TERMS) | {"roi_keypoint"}
    assert faster_rcnn.loss_terms_for({"keypoint": {}}, 3)[-1] == "roi_keypoint"
    assert faster_rcnn.loss_terms_for({}, 3) == faster_rcnn.LOSS_TERMS
    assert _tiny_detector(keypoints=False).spec.keypoint is None


def test_keypoint_target_and_decode_options_are_checked():
    spec = kh.KeypointSpec(target="bilinear", decode="local_mean")
    assert (spec.target, spec.decode) == ("bilinear", "local_mean")
    defaults = kh.KeypointSpec()
    assert (defaults.target, defaults.decode) == ("cell", "bicubic")
    with pytest.raises(ValueError, match="config.model.keypoint.target='soft'"):
        kh.KeypointSpec(target="soft")
    with pytest.raises(ValueError, match="config.model.keypoint.decode='mean'"):
        kh.KeypointSpec(decode="mean")


def test_unflip_heatmaps_reverses_columns_and_swaps_pairs():
    s, k = 4, 5
    x = np.arange(s)[None, :, None] * 10.0 + np.arange(k)[None, None, :]  # col * 10 + channel
    x = np.broadcast_to(x, (s, s, k))[None].astype(np.float32)
    out = np.asarray(kh.unflip_heatmaps(jnp.asarray(x), ((1, 2), (3, 4))))
    np.testing.assert_array_equal(out[0, 0, :, 0], [30, 20, 10, 0])  # nose: columns reversed
    np.testing.assert_array_equal(out[0, 2, :, 1], [32, 22, 12, 2])  # left <- right
    np.testing.assert_array_equal(out[0, 1, :, 4], [33, 23, 13, 3])
    np.testing.assert_array_equal(
        np.asarray(kh.unflip_heatmaps(jnp.asarray(out), ((1, 2), (3, 4)))), x)
    with pytest.raises(ValueError, match="config.model.keypoint.flip_pairs"):
        kh.KeypointSpec(flip_pairs=((1, 17),))
    # The model's COCO pairs are the data side's (kept apart so detection does not import
    # the synthetic data): the stick figures' table and the pairs read from the 17 names.
    assert kh.COCO_FLIP_PAIRS == stick_figures.FLIP_PAIRS
    assert kh.COCO_FLIP_PAIRS == tuple(augment.flip_pairs_from_names(
        stick_figures.KEYPOINT_NAMES))


def test_flip_test_heatmaps_are_mirror_equivariant():
    """With the flip test, the heatmaps of mirrored RoIs on the mirrored image are exactly the
    original's mapped back (``unflip_heatmaps``); without it they are not."""
    images = jnp.asarray(np.random.default_rng(0).uniform(0, 255, (1, 64, 64, 3)), jnp.float32)
    rois = jnp.array([[[4.0, 6.0, 30.0, 50.0], [21.5, 10.0, 60.0, 41.0]]])
    mirrored = jnp.stack([64.0 - rois[..., 2], rois[..., 1], 64.0 - rois[..., 0],
                          rois[..., 3]], axis=-1)

    def heatmaps(m, images, rois, flip):
        flipped = m.features(jnp.flip(images, axis=2), False) if flip else None
        features = m.features(images, False)
        pool = lambda r, size: m.pool_rois(features, r, size)  # noqa: E731
        mirror_pool = (lambda r, size: m.pool_rois(flipped, r, size)) if flip else None  # noqa: E731
        return m.keypoint.heatmaps(pool, mirror_pool, rois, 64)

    model = _tiny_detector(keypoints=True, flip_test=True)
    v = jax.jit(lambda k: model.init(k, images, train=False))(jax.random.key(0))
    run = jax.jit(lambda v, im, r, flip: model.apply(v, im, r, flip, method=heatmaps),
                  static_argnums=3)
    out = {}
    for flip in (True, False):
        a, b = run(v, images, rois, flip), run(v, jnp.flip(images, axis=2), mirrored, flip)
        assert a.shape == (1, 2, 28, 28, 17)
        out[flip] = float(jnp.max(jnp.abs(b - kh.unflip_heatmaps(a, kh.COCO_FLIP_PAIRS))))
        scale = float(jnp.max(jnp.abs(a)))
    assert out[True] < 1e-5 * max(scale, 1.0), out
    assert out[False] > 1e-3 * scale, out


@pytest.mark.parametrize("budget, want", [(0, 2), (3, 3), (100, 8)])
def test_keypoint_roi_budget(budget, want):
    branch = kh.KeypointBranch(kh.KeypointSpec(rois_per_image=budget),
                               roi_heads.RoiSpec(batch_size_per_image=8), detections_per_img=5)
    assert branch.num_rois == want


def test_keypoint_roi_scale_enlarges_boxes_about_their_centres():
    from jaxdet import ops

    boxes = jnp.array([[10.0, 20.0, 30.0, 60.0], [0.0, 0.0, 0.0, 0.0]])
    np.testing.assert_allclose(kh._scale_boxes(boxes, 1.25),
                               [[7.5, 15.0, 32.5, 65.0], [0.0, 0.0, 0.0, 0.0]])
    assert kh._scale_boxes(boxes, 1.0) is boxes
    assert kh.KeypointSpec().roi_scale == 1.0  # torchvision
    # A wrist 2 px right of the box has no heatmap cell; in the 1.25x box it gets column
    # floor((32 - 7.5) * 56 / 25) = 54, row floor((40 - 15) * 56 / 50) = 28.
    kp = jnp.array([[[32.0, 40.0, 2.0]]])
    _, valid = ops.keypoints_to_heatmap(kp, boxes[:1], 56)
    cell, valid_big = ops.keypoints_to_heatmap(kp, kh._scale_boxes(boxes[:1], 1.25), 56)
    assert not valid[0, 0] and valid_big[0, 0] and int(cell[0, 0]) == 28 * 56 + 54
