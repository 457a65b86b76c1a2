"""Keypoint statistics: hand-computed PCK/error with invisible joints and padding ignored,
the threshold's boundary, NumPy reference, additivity over shards, summaries."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxdet.metrics import keypoints as kp


def test_hand_computed_ignores_invisible_joints_and_padding():
    nan = np.nan
    pred = np.array(
        [
            [[0, 0], [0, 0], [nan, 7]],  # dist 20 (= 0.2 * 100: a hit), 21 (miss), invisible
            [[nan, nan], [1e9, 0], [0, 0]],  # padding example
            [[1, 1], [9, 9], [0, 0]],  # dist 1 (hit at radius 2), invisible, invisible
        ],
        np.float32,
    )
    gt = np.array(
        [
            [[12, 16], [0, 21], [500, 500]],
            [[0, 0], [0, 0], [0, 0]],
            [[1, 2], [0, 0], [9, 9]],
        ],
        np.float32,
    )
    visible = np.array([[2, 1, 0], [2, 2, 2], [2, 0, 0]])  # COCO flags: > 0 is labelled
    box_size = np.array([100, 100, 10], np.float32)
    mask = np.array([1, 0, 1], np.float32)
    stats = jax.jit(kp.keypoint_stats)(*map(jnp.asarray, (pred, gt, visible, box_size, mask)))
    assert set(stats) == set(kp.STAT_KEYS)
    for value in stats.values():
        assert value.dtype == jnp.float32 and value.shape == ()
    assert float(stats["visible_count"]) == 3.0
    assert float(stats["pck_hits"]) == 2.0
    np.testing.assert_allclose(float(stats["error_sum"]), 20 + 21 + 1, rtol=1e-6)
    out = kp.summarize(stats)
    assert set(out) == {"pck@0.2", "mean_joint_error_px", "num_visible_joints"}
    np.testing.assert_allclose(out["pck@0.2"], 2 / 3)
    np.testing.assert_allclose(out["mean_joint_error_px"], 14.0, rtol=1e-6)
    # A tighter threshold: 0.1 * 100 = 10 < 20 px, 0.1 * 10 = 1 px == 1 px still a hit.
    tight = kp.keypoint_stats(*map(jnp.asarray, (pred, gt, visible, box_size, mask)),
                              pck_threshold=0.1)
    assert float(tight["pck_hits"]) == 1.0
    assert "pck@0.1" in kp.summarize(tight, pck_threshold=0.1)


def _numpy_stats(pred, gt, visible, box_size, mask, threshold):
    v = (visible > 0) & (mask[:, None] > 0)
    d = np.linalg.norm(pred.astype(np.float64) - gt, axis=-1)
    hit = d <= threshold * box_size[:, None]
    return {"visible_count": v.sum(), "pck_hits": (v & hit).sum(), "error_sum": d[v].sum()}


def test_matches_numpy_and_is_additive_over_shards():
    rng = np.random.default_rng(0)
    b, k = 12, 17
    gt = rng.uniform(0, 200, size=(b, k, 2)).astype(np.float32)
    box_size = rng.uniform(40, 150, size=b).astype(np.float32)
    pred = (gt + rng.normal(scale=0.15, size=(b, k, 2)) * box_size[:, None, None]).astype(
        np.float32)
    visible = rng.integers(0, 3, size=(b, k))
    mask = (rng.uniform(size=b) < 0.8).astype(np.float32)
    args = (pred, gt, visible, box_size, mask)
    ref = _numpy_stats(*args, 0.2)
    assert 0 < ref["pck_hits"] < ref["visible_count"]
    whole = jax.jit(kp.keypoint_stats)(*map(jnp.asarray, args))
    fn = functools.partial(kp.keypoint_stats, pck_threshold=0.2)
    shards = jax.vmap(fn)(*(jnp.asarray(a).reshape(3, 4, *a.shape[1:]) for a in args))
    for key, value in ref.items():
        np.testing.assert_allclose(float(whole[key]), value, rtol=1e-5, err_msg=key)
        np.testing.assert_allclose(float(shards[key].sum()), value, rtol=1e-5, err_msg=key)


def test_person_box_size_is_longer_side():
    boxes = jnp.array([[10, 20, 40, 100], [0, 0, 50, 5]], jnp.float32)
    np.testing.assert_array_equal(np.asarray(kp.person_box_size(boxes)), [80.0, 50.0])


def test_summarize_without_joints_is_zero():
    out = kp.summarize({key: np.float32(0) for key in kp.STAT_KEYS}, pck_threshold=0.5)
    assert out == {"pck@0.5": 0.0, "mean_joint_error_px": 0.0, "num_visible_joints": 0.0}
