"""NMS: torchvision goldens, a NumPy greedy reference, hand-built cases, tiling, jit/vmap."""

import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet import ops
from tests import helpers

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


def np_nms(boxes, scores, thr, classes=None, valid=None) -> np.ndarray:
    """The classic greedy loop: float32 IoU compared with the threshold in double (the
    reference kernel's arithmetic); ties in score keep the lower index first."""
    b = boxes.astype(np.float32)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    order = np.argsort(-scores, kind="stable")
    if valid is not None:
        order = order[valid[order]]
    suppressed = np.zeros(len(b), bool)
    keep = []
    for i in order:
        if suppressed[i]:
            continue
        keep.append(i)
        w = np.maximum(np.minimum(b[i, 2], b[:, 2]) - np.maximum(b[i, 0], b[:, 0]), 0)
        h = np.maximum(np.minimum(b[i, 3], b[:, 3]) - np.maximum(b[i, 1], b[:, 1]), 0)
        inter = w * h
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = inter / (area[i] + area - inter)  # float32, as the reference computes it
        over = iou.astype(np.float64) > float(thr)  # compared in double, as the reference
        if classes is not None:
            over &= classes == classes[i]
        suppressed |= over
    return np.array(keep, np.int32)


def padded(keep: np.ndarray, k: int) -> np.ndarray:
    out = np.full(k, -1, np.int32)
    out[: min(k, len(keep))] = keep[:k]
    return out


def random_case(rng: np.random.Generator, n: int, extent: float = 200.0):
    xy = rng.uniform(-20, extent, (n, 2))
    wh = rng.uniform(0, 60, (n, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1)
    boxes[: n // 20, 2] = boxes[: n // 20, 0]  # some zero-width boxes
    boxes[n // 20 : n // 10] = np.round(boxes[n // 20 : n // 10] * 2) / 2  # .5 boundaries
    scores = rng.permutation(n).astype(np.float32) / n  # no ties
    return boxes.astype(np.float32), scores


# --- torchvision goldens ---------------------------------------------------------------------


@helpers.with_and_without_jit
@pytest.mark.parametrize("name", ["random_1500", "half_500", "clustered_2000"])
def test_nms_matches_torchvision_with_padding(variant, name):
    fx = np.load(FIXTURES / "nms.npz")
    boxes, scores, keep = fx[f"{name}_boxes"], fx[f"{name}_scores"], fx[f"{name}_keep"]
    thr = float(fx[f"{name}_thr"])
    # Every case padded to 2,000 boxes with invalid rows and 2,000 output slots: one
    # compiled program per variant, and padding must not change the result.
    n, size = len(scores), 2000
    boxes = np.concatenate([boxes, np.zeros((size - n, 4), np.float32)])
    scores = np.concatenate([scores, np.ones(size - n, np.float32)])  # high, but invalid
    valid = np.arange(size) < n
    out = variant(lambda b, s, v: ops.nms(b, s, thr, size, valid=v))(boxes, scores, valid)
    chex.assert_shape(out, (size,))
    chex.assert_type(out, jnp.int32)
    np.testing.assert_array_equal(out, padded(keep, size))


@helpers.with_and_without_jit
def test_batched_nms_matches_torchvision(variant):
    fx = np.load(FIXTURES / "nms.npz")
    keep = fx["batched_keep"]
    fn = variant(lambda b, s, c: ops.batched_nms(b, s, c, 0.5, len(keep) + 5))
    out = fn(fx["batched_boxes"], fx["batched_scores"], fx["batched_classes"])
    np.testing.assert_array_equal(out, padded(keep, len(keep) + 5))


def test_goldens_are_not_trivial():
    fx = np.load(FIXTURES / "nms.npz")
    for name in ("random_1500", "half_500", "clustered_2000"):
        n, kept = len(fx[f"{name}_scores"]), len(fx[f"{name}_keep"])
        assert 0.05 * n < kept < 0.95 * n, (name, kept, n)


# --- NumPy greedy reference ------------------------------------------------------------------


@pytest.mark.parametrize(
    "n, thr, k, tile",
    [
        # n, threshold, max_output_size, tile_size: ragged last tile, a tile of one box,
        # several phases of the kept buffer (k >= 512), a zero threshold
        (300, 0.3, 50, 7),
        (257, 0.7, 600, 1),
        (1200, 0.5, 1200, 64),
        (1200, 0.0, 1200, 64),
    ],
    ids=["ragged_last_tile", "tile_of_one_box", "kept_buffer_phases", "zero_threshold"],
)
def test_nms_random_boxes_match_numpy(n, thr, k, tile):
    boxes, scores = random_case(np.random.default_rng(n + k + tile), n)
    out = ops.nms(boxes, scores, thr, k, tile_size=tile)
    np.testing.assert_array_equal(out, padded(np_nms(boxes, scores, thr), k))


def test_nms_result_independent_of_tile_size():
    boxes, scores = random_case(np.random.default_rng(11), 200, extent=50.0)
    ref = np_nms(boxes, scores, 0.4)
    assert len(ref) > 20
    for tile in (1, 13):  # the default (32) runs in every other test
        np.testing.assert_array_equal(
            ops.nms(boxes, scores, 0.4, 200, tile_size=tile), padded(ref, 200)
        )


def test_batched_nms_random_boxes_match_numpy():
    rng = np.random.default_rng(2)
    boxes, scores = random_case(rng, 800, extent=100.0)
    for num_classes in (2, 5):
        classes = rng.integers(0, num_classes, 800).astype(np.int32)
        out = ops.batched_nms(boxes, scores, classes, 0.5, 800, tile_size=32)
        expected = padded(np_nms(boxes, scores, 0.5, classes), 800)
        np.testing.assert_array_equal(out, expected)


def test_batched_nms_equals_per_class_nms_merged():
    rng = np.random.default_rng(3)
    boxes, scores = random_case(rng, 400, extent=60.0)
    classes = rng.integers(0, 3, 400).astype(np.int32)
    merged = []
    for c in range(3):  # per-class NMS through the validity mask: one shape
        keep = np.asarray(ops.nms(boxes, scores, 0.5, 400, valid=classes == c))
        merged.extend(keep[keep >= 0])
    merged = np.array(sorted(merged, key=lambda i: -scores[i]), np.int32)
    out = ops.batched_nms(boxes, scores, classes, 0.5, 400)
    np.testing.assert_array_equal(out, padded(merged, 400))


def test_nms_valid_mask_matches_numpy():
    boxes, scores = random_case(np.random.default_rng(4), 400, extent=60.0)
    valid = np.random.default_rng(5).uniform(size=400) > 0.3
    out = np.asarray(ops.nms(boxes, scores, 0.5, 400, valid=valid))
    np.testing.assert_array_equal(out, padded(np_nms(boxes, scores, 0.5, valid=valid), 400))
    assert valid[out[out >= 0]].all()


def test_nms_vmap_over_images_with_traced_thresholds():
    rng = np.random.default_rng(6)
    cases = [random_case(rng, 200, extent=50.0) for _ in range(3)]
    boxes = np.stack([c[0] for c in cases])
    scores = np.stack([c[1] for c in cases])
    thr = np.array([0.3, 0.5, 0.7], np.float32)  # traced per-image thresholds
    out = jax.vmap(lambda b, s, t: ops.nms(b, s, t, 120))(boxes, scores, thr)
    chex.assert_shape(out, (3, 120))
    for i in range(3):
        np.testing.assert_array_equal(out[i], padded(np_nms(boxes[i], scores[i], thr[i]), 120))


def test_nms_bfloat16_inputs_match_numpy():
    boxes, scores = random_case(np.random.default_rng(7), 100)
    boxes = np.round(boxes)  # exactly representable in bfloat16
    out = ops.nms(jnp.asarray(boxes, jnp.bfloat16), scores, 0.5, 100)
    np.testing.assert_array_equal(out, padded(np_nms(boxes, scores, 0.5), 100))


# --- hand-built cases ------------------------------------------------------------------------


def nms8(boxes, scores, thr, k, classes=None, tile_size=64) -> np.ndarray:
    """NMS of a few boxes padded to 8 with invalid rows (one compiled shape for all the
    hand-built cases); the first k slots equal NMS with max_output_size=k."""
    n = len(boxes)
    pad = lambda x: np.concatenate([np.asarray(x), np.zeros((8 - n,) + np.shape(x)[1:])])
    valid = np.arange(8) < n
    b, s = pad(boxes).astype(np.float32), pad(scores).astype(np.float32)
    if classes is None:
        out = ops.nms(b, s, thr, 8, valid=valid, tile_size=tile_size)
    else:
        out = ops.batched_nms(b, s, pad(classes).astype(np.int32), thr, 8, valid=valid)
    return np.asarray(out)[:k]


def test_nms_threshold_is_strict():
    boxes = np.array([[0, 0, 2, 1], [0, 0, 1, 1]], np.float32)  # IoU exactly 0.5
    scores = np.array([0.9, 0.8], np.float32)
    np.testing.assert_array_equal(nms8(boxes, scores, 0.5, 3), [0, 1, -1])
    np.testing.assert_array_equal(nms8(boxes, scores, 0.4999, 3), [0, -1, -1])


def test_python_threshold_compared_in_double_like_the_reference():
    # IoU = 15.75 / 52.5 = 0.3 exactly, which rounds to float32(0.3) > 0.3: a Python
    # 0.3 suppresses (as torchvision does); the float32 value 0.3f as a traced array
    # does not (float32(IoU) == 0.3f).
    boxes = np.array([[19, 23, 22, 40.5], [20.5, 24, 22, 34.5]], np.float32)
    scores = np.array([0.9, 0.8], np.float32)
    np.testing.assert_array_equal(nms8(boxes, scores, 0.3, 2), [0, -1])
    np.testing.assert_array_equal(nms8(boxes, scores, jnp.float32(0.3), 2), [0, 1])
    # Python constants inside a jit behave the same; the threshold first seen inside a
    # trace (0.2987) must not leave a tracer behind in any cache.
    jitted = jax.jit(lambda b, s: (ops.nms(b, s, 0.3, 2), ops.nms(b, s, 0.2987, 2)))
    at_03, at_02987 = jitted(boxes, scores)
    np.testing.assert_array_equal(at_03, [0, -1])
    np.testing.assert_array_equal(at_02987, [0, -1])
    np.testing.assert_array_equal(nms8(boxes, scores, 0.2987, 2), [0, -1])


def test_suppressed_box_does_not_suppress():
    # A overlaps B, B overlaps C, A does not overlap C: greedy keeps A and C.
    boxes = np.array([[0, 0, 10, 10], [4, 0, 14, 10], [8.5, 0, 18.5, 10]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    np.testing.assert_array_equal(nms8(boxes, scores, 0.3, 3), [0, 2, -1])
    # Same within one tile and across tiles of one box.
    np.testing.assert_array_equal(nms8(boxes, scores, 0.3, 3, tile_size=1), [0, 2, -1])


def test_order_is_descending_score_not_input():
    boxes = np.array([[0, 0, 1, 1], [5, 5, 6, 6], [10, 10, 11, 11]], np.float32)
    scores = np.array([0.1, 0.9, 0.5], np.float32)
    np.testing.assert_array_equal(ops.nms(boxes, scores, 0.5, 4), [1, 2, 0, -1])


def test_identical_boxes_keep_only_the_best():
    boxes = np.tile(np.array([[3, 3, 7.5, 9.5]], np.float32), (6, 1))
    scores = np.array([0.2, 0.7, 0.1, 0.9, 0.3, 0.4], np.float32)
    np.testing.assert_array_equal(nms8(boxes, scores, 0.5, 2), [3, -1])


def test_score_ties_keep_lower_index_first():
    boxes = np.array([[0, 0, 4, 4], [0, 0, 4, 4], [10, 0, 14, 4]], np.float32)
    scores = np.array([0.5, 0.5, 0.5], np.float32)
    np.testing.assert_array_equal(nms8(boxes, scores, 0.5, 3), [0, 2, -1])


def test_degenerate_and_outside_boxes_are_ordinary_boxes():
    boxes = np.array(
        [
            [5, 5, 5, 5],  # a point: IoU with another point is NaN, never suppresses
            [5, 5, 5, 5],
            [-50, -50, -40, -40],  # outside the image: treated like any box
            [-49, -50, -39, -40],
            [0, 0, 10, 0],  # zero height
        ],
        np.float32,
    )
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5], np.float32)
    np.testing.assert_array_equal(nms8(boxes, scores, 0.5, 6), [0, 1, 2, 4, -1, -1])


def test_negative_and_zero_scores_keep_score_then_index_order():
    boxes = np.array([[0, 0, 1, 1], [2, 2, 3, 3], [4, 4, 5, 5]], np.float32)
    scores = np.array([-1.0, -0.0, 0.0], np.float32)  # -0.0 ties with 0.0: index order
    np.testing.assert_array_equal(nms8(boxes, scores, 0.5, 3), [1, 2, 0])


def test_all_invalid_boxes_keep_nothing():
    boxes = np.arange(32, dtype=np.float32).reshape(8, 4)
    scores = np.linspace(0, 1, 8, dtype=np.float32)
    out = ops.nms(boxes, scores, 0.5, 8, valid=np.zeros(8, bool))
    np.testing.assert_array_equal(out, [-1] * 8)


def test_different_classes_never_suppress():
    boxes = np.tile(np.array([[0, 0, 10, 10]], np.float32), (4, 1))
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    classes = np.array([0, 1, 0, 2])
    np.testing.assert_array_equal(nms8(boxes, scores, 0.5, 4, classes), [0, 1, 3, -1])


def test_batched_is_exact_where_offsets_would_round():
    # IoU(box0, box1) = 8.7 / 9 = 0.967 <= 0.98: both kept. torchvision's offset trick
    # adds 5 * (1e6 + 4) to class-5 coordinates, where float32's spacing is 0.5, so
    # 2.9 rounds to 3, the IoU becomes 1 and box 1 would be suppressed.
    boxes = np.array([[0, 0, 3, 3], [0, 0, 3, 2.9], [1e6, 0, 1e6 + 3, 3]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    classes = np.array([5, 5, 9])
    shifted = boxes[:2] + np.float32(5 * (1e6 + 3 + 1))
    assert float(ops.box_iou(shifted[:1], shifted[1:])[0, 0]) == 1.0
    out = nms8(boxes, scores, 0.98, 3, classes)
    np.testing.assert_array_equal(out, [0, 1, 2])
    np.testing.assert_array_equal(nms8(boxes, scores, 0.96, 3, classes), [0, 2, -1])


# --- compilation and memory ------------------------------------------------------------------


def test_nms_compiles_once_per_shape_whatever_the_threshold():
    rng = np.random.default_rng(8)
    with helpers.count_traces("_nms_jit") as traces:  # a shape no other test uses
        outs = [ops.nms(*random_case(rng, 347), 0.5, 61) for _ in range(3)]
        outs.append(ops.nms(*random_case(rng, 347), 0.6, 61))  # a new threshold is a value
        outs.append(ops.nms(*random_case(rng, 347), jnp.float32(0.7), 61))
        outs.append(ops.nms(*random_case(rng, 347), np.float32(0.4), 61))
    assert len(traces) == 1
    assert not np.array_equal(outs[0], outs[1])


def test_nms_of_large_n_builds_no_n_by_n_array():
    n = 20000
    fn = jax.jit(lambda b, s: ops.nms(b, s, 0.5, 100))
    hlo = fn.lower(jnp.zeros((n, 4)), jnp.zeros((n,))).as_text()
    assert f"{n},{n}" not in hlo.replace(" ", "")
    assert f"{n}x{n}" not in hlo
    boxes, scores = random_case(np.random.default_rng(9), n, extent=2000.0)
    out = np.asarray(fn(boxes, scores))
    # Greedy decisions depend only on higher-scoring boxes, so greedy NMS over the 400
    # best boxes gives the first kept boxes of the full problem.
    top = np.argsort(-scores)[:400]
    ref = top[np_nms(boxes[top], scores[top], 0.5)]
    assert len(ref) >= 100
    np.testing.assert_array_equal(out, ref[:100])


def _crowded_top_case(rng: np.random.Generator, n: int, crowd: int):
    """``crowd`` copies of one box hold the best scores: the best candidates keep one box."""
    boxes, scores = random_case(rng, n)
    boxes[:crowd] = boxes[crowd]
    scores[:crowd] = 2.0 + np.arange(crowd, dtype=np.float32) / crowd
    return boxes, scores


@pytest.mark.parametrize("case", ["best_candidates_suffice", "crowded_top_needs_all",
                                  "score_ties", "few_valid", "classes"])
def test_nms_of_many_more_candidates_than_slots_matches_numpy(case):
    # n > 2 * 16 * k: NMS visits the best 16 * k first, all n only where those run out.
    n, k = 2000, 10
    rng = np.random.default_rng(12)
    boxes, scores = random_case(rng, n)
    valid = classes = None
    if case == "crowded_top_needs_all":
        boxes, scores = _crowded_top_case(rng, n, crowd=16 * k + 5)
    elif case == "score_ties":
        scores = np.floor(scores * 7) / 7
    elif case == "few_valid":
        valid = rng.uniform(size=n) < 0.05
    elif case == "classes":
        classes = rng.integers(0, 80, n).astype(np.int32)
    if classes is None:
        out = ops.nms(boxes, scores, 0.5, k, valid=valid)
    else:
        out = ops.batched_nms(boxes, scores, classes, 0.5, k)
    np.testing.assert_array_equal(out, padded(np_nms(boxes, scores, 0.5, classes, valid), k))


def test_nms_vmap_where_only_some_images_need_all_candidates():
    rng = np.random.default_rng(13)
    cases = [random_case(rng, 2000), _crowded_top_case(rng, 2000, crowd=170)]
    boxes = np.stack([c[0] for c in cases])
    scores = np.stack([c[1] for c in cases])
    out = jax.jit(jax.vmap(lambda b, s: ops.nms(b, s, 0.5, 10)))(boxes, scores)
    for i in range(2):
        np.testing.assert_array_equal(out[i], padded(np_nms(boxes[i], scores[i], 0.5), 10))
