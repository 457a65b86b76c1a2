"""Matcher: torchvision goldens, a NumPy reference and classic hand-built cases."""

import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet import ops
from tests import helpers

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
SETTINGS = {"rpn": (0.7, 0.3, True), "roi": (0.5, 0.5, False)}


def np_match(iou: np.ndarray, valid: np.ndarray, high, low, low_quality) -> np.ndarray:
    """Loop-based reference of the documented semantics."""
    g, n = iou.shape
    out = np.full(n, -1, np.int32)
    rows = np.flatnonzero(valid)
    if rows.size == 0:
        return out
    for j in range(n):
        best = rows[np.argmax(iou[rows, j])]
        v = iou[best, j]
        out[j] = best if v >= high else (-2 if v >= low else -1)
        if low_quality:
            for r in rows:
                q = iou[r].max()
                if q > 0 and iou[r, j] == q:
                    out[j] = best
    return out


def iou_of(gt, preds) -> np.ndarray:
    return np.asarray(ops.box_iou(np.array(gt, np.float32), np.array(preds, np.float32)))


# --- torchvision goldens ---------------------------------------------------------------------


@helpers.with_and_without_jit
@pytest.mark.parametrize("setting", ["rpn", "roi"])
@pytest.mark.parametrize("case", [0, 1, 2], ids=lambda c: f"case{c}")
def test_match_matches_torchvision(variant, case, setting):
    fx = np.load(FIXTURES / "matcher.npz")
    iou = fx[f"iou_{case}"]
    high, low, lq = SETTINGS[setting]
    fn = variant(lambda q, v: ops.match(q, v, high, low, lq))
    out = fn(iou, np.ones(iou.shape[0], bool))
    chex.assert_shape(out, (iou.shape[1],))
    chex.assert_type(out, jnp.int32)
    expected = fx[f"matches_{setting}_{case}"]
    np.testing.assert_array_equal(out, expected)
    assert np.sum(expected >= 0) > 5
    assert np.sum(expected == -1) > 5


def test_rpn_golden_has_low_quality_matches():
    fx = np.load(FIXTURES / "matcher.npz")
    iou = fx["iou_0"]
    valid = np.ones(iou.shape[0], bool)
    with_lq = np.asarray(ops.match(iou, valid, 0.7, 0.3, True))
    without = np.asarray(ops.match(iou, valid, 0.7, 0.3, False))
    restored = (with_lq >= 0) & (without < 0)
    assert restored.sum() > 0  # the golden exercises the restoring rule


# --- NumPy reference -------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2], ids=lambda s: f"seed{s}")
@pytest.mark.parametrize("setting", ["rpn", "roi"])
def test_match_random_ties_with_padding_matches_numpy(setting, seed):
    rng = np.random.default_rng(seed)
    # Quantised IoUs: many exact ties between predictions and between gt rows.
    iou = np.round(rng.uniform(0, 1, (6, 200)) ** 3 * 20).astype(np.float32) / 20
    valid = np.array([True, True, False, True, False, True])
    iou[2] = 1.0  # a padded row with high IoU must be ignored
    high, low, lq = SETTINGS[setting]
    np.testing.assert_array_equal(
        ops.match(iou, valid, high, low, lq), np_match(iou, valid, high, low, lq)
    )


def test_match_vmap_over_images_with_different_gt_counts():
    rng = np.random.default_rng(5)
    iou = rng.uniform(0, 1, (3, 4, 50)).astype(np.float32)
    valid = np.array([[1, 1, 1, 1], [1, 0, 0, 0], [0, 0, 0, 0]], bool)
    out = jax.vmap(lambda q, v: ops.match(q, v, 0.7, 0.3, True))(iou, valid)
    chex.assert_shape(out, (3, 50))
    for i in range(3):
        np.testing.assert_array_equal(out[i], np_match(iou[i], valid[i], 0.7, 0.3, True))
    np.testing.assert_array_equal(out[2], -1)
    np.testing.assert_array_equal(np.asarray(out[1])[np.asarray(out[1]) >= 0], 0)


def test_match_compiles_once_per_shape():
    traces = []

    @jax.jit
    def f(q, v):
        traces.append(1)
        return ops.match(q, v, 0.7, 0.3, True)

    rng = np.random.default_rng(6)
    outs = [
        f(rng.uniform(0, 1, (5, 40)).astype(np.float32), rng.uniform(size=5) > 0.3)
        for _ in range(3)
    ]
    assert len(traces) == 1
    assert not np.array_equal(outs[0], outs[1])


# --- hand-built cases in the style of the classic R-CNN matcher tests ------------------------


def test_thresholds_are_inclusive_at_high_and_low():
    iou = np.array([[0.7, 0.69, 0.3, 0.29, 0.0, 0.95]], np.float32)
    out = ops.match(iou, np.array([True]), 0.7, 0.3, False)
    np.testing.assert_array_equal(out, [0, -2, -2, -1, -1, 0])


def test_equal_thresholds_have_no_between_band():
    iou = np.array([[0.5, 0.49, 0.51]], np.float32)
    np.testing.assert_array_equal(ops.match(iou, np.array([True]), 0.5, 0.5, False), [0, -1, 0])


def test_argmax_picks_best_gt_and_first_on_ties():
    iou = np.array([[0.8, 0.1, 0.75], [0.9, 0.85, 0.75]], np.float32)
    out = ops.match(iou, np.array([True, True]), 0.7, 0.3, False)
    np.testing.assert_array_equal(out, [1, 1, 0])


def test_low_quality_restores_all_ties():
    # gt 0's best IoU 0.4 is reached by predictions 0 and 2 (a tie): both restored.
    iou = np.array([[0.4, 0.1, 0.4, 0.35]], np.float32)
    out = ops.match(iou, np.array([True]), 0.7, 0.3, True)
    np.testing.assert_array_equal(out, [0, -1, 0, -2])
    np.testing.assert_array_equal(
        ops.match(iou, np.array([True]), 0.7, 0.3, False), [-2, -1, -2, -2]
    )


def test_low_quality_restores_the_argmax_not_the_gt():
    # Prediction 0 is gt 0's best (0.5) but prediction 0's argmax is gt 1 (0.6):
    # it gets gt 1 back, as in torchvision.
    iou = np.array([[0.5, 0.2], [0.6, 0.9]], np.float32)
    out = ops.match(iou, np.array([True, True]), 0.7, 0.3, True)
    np.testing.assert_array_equal(out, [1, 1])


def test_gt_with_zero_best_iou_creates_no_matches():
    # gt 1 overlaps nothing. torchvision would "restore" every prediction with IoU 0 to
    # gt 1 (to its argmax); here they stay background (the documented difference).
    iou = iou_of([[0, 0, 10, 10], [100, 100, 110, 110]], [[0, 0, 10, 10], [50, 50, 60, 60]])
    out = ops.match(iou, np.array([True, True]), 0.7, 0.3, True)
    np.testing.assert_array_equal(out, [0, -1])


def test_all_padded_gt_gives_all_background():
    iou = np.full((3, 5), 0.9, np.float32)  # padded rows may hold anything
    out = ops.match(iou, np.zeros(3, bool), 0.7, 0.3, True)
    np.testing.assert_array_equal(out, [-1] * 5)


def test_padded_gt_never_wins_nor_restores():
    iou = np.array([[0.2, 0.1, 0.0], [0.95, 0.99, 0.98]], np.float32)
    out = ops.match(iou, np.array([True, False]), 0.7, 0.3, True)
    np.testing.assert_array_equal(out, [0, -1, -1])


def test_no_iou_above_threshold_gives_no_positives():
    iou = np.array([[0.1, 0.2, 0.0], [0.05, 0.0, 0.15]], np.float32)
    out = ops.match(iou, np.array([True, True]), 0.5, 0.5, False)
    np.testing.assert_array_equal(out, [-1, -1, -1])


def test_nan_iou_counts_as_zero():
    # Two zero-area boxes give NaN IoU; it must neither win the argmax nor stop gt 0's
    # low-quality match (prediction 0).
    iou = np.array([[0.5, np.nan, 0.2], [0.1, 0.8, np.nan]], np.float32)
    out = ops.match(iou, np.array([True, True]), 0.7, 0.3, True)
    np.testing.assert_array_equal(out, [0, 1, -1])
    iou_of_points = iou_of([[2, 2, 2, 2]], [[2, 2, 2, 2], [0, 0, 4, 4]])
    assert np.isnan(iou_of_points[0, 0])
    np.testing.assert_array_equal(
        ops.match(iou_of_points, np.array([True]), 0.5, 0.5, False), [-1, -1]
    )


def test_low_above_high_raises():
    with pytest.raises(ValueError):
        ops.match(np.zeros((1, 1), np.float32), np.ones(1, bool), 0.3, 0.7, False)


def test_matches_to_labels_maps_positive_ignored_background():
    labels = ops.matches_to_labels(jnp.array([3, 0, -1, -2, 1], jnp.int32))
    chex.assert_type(labels, jnp.int32)
    np.testing.assert_array_equal(labels, [1, 1, 0, -1, 1])


def test_rpn_matching_pipeline_on_boxes():
    gt = [[0, 0, 10, 10], [20, 20, 40, 40], [0, 0, 0, 0]]  # last row is padding
    anchors = [
        [0, 0, 10, 10],
        [1, 1, 11, 11],
        [5, 5, 15, 15],
        [22, 22, 38, 38],
        [60, 60, 70, 70],
    ]
    iou = iou_of(gt, anchors)
    matches = ops.match(iou, np.array([True, True, False]), 0.7, 0.3, True)
    # IoUs with gt 0: 1, 81/119 (0.68, between), 25/175; with gt 1: anchor 3 256/400.
    np.testing.assert_array_equal(matches, [0, -2, -1, 1, -1])
    np.testing.assert_array_equal(ops.matches_to_labels(matches), [1, -1, 0, 1, 0])
