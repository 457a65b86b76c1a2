"""Classification + localisation statistics: hand-computed case, NumPy reference, padding,
additivity over batch shards (vmap as devices), summaries."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxdet.metrics import localization as loc


def _hand_case():
    pred_boxes = np.array(
        [
            [0, 0, 10, 10],  # == gt: IoU 1
            [0, 0, 10, 10],  # gt shifted by 5 in x: 50 / 150 = 1/3
            [0, 0, 10, 10],  # gt twice as tall: 100 / 200 = 0.5 exactly (counts as >= 0.5)
            [np.nan, 0, np.inf, 1],  # padding
            [5, 5, 5, 5],  # two zero-area boxes: box_iou's 0/0 counted as IoU 0
        ],
        np.float32,
    )
    gt_boxes = np.array(
        [[0, 0, 10, 10], [5, 0, 15, 10], [0, 0, 10, 20], [0, 0, 1, 1], [5, 5, 5, 5]], np.float32
    )
    pred_labels = np.array([1, 2, 0, 4, 3])
    gt_labels = np.array([1, 2, 3, 4, 3])
    mask = np.array([1, 1, 1, 0, 1], np.float32)
    return pred_labels, pred_boxes, gt_labels, gt_boxes, mask


def test_hand_computed():
    stats = jax.jit(loc.localization_stats)(*map(jnp.asarray, _hand_case()))
    assert set(stats) == set(loc.STAT_KEYS)
    for value in stats.values():
        assert value.dtype == jnp.float32 and value.shape == ()
    expected = {"count": 4, "class_correct": 3, "iou_sum": 1 + 1 / 3 + 0.5 + 0,
                "iou50": 2, "correct_and_iou50": 1}
    for key, value in expected.items():
        np.testing.assert_allclose(float(stats[key]), value, rtol=1e-6, err_msg=key)
    summary = loc.summarize(stats)
    np.testing.assert_allclose(summary["accuracy"], 0.75)
    np.testing.assert_allclose(summary["mean_iou"], (1 + 1 / 3 + 0.5) / 4, rtol=1e-6)
    np.testing.assert_allclose(summary["iou50_rate"], 0.5)
    np.testing.assert_allclose(summary["correct_and_iou50"], 0.25)
    assert summary["num_examples"] == 4.0


def _numpy_stats(pred_labels, pred_boxes, gt_labels, gt_boxes, mask):
    p, g = pred_boxes.astype(np.float64), gt_boxes.astype(np.float64)
    iw = np.clip(np.minimum(p[:, 2], g[:, 2]) - np.maximum(p[:, 0], g[:, 0]), 0, None)
    ih = np.clip(np.minimum(p[:, 3], g[:, 3]) - np.maximum(p[:, 1], g[:, 1]), 0, None)
    inter = iw * ih
    area = lambda b: (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    iou = inter / (area(p) + area(g) - inter)
    v = mask > 0
    correct = pred_labels == gt_labels
    hit = iou >= 0.5
    return {"count": v.sum(), "class_correct": (v & correct).sum(), "iou_sum": iou[v].sum(),
            "iou50": (v & hit).sum(), "correct_and_iou50": (v & correct & hit).sum()}


def _random_case(n, seed):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 50, size=(2, n, 2))
    wh = rng.uniform(5, 40, size=(2, n, 2))
    gt_boxes = np.concatenate([xy[0], xy[0] + wh[0]], -1).astype(np.float32)
    # predictions near the truth so that IoU spreads over [0, 1]
    pred_boxes = (gt_boxes + rng.normal(scale=6.0, size=(n, 4))).astype(np.float32)
    pred_boxes[:, 2:] = np.maximum(pred_boxes[:, 2:], pred_boxes[:, :2] + 1)
    gt_labels = rng.integers(0, 3, size=n)
    pred_labels = np.where(rng.uniform(size=n) < 0.6, gt_labels, rng.integers(0, 3, size=n))
    mask = (rng.uniform(size=n) < 0.8).astype(np.float32)
    return pred_labels, pred_boxes, gt_labels, gt_boxes, mask


def test_matches_numpy_and_is_additive_over_shards():
    args = _random_case(32, seed=0)
    ref = _numpy_stats(*args)
    assert 0 < ref["iou50"] < ref["count"]  # the case exercises both sides of 0.5
    whole = jax.jit(loc.localization_stats)(*map(jnp.asarray, args))
    # 4 "devices" of 8 examples, as the eval step's per-device statistics, then summed
    shards = jax.vmap(loc.localization_stats)(*(jnp.asarray(a).reshape(4, 8, *a.shape[1:])
                                                for a in args))
    for key, value in ref.items():
        np.testing.assert_allclose(float(whole[key]), value, rtol=1e-5, err_msg=key)
        np.testing.assert_allclose(float(shards[key].sum()), value, rtol=1e-5, err_msg=key)


def test_paired_iou_uses_box_iou_in_float32():
    a = jnp.array([[0, 0, 4, 4], [0, 0, 2, 2]], jnp.bfloat16)
    b = jnp.array([[2, 2, 6, 6], [3, 3, 4, 4]], jnp.float32)
    iou = loc.paired_iou(a, b)
    assert iou.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(iou), [4 / 28, 0.0], rtol=1e-6)


def test_summarize_without_examples_is_zero():
    zeros = {key: np.float32(0) for key in loc.STAT_KEYS}
    out = loc.summarize(zeros)
    assert out == {"accuracy": 0.0, "mean_iou": 0.0, "iou50_rate": 0.0,
                   "correct_and_iou50": 0.0, "num_examples": 0.0}
