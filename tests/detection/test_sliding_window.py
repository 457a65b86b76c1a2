"""The sliding-window detector: window grid by hand, outputs, losses, a few Adam steps."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jaxdet.detection import sliding_window as sw

SIZE = 32


def _config(**overrides) -> ml_collections.ConfigDict:
    model = {
        "depth": 0, "stage_sizes": (1, 1), "block": "basic", "width": 4, "stem": "small",
        "norm": "group", "gn_groups": 2, "input_norm": "none",
        "window_sizes": (16, 32, 64), "window_aspect_ratios": (0.5, 1.0, 2.0),
        "window_stride_fraction": 0.5, "window_crop_size": 8,
        "window_batch_size_per_image": 16, "window_chunk_size": 8,
        "postprocess": {"detections_per_img": 6},
    }
    model.update(overrides)
    return ml_collections.ConfigDict({"model": model})


def _model(**overrides) -> sw.SlidingWindowDetector:
    return sw.create_model(_config(**overrides), num_classes=2)


def _inputs(batch=2):
    rng = np.random.default_rng(0)
    images = np.full((batch, SIZE, SIZE, 3), 0.2, np.float32)
    images += rng.uniform(0, 0.05, images.shape).astype(np.float32)
    images[:, 0:16, 0:16] = [0.9, 0.1, 0.1]  # class 0 object at the first 16x16 window
    images[:, 16:32, 8:24] = [0.1, 0.1, 0.9]  # class 1 object
    gt_boxes = np.zeros((batch, 3, 4), np.float32)
    gt_boxes[:, 0] = [0, 0, 16, 16]
    gt_boxes[:, 1] = [8, 16, 24, 32]
    targets = {"gt_boxes": jnp.asarray(gt_boxes),
               "gt_labels": jnp.asarray([[0, 1, 0]] * batch, jnp.int32),
               "gt_valid": jnp.asarray([[True, True, False]] * batch)}
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(1), i))(jnp.arange(batch))
    return jnp.asarray(images), targets, keys


def _expected_count(gt_boxes: np.ndarray, sample: int = 16, max_pos: int = 4) -> int:
    """Sampled windows of one image: ``min(fg, 4)`` plus backgrounds up to 16 (IoU by hand)."""
    w = sw.window_grid((SIZE, SIZE), (16.0, 32.0, 64.0), (0.5, 1.0, 2.0), 0.5)
    best = np.zeros(len(w))
    for g in gt_boxes:
        ix = np.clip(np.minimum(w[:, 2], g[2]) - np.maximum(w[:, 0], g[0]), 0, None)
        iy = np.clip(np.minimum(w[:, 3], g[3]) - np.maximum(w[:, 1], g[1]), 0, None)
        inter = ix * iy
        union = (w[:, 2] - w[:, 0]) * (w[:, 3] - w[:, 1]) + (g[2] - g[0]) * (g[3] - g[1])
        best = np.maximum(best, inter / (union - inter))
    pos = min(int(np.sum(best >= 0.5)), max_pos)
    return pos + min(int(np.sum(best < 0.3)), sample - pos)


@pytest.fixture(scope="module")
def setup():
    model = _model()
    images, targets, keys = _inputs()
    variables = jax.jit(model.init, static_argnames="train")(
        jax.random.key(0), images, train=False)
    return model, variables, images, targets, keys


def test_window_grid_by_hand():
    w = sw.window_grid((SIZE, SIZE), (16.0, 32.0, 64.0), (0.5, 1.0, 2.0), 0.5)
    # size 16, stride 8: ratio 0.5 is 23x11 (2 columns x 3 rows), ratio 1 16x16 (3 x 3),
    # ratio 2 11x23 (3 x 2); size 32, stride 16: only the 32x32 square fits (45 > 32);
    # size 64: nothing fits.
    assert w.shape == (6 + 9 + 6 + 1, 4) and w.dtype == np.float32
    np.testing.assert_array_equal(w[0], [0, 0, 23, 11])
    np.testing.assert_array_equal(w[1], [8, 0, 31, 11])
    np.testing.assert_array_equal(w[2], [0, 8, 23, 19])
    np.testing.assert_array_equal(w[6], [0, 0, 16, 16])
    np.testing.assert_array_equal(w[6 + 4], [8, 8, 24, 24])
    np.testing.assert_array_equal(w[15], [0, 0, 11, 23])
    np.testing.assert_array_equal(w[-1], [0, 0, 32, 32])
    assert np.all(w[:, 2] <= SIZE) and np.all(w[:, 3] <= SIZE)
    with pytest.raises(ValueError, match="no window"):
        sw.window_grid((8, 8), (16.0,), (1.0,), 0.5)


def test_spec_reads_the_config():
    spec = sw.WindowSpec.from_config(_config().model, num_classes=2)
    assert spec.window_sizes == (16.0, 32.0, 64.0) and spec.window_crop_size == 8
    assert spec.window_bg_iou == 0.3 and sw.loss_terms(spec) == sw.LOSS_TERMS
    with pytest.raises(ValueError, match="bg_iou"):
        sw.WindowSpec(num_classes=2, window_fg_iou=0.3, window_bg_iou=0.5)


def test_outputs_and_chunking(setup):
    model, variables, images, targets, keys = setup
    assert sorted(variables["params"]["classifier"]) == ["body", "cls_score"]
    out = jax.jit(lambda v: model.apply(v, images, train=True, targets=targets, rng=keys))(
        variables)
    assert set(out["terms"]) == set(sw.LOSS_TERMS)
    s, n = out["terms"]["window_classifier"]
    assert s.dtype == jnp.float32 and np.isfinite(s)
    assert float(n) == 2 * _expected_count(np.asarray(targets["gt_boxes"][0, :2]))
    # Both gt boxes are windows exactly: the recall ceiling is 1 here.
    assert [float(x) for x in out["recall"]] == [4.0, 4.0]
    assert 0 < float(out["num_foreground_rois"][0]) <= 2 * 4

    hw = jnp.asarray([[SIZE, SIZE], [24, SIZE]], jnp.int32)  # image 1: 24 rows real
    test = jax.jit(lambda v: model.apply(v, images, hw, train=False))(variables)
    k, w = 6, 22
    assert test["boxes"].shape == (2, k, 4) and test["boxes"].dtype == jnp.float32
    assert test["scores"].shape == (2, k) and test["classes"].dtype == jnp.int32
    assert test["valid"].dtype == jnp.bool_
    assert test["proposals"].shape == (2, w, 4) and test["proposal_valid"].shape == (2, w)
    windows = sw.window_grid((SIZE, SIZE), (16.0, 32.0, 64.0), (0.5, 1.0, 2.0), 0.5)
    np.testing.assert_array_equal(test["proposal_valid"][0], np.ones(w, bool))
    np.testing.assert_array_equal(test["proposal_valid"][1], windows[:, 3] <= 24)
    # One chunk of all windows gives the same detections as chunks of 8 (3 scan steps).
    whole = _model(window_chunk_size=0)
    ref = jax.jit(lambda v: whole.apply(v, images, hw, train=False))(variables)
    for key in ("boxes", "scores"):
        np.testing.assert_allclose(ref[key], test[key], rtol=1e-5, atol=1e-6)


def test_empty_and_padded_examples_add_nothing(setup):
    model, variables, images, targets, keys = setup
    fn = jax.jit(lambda v, t: model.apply(v, images, train=True, targets=t, rng=keys))
    empty = dict(targets, gt_valid=jnp.asarray([[True, True, False], [False] * 3]))
    out = fn(variables, empty)
    s, n = out["terms"]["window_classifier"]
    # The empty image samples 16 backgrounds (its 22 windows are all background).
    first = _expected_count(np.asarray(targets["gt_boxes"][0, :2]))
    assert np.isfinite(s) and float(n) == first + 16
    assert [float(x) for x in out["recall"]] == [2.0, 2.0]

    padded = dict(targets, example_mask=jnp.asarray([1.0, 0.0]))
    a = fn(variables, padded)
    other = dict(padded, gt_boxes=padded["gt_boxes"].at[1].set(
        jnp.asarray([[1, 2, 30, 31]] * 3, jnp.float32)))
    b = fn(variables, other)
    assert float(a["terms"]["window_classifier"][1]) == _expected_count(
        np.asarray(targets["gt_boxes"][0, :2]))
    assert float(a["num_foreground_rois"][1]) == 1
    assert [float(x) for x in a["recall"]] == [2.0, 2.0]
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-6)


def test_adam_steps_lower_the_loss(setup):
    model, variables, images, targets, keys = setup

    def loss(params):
        out = model.apply({"params": params}, images, train=True, targets=targets, rng=keys)
        s, n = out["terms"]["window_classifier"]
        return s / jnp.maximum(n, 1)

    opt = optax.adam(3e-2)

    @jax.jit
    def step(params, state):
        value, grads = jax.value_and_grad(loss)(params)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, value

    params = variables["params"]
    state = opt.init(params)
    values = []
    for _ in range(12):
        params, state, value = step(params, state)
        values.append(float(value))
    assert np.all(np.isfinite(values))
    assert values[-1] < 0.7 * values[0], values


def test_detections_sorted_padded_and_windows(setup):
    model, variables, images, _, _ = setup
    low = _model(postprocess={"detections_per_img": 6, "score_thresh": 0.0})
    out = jax.jit(lambda v: low.apply(v, images, train=False))(variables)
    scores, valid = np.asarray(out["scores"]), np.asarray(out["valid"])
    assert np.all(np.diff(scores, axis=1) <= 0)
    assert np.all(valid[:, :-1] >= valid[:, 1:])  # padding last
    windows = np.asarray(out["proposals"][0])
    for box in np.asarray(out["boxes"])[valid]:  # no box head: every detection is a window
        assert np.min(np.abs(windows - box).max(axis=1)) < 1e-4
    high = _model(postprocess={"detections_per_img": 6, "score_thresh": 0.999})
    none = jax.jit(lambda v: high.apply(v, images, train=False))(variables)
    assert not np.any(none["valid"])
    np.testing.assert_array_equal(none["boxes"], 0.0)
    np.testing.assert_array_equal(none["scores"], 0.0)


def test_box_regression_head(setup):
    _, _, images, targets, keys = setup
    model = _model(window_box_regression=True, window_chunk_size=0)
    variables = jax.jit(model.init, static_argnames="train")(
        jax.random.key(0), images, train=False)
    assert "bbox_pred" in variables["params"]["classifier"]
    out = jax.jit(lambda v: model.apply(v, images, train=True, targets=targets, rng=keys))(
        variables)
    assert set(out["terms"]) == {"window_classifier", "window_box"}
    assert all(np.isfinite(float(x)) for x in jax.tree.leaves(out["terms"]))
