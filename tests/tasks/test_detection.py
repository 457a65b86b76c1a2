"""The detection task: preprocessing, host evaluation by hand, the Faster R-CNN losses on
devices (overfitting two images to box and mask AP50 = 1 without recompiling:
tests/tasks/test_detection_mask_rcnn.py)."""

import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet import core
from jaxdet.tasks import detection as det_task
from jaxdet.train import state as state_lib
from jaxdet.train import step as step_lib
from tests.helpers import load_config


def _config(arg="runlocal"):
    config = load_config("faster_rcnn_shapes", arg)
    config.data.max_instances = 4
    return config


def _example(boxes, labels, size=64, image_id=0):
    rng = np.random.default_rng(image_id)
    return {"image": rng.integers(0, 255, (size, size, 3), dtype=np.uint8),
            "objects": {"bbox": np.asarray(boxes, np.float32).reshape(-1, 4),
                        "label": np.asarray(labels, np.int64)},
            "image_id": image_id}


def test_preprocess_pads_ground_truth_and_rejects_bad_input():
    pre = det_task.make_preprocess(_config())
    out = pre(_example([[1, 2, 10, 12], [20, 20, 40, 30]], [3, 0]))
    chex.assert_shape([out["gt_boxes"], out["gt_labels"], out["gt_valid"]], [(4, 4), (4,), (4,)])
    np.testing.assert_array_equal(out["gt_valid"], [True, True, False, False])
    np.testing.assert_array_equal(out["gt_labels"], [3, 0, 0, 0])
    np.testing.assert_array_equal(out["gt_boxes"][1], [20, 20, 40, 30])
    np.testing.assert_array_equal(out["image_hw"], [64, 64])
    empty = pre(_example(np.zeros((0, 4)), []))
    assert not empty["gt_valid"].any() and empty["gt_boxes"].shape == (4, 4)
    with pytest.raises(ValueError, match="max_instances=4"):
        pre(_example([[0, 0, 5, 5]] * 5, [0] * 5, image_id=7))
    with pytest.raises(ValueError, match="example 3: objects.bbox"):
        pre(_example([[10, 0, 5, 5]], [0], image_id=3))
    with pytest.raises(ValueError, match="objects.label"):
        pre(_example([[0, 0, 5, 5]], [4]))


def _padded(rows, k, tail=()):
    out = np.zeros((k, *tail), np.float32)
    out[:len(rows)] = np.asarray(rows, np.float32).reshape(-1, *tail)
    return out


def test_evaluator_matches_a_hand_computed_ap():
    """3 images + 1 padding example, one class. Detections by score: 0.95 false positive
    (image 1), 0.9 hit (image 0), 0.8 hit (image 1), 0.7 false positive (image 2, no gt).
    3 gt boxes: precision/recall after each = (0, 0), (1/2, 1/3), (2/3, 2/3), (1/2, 2/3);
    interpolated precision is 2/3 up to recall 2/3 and 0 beyond, so COCO's 101-point AP is
    67 * (2/3) / 101 at every IoU threshold (the hits are exact)."""
    config = _config()
    k, g = 3, 4
    gt = [[[4, 4, 20, 20]], [[30, 30, 50, 60], [2, 40, 14, 60]], [], [[0, 0, 9, 9]]]
    det = [[([4, 4, 20, 20], 0.9)], [([40, 0, 60, 10], 0.95), ([30, 30, 50, 60], 0.8)],
           [([10, 10, 30, 30], 0.7)], [([0, 0, 9, 9], 0.99)]]  # image 3 is padding
    batch = {
        "index": np.arange(4, dtype=np.int32), "mask": np.asarray([1, 1, 1, 0], np.float32),
        "gt_boxes": np.stack([_padded(b, g, (4,)) for b in gt]),
        "gt_labels": np.zeros((4, g), np.int32),
        "gt_valid": np.stack([np.arange(g) < len(b) for b in gt]),
        "image_hw": np.full((4, 2), 64, np.int32), "orig_hw": np.full((4, 2), 64, np.int32),
    }
    outputs = {
        "boxes": np.stack([_padded([b for b, _ in d], k, (4,)) for d in det]),
        "scores": np.stack([_padded([s for _, s in d], k) for d in det]),
        "classes": np.zeros((4, k), np.int32),
        "valid": np.stack([np.arange(k) < len(d) for d in det]),
        "recall_hit": np.asarray([1, 1, 0, 1], np.int32),
        "recall_total": np.asarray([1, 2, 0, 1], np.int32),
    }
    evaluator = det_task.host_evaluator(config)
    evaluator.add(batch, outputs)
    summary = evaluator.summarize()
    expected = 67 * (2 / 3) / 101
    assert summary["num_images"] == 3
    for key in ("AP", "AP50", "AP75", "AP/circle"):
        assert summary[key] == pytest.approx(expected, abs=1e-9), key
    assert summary["AR100@0.5"] == pytest.approx(2 / 3)


def test_evaluator_maps_ground_truth_to_the_original_size():
    evaluator = det_task.host_evaluator(_config())
    batch = {"index": np.asarray([0]), "mask": np.ones(1, np.float32),
             "gt_boxes": np.asarray([[[10, 10, 30, 20]]], np.float32),
             "gt_labels": np.zeros((1, 1), np.int32), "gt_valid": np.ones((1, 1), bool),
             "image_hw": np.asarray([[32, 64]]), "orig_hw": np.asarray([[64, 128]])}
    outputs = {"boxes": np.asarray([[[20, 20, 60, 40]]], np.float32),  # already in orig pixels
               "scores": np.ones((1, 1), np.float32), "classes": np.zeros((1, 1), np.int32),
               "valid": np.ones((1, 1), bool), "recall_hit": np.ones(1, np.int32),
               "recall_total": np.ones(1, np.int32)}
    evaluator.add(batch, outputs)
    assert evaluator.summarize()["AP"] == pytest.approx(1.0)


def _batch(config, n=8):
    pre = det_task.make_preprocess(config)
    examples = [pre(_example([[4, 6, 30, 28], [34, 30, 60, 62]], [1, 2], image_id=i))
                for i in range(n - 1)]
    examples.append(pre(_example(np.zeros((0, 4)), [], image_id=99)))  # no instances at all
    batch = {k: np.stack([e[k] for e in examples]) for k in examples[0]}
    batch["index"] = np.arange(n, dtype=np.int32)
    batch["mask"] = np.ones(n, np.float32)
    return batch


def test_loss_and_predict_functions():
    config = _config()
    batch = _batch(config, 4)
    model = det_task.create_model(config, bn_axis_name=None)
    images = det_task.model_input({"image": jnp.asarray(batch["image"][:1])})
    variables = jax.jit(model.init, static_argnames="train")(jax.random.key(0), images,
                                                             train=False)
    loss_fn = jax.jit(det_task.make_loss_fn(model, config))
    out = loss_fn(variables["params"], variables["batch_stats"], batch, jax.random.key(1))
    assert set(out.terms) == set(det_task.LOSS_TERMS)
    for name, (total, count) in out.terms.items():
        assert np.isfinite(total) and count > 0, name
    # 4 images x 32 sampled anchors; the box terms only see positives
    assert float(out.terms["rpn_objectness"][1]) == 4 * config.model.rpn.batch_size_per_image
    preds = jax.jit(det_task.make_predict_fn(model, config))(
        variables["params"], variables["batch_stats"], batch)
    k = config.model.postprocess.detections_per_img
    chex.assert_shape([preds["boxes"], preds["scores"], preds["classes"], preds["valid"]],
                      [(4, k, 4), (4, k), (4, k), (4, k)])
    chex.assert_type([preds["boxes"], preds["classes"]], [jnp.float32, jnp.int32])
    np.testing.assert_array_equal(preds["recall_total"], [2, 2, 2, 0])


def test_eight_devices_equal_one_device_with_padded_examples():
    config = _config()
    # the single-level C4 detector: the same step body, a third of the program to compile
    config.model.levels, config.model.rpn.anchor_sizes = "c4", ((8, 16, 32),)
    batch = _batch(config, 8)
    batch["mask"][-2:] = 0.0  # padding: must add nothing to any loss
    init_model = det_task.create_model(config, bn_axis_name=None)
    variables = jax.jit(init_model.init, static_argnames="train")(
        jax.random.key(0), det_task.model_input({"image": jnp.asarray(batch["image"][:1])}),
        train=False)
    optimizer = state_lib.make_optimizer(config)
    results = []
    for n in (1, 8):
        model = det_task.create_model(config, bn_axis_name=core.AXIS_NAME)
        body = step_lib.make_train_step_body(
            det_task.make_loss_fn(model, config), optimizer, det_task.loss_weights(config),
            jax.random.key(1))
        mesh = step_lib.make_mesh(jax.devices()[:n])
        state = state_lib.create_train_state(variables, optimizer)
        step = step_lib.shard_map_step(body, mesh, donate=False)
        state, metrics = step(state, batch)
        results.append((jax.device_get(state.params), jax.device_get(metrics)))
    (p1, m1), (p8, m8) = results
    for term in det_task.LOSS_TERMS:
        np.testing.assert_allclose(m8[f"loss/{term}"], m1[f"loss/{term}"], rtol=1e-4,
                                   err_msg=term)
    chex.assert_trees_all_close(p8, p1, atol=2e-5)


def test_detector_choice_and_proposal_carrying_source():
    config = _config()
    assert det_task.detector_name(config) == "faster_rcnn"
    assert tuple(det_task.loss_weights(config)) == det_task.LOSS_TERMS
    config.model.detector = "no_such_detector"
    with pytest.raises(ValueError, match="config.model.detector='no_such_detector'"):
        det_task.loss_weights(config)
    source = [_example([[1, 1, 9, 9]], [0], image_id=i) for i in range(3)]
    boxes = np.arange(3 * 2 * 4, dtype=np.float32).reshape(3, 2, 4)
    valid = np.asarray([[True, False], [True, True], [False, False]])
    wrapped = det_task.WithProposals(source, boxes, valid)
    assert len(wrapped) == 3
    out = det_task.make_preprocess(_config())(wrapped[1])
    np.testing.assert_array_equal(out["proposals"], boxes[1])
    np.testing.assert_array_equal(out["proposal_valid"], [True, True])
    with pytest.raises(ValueError, match="2 proposal rows for a split of 3"):
        det_task.WithProposals(source, boxes[:2], valid[:2])


def test_proposal_detectors_get_cached_selective_search_proposals(data_dir):
    """The baselines' input path: proposals computed once per split, cached next to the
    dataset, carried by every example into the batch (the detectors themselves are tested in
    tests/detection/)."""
    config = load_config("detection_baselines", "fast_rcnn,runlocal")
    config.data.data_dir = data_dir
    sources = det_task.datasets(config)
    caches = sorted(p.name for p in pathlib.Path(data_dir).rglob("proposals_fast_50_*/*.npz"))
    assert caches == ["train.npz", "validation.npz"], caches
    pre = det_task.make_preprocess(config)
    recalled = total = 0
    for i in range(len(sources["validation"])):
        ex = pre(sources["validation"][i])
        chex.assert_shape([ex["proposals"], ex["proposal_valid"]], [(50, 4), (50,)])
        assert ex["proposal_valid"].any()
        hit, n = det_task.rpn_lib.proposal_recall(
            ex["proposals"], ex["proposal_valid"], ex["gt_boxes"], ex["gt_valid"])
        recalled, total = recalled + int(hit), total + int(n)
    # Selective Search finds most of these shapes even on 64 px scenes
    assert recalled >= 0.6 * total, (recalled, total)


def test_mask_rcnn_preprocess_and_mask_ap_of_pasted_gt_crops(data_dir):
    """Mask R-CNN batches carry box-cropped gt masks; the evaluator pastes [K, 28, 28]
    probabilities at the image size and scores them against the source's full-res masks."""
    from jaxdet.detection import mask_head

    config = load_config("mask_rcnn_shapes", "runlocal")
    config.data.data_dir = data_dir
    assert "gt_masks" not in det_task.make_preprocess(_config())(_example([[1, 2, 9, 9]], [0]))
    assert det_task.loss_terms(config)[-1] == "roi_mask"
    source = det_task.datasets(config)["validation"]
    pre = det_task.make_preprocess(config)
    g, m = config.data.max_instances, config.data.mask_crop_size
    examples = [pre(source[i]) for i in range(2)]
    for i, ex in enumerate(examples):
        n = int(ex["gt_valid"].sum())
        assert ex["gt_masks"].shape == (g, m, m) and ex["gt_masks"].dtype == np.uint8
        raw = source[i]["objects"]
        np.testing.assert_array_equal(
            ex["gt_masks"][:n], mask_head.crop_gt_masks(raw["mask"][..., 0], raw["bbox"], m))
        assert not ex["gt_masks"][n:].any()
    batch = {k: np.stack([e[k] for e in examples]) for k in examples[0]}
    batch["index"] = np.arange(2, dtype=np.int32)
    batch["mask"] = np.ones(2, np.float32)
    probs = np.zeros((2, g, 28, 28), np.float32)  # the gt's own masks at 28 x 28
    for i in range(2):
        raw = source[i]["objects"]
        probs[i, :len(raw["bbox"])] = mask_head.crop_gt_masks(
            raw["mask"][..., 0], raw["bbox"], 28) / 255.0
    outputs = {"boxes": batch["gt_boxes"], "scores": np.ones((2, g), np.float32),
               "classes": batch["gt_labels"], "valid": batch["gt_valid"],
               "recall_hit": np.zeros(2), "recall_total": np.zeros(2)}
    results = {}
    for name, masks in (("gt", probs), ("empty", np.zeros_like(probs))):
        ev = det_task.host_evaluator(config)
        ev.add(batch, {**outputs, "masks": masks})
        results[name] = ev.summarize()
    assert results["gt"]["AP"] == pytest.approx(1.0)
    assert results["gt"]["mask_AP50"] == pytest.approx(1.0)
    assert results["gt"]["mask_AP"] >= 0.8  # paste round trip: a few border pixels differ
    assert results["empty"]["mask_AP"] == 0.0 and results["empty"]["AP"] == pytest.approx(1.0)


def test_keypoint_rcnn_preprocess_and_keypoint_ap_of_gt_keypoints(data_dir):
    """Keypoint R-CNN batches carry the scenes' person keypoints [G, 17, 3]; the evaluator
    scores person detections' keypoints with pycocotools ``keypoints`` (kp_AP)."""
    from jaxdet.metrics import coco_eval

    config = load_config("keypoint_rcnn_shapes", "runlocal")
    config.data.data_dir = data_dir
    assert det_task.class_names(config)[-1] == "person"
    assert det_task.loss_terms(config)[-1] == "roi_keypoint"
    source = det_task.datasets(config)["validation"]
    pre = det_task.make_preprocess(config)
    examples = [pre(source[i]) for i in range(len(source))]
    g = config.data.max_instances
    for i, ex in enumerate(examples):
        n = int(ex["gt_valid"].sum())
        assert ex["gt_keypoints"].shape == (g, 17, 3) and ex["gt_keypoints"].dtype == np.float32
        np.testing.assert_array_equal(ex["gt_keypoints"][:n], source[i]["objects"]["keypoints"])
        assert not ex["gt_keypoints"][n:].any()
    batch = {k: np.stack([e[k] for e in examples]) for k in examples[0]}
    assert (batch["gt_labels"][batch["gt_valid"]] == 4).any()  # persons to score
    b = len(examples)
    batch["index"] = np.arange(b, dtype=np.int32)
    batch["mask"] = np.ones(b, np.float32)
    outputs = {"boxes": batch["gt_boxes"], "scores": np.ones((b, g), np.float32),
               "classes": batch["gt_labels"], "valid": batch["gt_valid"],
               "recall_hit": np.zeros(b), "recall_total": np.zeros(b)}
    # OKS scale = COCO's gt area, the segment area (the source's objects/area: the visible
    # mask's pixels), not the box area (~4x larger for a stick figure with spread limbs): each
    # person's keypoints moved right by the distance giving OKS 0.62 with the segment area
    # match at OKS thresholds 0.5, 0.55, 0.6 only (kp_AP 0.3; with the box area: OKS > 0.8).
    sigmas = coco_eval.COCO_KEYPOINT_SIGMAS
    oks62 = batch["gt_keypoints"].copy()
    for i, j in zip(*np.nonzero(batch["gt_valid"] & (batch["gt_labels"] == 4)), strict=True):
        area = float(source[i]["objects"]["area"][j])
        k2 = (2 * sigmas[oks62[i, j, :, 2] > 0]) ** 2
        oks = lambda d, a=area, k2=k2: np.mean(np.exp(-d * d / (2 * a * k2)))  # noqa: E731
        lo, hi = 0.0, 100.0
        for _ in range(60):  # bisection: oks decreases with d
            lo, hi = ((lo + hi) / 2, hi) if oks((lo + hi) / 2) > 0.62 else (lo, (lo + hi) / 2)
        box = batch["gt_boxes"][i, j]
        assert oks(lo, a=float((box[2] - box[0]) * (box[3] - box[1]))) > 0.8
        oks62[i, j, :, 0] += lo
    results = {}
    for name, kp in (("gt", batch["gt_keypoints"]), ("far", batch["gt_keypoints"] + 30.0),
                     ("oks62", oks62)):
        ev = det_task.host_evaluator(config)
        ev.add(batch, {**outputs, "keypoints": kp})
        results[name] = ev.summarize()
    assert results["gt"]["kp_AP"] == pytest.approx(1.0) and results["gt"]["AP"] == 1.0
    assert results["far"]["kp_AP"] == 0.0 and results["far"]["AP"] == pytest.approx(1.0)
    assert results["oks62"]["kp_AP50"] == pytest.approx(1.0)
    assert results["oks62"]["kp_AP75"] == 0.0
    assert results["oks62"]["kp_AP"] == pytest.approx(0.3)
