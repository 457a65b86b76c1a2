"""COCO box AP through pycocotools: a hand-computed 3-image split (101-point interpolation),
perfect / empty detections, padding, duplicate ids, per-class AP and the results JSON."""

import json

import numpy as np
import pytest

from jaxdet.metrics import coco_eval

F32 = np.float32


def _add_image(ev, image_id, gt_boxes, dets, gt_labels=None, size=(300, 300)):
    """Adds one image; ``dets`` is a list of ``(box, score)`` or ``(box, score, label)``."""
    gt_boxes = np.asarray(gt_boxes, F32).reshape(-1, 4)
    labels = np.zeros(len(gt_boxes), int) if gt_labels is None else np.asarray(gt_labels)
    ev.add_ground_truth(image_id, gt_boxes, labels, np.ones(len(gt_boxes), bool), *size)
    if dets:
        boxes = np.array([d[0] for d in dets], F32)
        scores = np.array([d[1] for d in dets], F32)
        det_labels = np.array([d[2] if len(d) > 2 else 0 for d in dets])
        ev.add_detections(image_id, boxes, scores, det_labels, np.ones(len(dets), bool))


def _hand_split():
    """One class, 3 gt, 4 detections; all boxes medium (32² <= area < 96²) except gt C.

    Detections by descending score over the split:
      d1 0.9 image 1, == gt A (IoU 1)                -> TP at every IoU threshold
      d3 0.8 image 2, overlaps nothing               -> FP
      d2 0.7 image 2, on gt B with IoU 50*31/2500 = 0.62 -> TP at .50 .55 .60, FP from .65 on
      d4 0.6 image 3 (no gt)                         -> FP
    gt C (20 x 20 = 400, small) is never detected.
    """
    ev = coco_eval.CocoEvaluator(["thing"])
    _add_image(ev, 1, [[10, 10, 50, 50]], [([10, 10, 50, 50], 0.9)])
    _add_image(ev, 2, [[0, 0, 50, 50], [100, 100, 120, 120]],
               [([200, 200, 240, 240], 0.8), ([0, 0, 50, 31], 0.7)])
    _add_image(ev, 3, np.zeros((0, 4)), [([0, 0, 40, 40], 0.6)])
    return ev


def test_hand_computed_split():
    out = _hand_split().summarize()
    # COCO's AP: precision made monotone from the right, read at recall 0, .01, ..., 1 (101
    # points) at the first detection reaching that recall; 0 past the last recall.
    # IoU .50-.60 (3 thresholds), 3 gt: TP FP TP FP -> recall 1/3 1/3 2/3 2/3, precision
    # 1 1/2 2/3 1/2 -> monotone 1 2/3 2/3 1/2: recall .00-.33 (34 points) read 1, .34-.66
    # (33 points) read 2/3, .67-1 read 0.
    ap_low = (34 * 1 + 33 * 2 / 3) / 101  # 56/101
    # IoU .65-.95 (7 thresholds): TP FP FP FP -> recall 1/3 only: 34 points read 1.
    ap_high = 34 / 101
    np.testing.assert_allclose(out["AP50"], ap_low, rtol=1e-12)
    np.testing.assert_allclose(out["AP75"], ap_high, rtol=1e-12)
    np.testing.assert_allclose(out["AP"], (3 * ap_low + 7 * ap_high) / 10, rtol=1e-12)
    np.testing.assert_allclose(out["AP/thing"], out["AP"], rtol=1e-12)
    # Medium only: gt C (small) is ignored, so 2 gt: recall 1/2 1/2 1 1 at .50-.60,
    # monotone precision 1 2/3 2/3 1/2 -> 51 points read 1, 50 read 2/3; from .65 on 51 read 1.
    ap_medium = (3 * (51 + 50 * 2 / 3) / 101 + 7 * 51 / 101) / 10
    np.testing.assert_allclose(out["AP_medium"], ap_medium, rtol=1e-12)
    # Small: gt C missed; every detection is medium-sized and unmatched, so ignored -> 0.
    assert out["AP_small"] == 0.0
    assert out["AP_large"] == -1.0  # no large gt: COCOeval's -1, not NaN
    # Recall over thresholds: 2/3 at .50-.60, 1/3 after. With 1 detection per image, image 2
    # keeps only its top-scored d3 (a FP): recall 1/3 everywhere.
    np.testing.assert_allclose(out["AR100"], (3 * 2 / 3 + 7 / 3) / 10, rtol=1e-12)
    np.testing.assert_allclose(out["AR10"], out["AR100"], rtol=1e-12)
    np.testing.assert_allclose(out["AR1"], 1 / 3, rtol=1e-12)
    assert set(out) == set(coco_eval.STAT_KEYS) | {"AP/thing"}
    assert all(isinstance(v, float) and not np.isnan(v) for v in out.values())


def test_perfect_detections_give_one():
    ev = coco_eval.CocoEvaluator(["a", "b"])
    _add_image(ev, 7, [[0, 0, 20, 30], [40, 40, 140, 150]],
               [([0, 0, 20, 30], 0.5, 0), ([40, 40, 140, 150], 0.9, 1)], gt_labels=[0, 1])
    _add_image(ev, 8, [[5, 5, 60, 60]], [([5, 5, 60, 60], 0.3, 1)], gt_labels=[1])
    out = ev.summarize()
    for key in ("AP", "AP50", "AP75", "AR1", "AR10", "AR100", "AP/a", "AP/b"):
        assert out[key] == pytest.approx(1.0, abs=1e-12), key


def test_no_detections_give_zero():
    ev = coco_eval.CocoEvaluator(["a"])
    _add_image(ev, 1, [[0, 0, 50, 50]], [])
    # Detections added but all padding: still none.
    _add_image(ev, 2, [[0, 0, 50, 50]], [])
    ev.add_detections(2, np.full((3, 4), np.nan, F32), np.full(3, np.nan, F32),
                      np.full(3, -1), np.zeros(3, bool))
    assert ev.results_json() == []
    out = ev.summarize()
    for key in ("AP", "AP50", "AP75", "AP_medium", "AR1", "AR10", "AR100", "AP/a"):
        assert out[key] == 0.0, key


def test_per_class_ap():
    ev = coco_eval.CocoEvaluator(["cat", "dog", "bird"])
    # cat found perfectly; dog's gt missed and its detection elsewhere; no bird gt at all.
    _add_image(ev, 1, [[0, 0, 40, 40], [100, 100, 150, 150]],
               [([0, 0, 40, 40], 0.9, 0), ([200, 200, 250, 250], 0.8, 1),
                ([0, 0, 40, 40], 0.1, 2)], gt_labels=[0, 1])
    out = ev.summarize()
    assert out["AP/cat"] == pytest.approx(1.0, abs=1e-12)
    assert out["AP/dog"] == 0.0
    assert out["AP/bird"] == -1.0  # no gt: -1, and left out of the class mean
    assert out["AP"] == pytest.approx(0.5, abs=1e-12)


def test_add_batch_skips_padding_rows_and_examples():
    b, g, d = 3, 4, 5
    gt_boxes = np.full((b, g, 4), np.nan, F32)
    gt_labels = np.full((b, g), 99)
    gt_valid = np.zeros((b, g), bool)
    det_boxes = np.full((b, d, 4), np.inf, F32)
    det_scores = np.full((b, d), np.nan, F32)
    det_labels = np.full((b, d), -5)
    det_valid = np.zeros((b, d), bool)
    for i, box in enumerate([[0, 0, 40, 40], [10, 20, 60, 90]]):
        gt_boxes[i, 1], gt_labels[i, 1], gt_valid[i, 1] = box, 0, True
        det_boxes[i, 2], det_scores[i, 2], det_labels[i, 2], det_valid[i, 2] = box, 0.5, 0, True
    # The padding example repeats id 10 and has "valid" garbage: it must not be read at all.
    gt_valid[2] = det_valid[2] = True
    ev = coco_eval.CocoEvaluator(["a"])
    ev.add_batch(np.array([10, 11, 10]), example_mask=np.array([1, 1, 0]),
                 gt_boxes=gt_boxes, gt_labels=gt_labels, gt_valid=gt_valid,
                 heights=np.array([100, 120, 0]), widths=np.array([80, 90, 0]),
                 det_boxes=det_boxes, det_scores=det_scores, det_labels=det_labels,
                 det_valid=det_valid)
    assert ev.num_images == 2
    assert len(ev.results_json()) == 2
    dataset = ev.ground_truth_dataset()
    assert dataset["images"] == [{"id": 10, "height": 100, "width": 80},
                                 {"id": 11, "height": 120, "width": 90}]
    assert [a["id"] for a in dataset["annotations"]] == [1, 2]
    assert ev.summarize()["AP"] == pytest.approx(1.0, abs=1e-12)


def test_duplicate_image_id_raises():
    ev = coco_eval.CocoEvaluator(["a"])
    _add_image(ev, 42, [[0, 0, 40, 40]], [([0, 0, 40, 40], 0.9)])
    with pytest.raises(ValueError, match="42"):
        ev.add_ground_truth(42, np.zeros((0, 4), F32), np.zeros(0, int), np.zeros(0, bool), 9, 9)
    with pytest.raises(ValueError, match="42"):
        ev.add_detections(42, np.zeros((1, 4), F32), np.ones(1, F32), np.zeros(1, int),
                          np.ones(1, bool))
    # Detections for an image whose ground truth never came: caught at evaluation.
    ev.add_detections(43, np.zeros((1, 4), F32), np.ones(1, F32), np.zeros(1, int),
                      np.ones(1, bool))
    with pytest.raises(ValueError, match="43"):
        ev.summarize()


def test_results_json_format_and_round_trip(tmp_path):
    ev = coco_eval.CocoEvaluator(["a", "b"])
    _add_image(ev, 5, [[10, 20, 50, 80]],
               [([10.5, 20.25, 50.5, 80.75], 0.75, 1), ([0, 0, 4, 2], 0.25, 0)],
               gt_labels=[1])
    results = ev.results_json()
    assert results == [
        {"image_id": 5, "category_id": 2, "bbox": [10.5, 20.25, 40.0, 60.5], "score": 0.75},
        {"image_id": 5, "category_id": 1, "bbox": [0.0, 0.0, 4.0, 2.0], "score": 0.25},
    ]
    assert all(type(r["image_id"]) is int and type(r["category_id"]) is int for r in results)
    path = tmp_path / "results.json"
    ev.write_results(path)
    assert json.loads(path.read_text()) == results


def test_crowd_ground_truth_is_neither_hit_nor_miss():
    boxes = np.array([[0, 0, 40, 40], [100, 100, 200, 200]], F32)
    dets = np.array([[0, 0, 40, 40], [110, 110, 150, 150]], F32)  # 2nd inside the 2nd gt
    # Not crowd: 2 gt, TP then FP (IoU .16) -> recall 1/2, 51 recall points read 1.
    # Crowd: the 2nd gt is ignored, and so is the detection matched to it (IoU with a crowd
    # box = intersection / detection area = 1) -> 1 gt, 1 TP.
    for iscrowd, expected_ap50 in ((None, 51 / 101), ([False, True], 1.0)):
        ev = coco_eval.CocoEvaluator(["a"])
        ev.add_ground_truth(1, boxes, np.zeros(2, int), np.ones(2, bool), 300, 300,
                            iscrowd=iscrowd)
        ev.add_detections(1, dets, np.array([0.9, 0.8], F32), np.zeros(2, int), np.ones(2, bool))
        assert ev.summarize()["AP50"] == pytest.approx(expected_ap50, abs=1e-12), iscrowd


def _square(top, left, size=10, hw=40):
    m = np.zeros((hw, hw), np.uint8)
    m[top:top + size, left:left + size] = 1
    return m


def _segm_evaluator(det_mask, pad_rows=True):
    """One 40x40 image, one gt: a 10x10 square mask at (10, 10) with its exact box; one
    detection with the exact box and ``det_mask``; padding rows (NaN boxes) on both sides."""
    ev = coco_eval.CocoEvaluator(["a"], with_masks=True)
    gt_mask = _square(10, 10)
    box = np.array([[10, 10, 20, 20], [np.nan] * 4], F32)
    gt_masks = np.stack([gt_mask, np.ones_like(gt_mask)])  # the padding row is ignored
    ev.add_batch([3], example_mask=[True], gt_boxes=box[None], gt_labels=[[0, 0]],
                 gt_valid=[[True, False]], heights=[40], widths=[40], det_boxes=box[None],
                 det_scores=[[0.9, 0.5]], det_labels=[[0, 0]], det_valid=[[True, False]],
                 gt_masks=gt_masks[None], det_masks=np.stack([det_mask, gt_mask])[None])
    return ev


def test_segm_perfect_mask_gives_one_and_shifted_mask_a_lower_ap():
    out = _segm_evaluator(_square(10, 10)).summarize()
    for key in ("AP", "AP50", "AP75", "mask_AP", "mask_AP50", "mask_AP75", "mask_AR100",
                "mask_AP/a"):
        assert out[key] == pytest.approx(1.0, abs=1e-12), key
    # Shifted 2 px right: mask IoU = (10 * 8) / (10 * 12) = 2/3 -> a hit at IoU .50 .55 .60
    # .65 (4 of 10 thresholds, AP 1 each), a miss from .70 on: mask AP 0.4. Boxes unchanged.
    out = _segm_evaluator(_square(10, 12)).summarize()
    assert out["AP"] == pytest.approx(1.0, abs=1e-12)
    assert out["mask_AP"] == pytest.approx(0.4, abs=1e-12)
    assert out["mask_AP50"] == pytest.approx(1.0, abs=1e-12)
    assert out["mask_AP75"] == pytest.approx(0.0, abs=1e-12)
    assert out["mask_AP/a"] == pytest.approx(0.4, abs=1e-12)


def test_segm_results_are_rle_and_masks_are_checked(tmp_path):
    from pycocotools import mask as mask_utils

    det = _square(5, 20)
    ev = _segm_evaluator(det)
    (result,) = ev.results_json("segm")
    assert result["image_id"] == 3 and result["category_id"] == 1 and result["score"] == 0.9
    assert isinstance(result["segmentation"]["counts"], str)
    np.testing.assert_array_equal(mask_utils.decode(result["segmentation"]), det)
    path = tmp_path / "segm.json"
    ev.write_results(path, "segm")
    assert json.loads(path.read_text()) == [result]
    with pytest.raises(ValueError, match="masks are required"):
        ev.add_ground_truth(4, np.zeros((0, 4)), [], [], 40, 40)
    with pytest.raises(ValueError, match=r"masks must be \[1, 40, 40\]"):
        ev.add_ground_truth(4, [[0, 0, 1, 1]], [0], [True], 40, 40, masks=np.zeros((1, 30, 40)))
    with pytest.raises(ValueError, match="masks are not taken"):
        coco_eval.CocoEvaluator(["a"]).add_detections(
            1, [[0, 0, 1, 1]], [1.0], [0], [True], masks=np.zeros((1, 4, 4)))
    with pytest.raises(ValueError, match="segm"):
        coco_eval.CocoEvaluator(["a"]).results_json("segm")


def _keypoint_evaluator(shift: tuple[float, float]) -> coco_eval.CocoEvaluator:
    """Image 5: a person (class 1) with 16 labelled keypoints (keypoint 3 unlabelled) and a
    shape (class 0, no keypoints); the person's detection has every keypoint moved by
    ``shift`` and keypoint 3 far away, the shape's detection has garbage keypoints."""
    rng = np.random.default_rng(0)
    ev = coco_eval.CocoEvaluator(["shape", "person"], with_keypoints=True, keypoint_class=1)
    gt_kp = np.zeros((2, 17, 3), F32)
    gt_kp[1, :, 0] = rng.uniform(10, 50, 17)
    gt_kp[1, :, 1] = rng.uniform(10, 90, 17)
    gt_kp[1, :, 2] = 2
    gt_kp[1, 3, 2] = 0
    boxes = np.array([[60, 60, 90, 90], [10, 10, 50, 90]], F32)  # person area 40 * 80
    ev.add_ground_truth(5, boxes, [0, 1], [True, True], 100, 100, keypoints=gt_kp)
    det_kp = gt_kp.copy()
    det_kp[1, :, :2] += shift
    det_kp[1, 3, :2] = (99, 0)
    det_kp[0, :, :2] = rng.uniform(0, 100, (17, 2))
    ev.add_detections(5, boxes, [0.9, 0.8], [0, 1], [True, True], keypoints=det_kp)
    return ev


def test_keypoints_perfect_prediction_gives_one_and_shift_the_oks_thresholds_passed():
    out = _keypoint_evaluator((0.0, 0.0)).summarize()
    for key in ("kp_AP", "kp_AP50", "kp_AP75", "kp_AR", "AP"):
        assert out[key] == pytest.approx(1.0, abs=1e-12), key
    # OKS of a (5, 2) px shift on the 16 labelled keypoints, pycocotools' formula with COCO's
    # sigmas and the gt area 3200: exp(-29 / (2 * 3200 * (2 sigma)^2)) averaged = 0.684.
    var = (2 * coco_eval.COCO_KEYPOINT_SIGMAS) ** 2
    labelled = np.arange(17) != 3
    oks = np.mean(np.exp(-29.0 / var / 3200 / 2)[labelled])
    assert oks == pytest.approx(0.6839, abs=1e-4)  # a hit at OKS .50 .. .65: 4 of 10
    out = _keypoint_evaluator((5.0, 2.0)).summarize()
    assert out["kp_AP"] == pytest.approx(0.4, abs=1e-12)
    assert out["kp_AP50"] == pytest.approx(1.0, abs=1e-12)
    assert out["kp_AP75"] == pytest.approx(0.0, abs=1e-12)
    assert out["AP"] == pytest.approx(1.0, abs=1e-12)  # boxes are exact


def test_keypoint_scores_rank_the_keypoint_results_only():
    """Two person detections of one person, the higher box score with keypoints 30 px off:
    keypoint AP 0.5 ranked by box scores (a false positive first), 1.0 ranked by the given
    keypoint scores; box AP 1.0 either way (the box scores are untouched)."""
    rng = np.random.default_rng(1)
    gt_kp = np.zeros((1, 17, 3), F32)
    gt_kp[0, :, 0] = rng.uniform(10, 50, 17)
    gt_kp[0, :, 1] = rng.uniform(10, 90, 17)
    gt_kp[0, :, 2] = 2
    det_kp = np.concatenate([gt_kp, gt_kp])
    det_kp[0, :, 0] += 30.0
    box = [10, 10, 50, 90]
    results = {}
    for name, kp_scores in (("box", None), ("rescored", [0.1, 0.7])):
        ev = coco_eval.CocoEvaluator(["person"], with_keypoints=True, keypoint_class=0)
        ev.add_ground_truth(1, np.array([box], F32), [0], [True], 100, 100, keypoints=gt_kp)
        ev.add_detections(1, np.array([box, box], F32), [0.9, 0.6], [0, 0], [True, True],
                          keypoints=det_kp, keypoint_scores=kp_scores)
        results[name] = ev.summarize()
        if kp_scores is not None:
            assert [r["score"] for r in ev.results_json("keypoints")] == [0.1, 0.7]
            assert [r["score"] for r in ev.results_json("bbox")] == [0.9, 0.6]
    assert results["box"]["kp_AP"] == pytest.approx(0.5, abs=1e-12)
    assert results["rescored"]["kp_AP"] == pytest.approx(1.0, abs=1e-12)
    assert results["box"]["AP"] == results["rescored"]["AP"] == pytest.approx(1.0, abs=1e-12)
    ev = coco_eval.CocoEvaluator(["person"], with_keypoints=True, keypoint_class=0)
    with pytest.raises(ValueError, match="keypoint_scores has 1 rows, expected 2"):
        ev.add_detections(2, np.array([box, box], F32), [0.9, 0.6], [0, 0], [True, True],
                          keypoints=det_kp, keypoint_scores=[0.5])
    with pytest.raises(ValueError, match="keypoint_scores given but with_keypoints=False"):
        coco_eval.CocoEvaluator(["person"]).add_detections(
            2, np.array([box], F32), [0.9], [0], [True], keypoint_scores=[0.5])


def test_keypoint_results_are_person_only_and_keypoints_are_checked():
    ev = _keypoint_evaluator((1.0, 0.0))
    (result,) = ev.results_json("keypoints")  # the shape's detection is left out
    assert result["image_id"] == 5 and result["category_id"] == 2 and result["score"] == 0.8
    assert len(result["keypoints"]) == 51 and result["keypoints"][2::3] == [1.0] * 17
    dataset = ev.ground_truth_dataset()
    assert [a["num_keypoints"] for a in dataset["annotations"]] == [0, 16]
    with pytest.raises(ValueError, match="keypoints are required"):
        ev.add_ground_truth(6, np.zeros((0, 4)), [], [], 40, 40)
    with pytest.raises(ValueError, match=r"keypoints must be \[1, 17, 3\]"):
        ev.add_detections(6, [[0, 0, 1, 1]], [1.0], [1], [True], keypoints=np.zeros((1, 16, 3)))
    with pytest.raises(ValueError, match="keypoints"):
        coco_eval.CocoEvaluator(["a"]).results_json("keypoints")
