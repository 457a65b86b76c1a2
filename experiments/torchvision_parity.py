"""Parity figures of jaxdet against torchvision's Faster / Mask / Keypoint R-CNN R50-FPN, and
conversion time.

  python experiments/torchvision_parity.py [--mask | --keypoint [--detections=N]] [--out=FILE.json]

Needs the '.[ref]' extra (torch, torchvision). Runs the set-up of ``tests/test_convert.py``
(``frcnn_parity_outputs``: random torchvision weights made informative, the same normalised
padded 2-image batch in both; see that module's docstring) and prints, per compared quantity,
the largest absolute difference, the largest difference relative to the reference's largest
magnitude, and what the tests require. Then it saves a random ``fasterrcnn_resnet50_fpn``
state_dict to a temporary ``.pth`` and times ``jaxdet.convert.convert_file`` on it (load with
torch, the model's shapes, the mapping) against ``configs/faster_rcnn_coco.py``.

``--keypoint``: ``krcnn_parity_outputs`` instead (``keypointrcnn_resnet50_fpn`` given a Mask
R-CNN branch, ``--detections`` per image, box NMS 0.7, keypoints decoded exactly), with the
keypoints also decoded from jaxdet's heatmaps with the COCO config's search window and with 64
and 128 px, to show what that approximation changes on random (unpeaked) heatmaps of RoIs of
120-250 px; conversion timed on a plain
``keypointrcnn_resnet50_fpn`` state_dict against ``configs/keypoint_rcnn_coco.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _REPO)

from tests import conftest  # noqa: E402,F401,I001 - sets up JAX (cache, devices) as the tests do
from tests import helpers  # noqa: E402
from tests import test_convert as tc  # noqa: E402


def _row(name: str, got, ref, bound: str) -> dict:
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    diff = float(np.abs(got - ref).max()) if got.size else 0.0
    scale = float(np.abs(ref).max()) if ref.size else 1.0
    return {"quantity": name, "max_abs": diff, "max_rel": diff / max(scale, 1e-30),
            "ref_max_abs": scale, "bound": bound}


def parity_rows(mask: bool = False) -> list[dict]:
    out = tc.frcnn_parity_outputs(mask=mask)
    rows = [_row(f"feature {n}", g, r, "rel < 1e-4") for n, g, r in out["features"]]
    rows += [_row(f"RPN objectness level {i + 2}", g, r, "rel < 1e-4")
             for i, (g, r) in enumerate(out["objectness"])]
    rows += [_row(f"RPN deltas level {i + 2}", g, r, "rel < 1e-4")
             for i, (g, r) in enumerate(out["deltas"])]
    for i, (g, r) in enumerate(out["proposals"]):
        idx = tc._match(g, r)
        same_set = sorted(idx) == list(range(len(r))) and len(g) == len(r)
        in_order = bool(np.array_equal(idx, np.arange(len(r))))
        rows.append(_row(f"image {i} proposals ({len(g)} vs {len(r)}, same set {same_set}, "
                         f"same order {in_order}) [px]", g, r[idx], "abs < 1e-3 px"))
    for i, (g, r) in enumerate(out["detections"]):
        idx = tc._match(g["boxes"], r["boxes"])
        labels = bool(np.array_equal(g["classes"] + 1, r["labels"][idx]))
        rows.append(_row(f"image {i} detection boxes ({len(g['boxes'])} vs {len(r['boxes'])}, "
                         f"labels equal {labels}) [px]", g["boxes"], r["boxes"][idx],
                         "abs < 1e-2 px"))
        rows.append(_row(f"image {i} detection scores", g["scores"], r["scores"][idx],
                         "abs < 1e-4"))
        if mask:
            probs, probs_ref, pasted, pasted_ref = out["masks"][i]
            rows.append(_row(f"image {i} mask probabilities 28x28", probs, probs_ref[idx],
                             "(none)"))
            rows.append(_pasted_iou_row(i, pasted, pasted_ref[idx]))
    return rows


def _pasted_iou_row(i: int, pasted, pasted_ref) -> dict:
    inter = (pasted & pasted_ref).sum((1, 2))
    union = (pasted | pasted_ref).sum((1, 2))
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    return {"quantity": f"image {i} pasted binary masks: 1 - min IoU "
            f"(min IoU {iou.min():.4f}, {int((iou < 0.99).sum())} below 0.99, "
            f"mean area {union.mean():.0f} px)",
            "max_abs": float(1 - iou.min()), "max_rel": float("nan"),
            "ref_max_abs": float("nan"), "bound": "IoU >= 0.99"}


def keypoint_rows(detections: int) -> list[dict]:
    import jax.numpy as jnp

    from jaxdet.detection import keypoint_head

    out = tc.krcnn_parity_outputs(detections=detections)
    window = helpers.load_config("keypoint_rcnn_coco").model.keypoint.decode_window
    rows = []
    for i, ((g, r), (kps, kps_ref, kp_scores_ref), (hm, hm_ref), masks) in enumerate(zip(
            out["detections"], out["keypoints"], out["heatmaps"], out["masks"], strict=True)):
        idx = tc._match(g["boxes"], r["boxes"])
        labels = bool(np.array_equal(g["classes"] + 1, r["labels"][idx]))
        sides = np.maximum(r["boxes"][:, 2] - r["boxes"][:, 0], r["boxes"][:, 3] - r["boxes"][:, 1])
        rows.append(_row(f"image {i} detection boxes ({len(g['boxes'])} vs {len(r['boxes'])}, "
                         f"labels equal {labels}, RoI sides {sides.min():.0f}-{sides.max():.0f}"
                         " px) [px]", g["boxes"], r["boxes"][idx], "abs < 1e-2 px"))
        rows.append(_row(f"image {i} detection scores", g["scores"], r["scores"][idx],
                         "abs < 1e-4"))
        rows.append(_row(f"image {i} heatmap logits [D, 56, 56, 17]", hm, hm_ref[idx],
                         "rel < 1e-4"))
        rows.append(_row(f"image {i} keypoints x, y (exact decode) [px]", kps[..., :2],
                         kps_ref[idx, :, :2], "abs < 0.5 px"))
        rows.append(_row(f"image {i} keypoint scores (logit at the keypoint)", kps[..., 2],
                         kp_scores_ref[idx], "rel < 1e-4"))
        for w in sorted({window, 64, 128}):
            approx = np.asarray(keypoint_head.decode_keypoints(
                jnp.asarray(hm), jnp.asarray(g["boxes"]), window=w))
            err = np.abs(approx[..., :2] - kps_ref[idx, :, :2]).max(-1)
            rows.append(_row(f"image {i} keypoints x, y, decode window {w} px "
                             f"({int((err >= 0.5).sum())} of {err.size} off by >= 0.5 px) [px]",
                             approx[..., :2], kps_ref[idx, :, :2],
                             "(the config's)" if w == window else ""))
        probs, probs_ref, pasted, pasted_ref = masks
        rows.append(_row(f"image {i} mask probabilities 28x28", probs, probs_ref[idx],
                         "abs < 1e-4"))
        rows.append(_pasted_iou_row(i, pasted, pasted_ref[idx]))
    return rows


def conversion_seconds(keypoint: bool = False) -> dict:
    import torch
    import torchvision

    from jaxdet import convert
    from jaxdet.models import weights
    torch.manual_seed(0)
    build = (torchvision.models.detection.keypointrcnn_resnet50_fpn if keypoint
             else torchvision.models.detection.fasterrcnn_resnet50_fpn)
    model = build(weights=None, weights_backbone=None)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.pth")
        torch.save(model.state_dict(), path)
        config = helpers.load_config("keypoint_rcnn_coco" if keypoint else "faster_rcnn_coco")
        t0 = time.perf_counter()
        variables, report, info = convert.convert_file(path, config)
        t1 = time.perf_counter()
        weights.save_variables(os.path.join(tmp, "out"), variables, info)
        t2 = time.perf_counter()
        size = os.path.getsize(path)
    return {**info["seconds"], "convert_file": round(t1 - t0, 3), "write": round(t2 - t1, 3),
            "arrays": len(report.converted), "bytes": int(size)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="")
    parser.add_argument("--mask", action="store_true",
                        help="maskrcnn_resnet50_fpn instead, with the masks compared too")
    parser.add_argument("--keypoint", action="store_true",
                        help="keypointrcnn_resnet50_fpn with a mask branch instead: detections, "
                        "heatmaps, keypoints, masks")
    parser.add_argument("--detections", type=int, default=16,
                        help="with --keypoint: detections per image (16 covers all the random "
                        "model's; the test keeps 8, torchvision's default is 100)")
    args = parser.parse_args()
    rows = keypoint_rows(args.detections) if args.keypoint else parity_rows(args.mask)
    width = max(len(r["quantity"]) for r in rows)
    print(f"{'quantity':<{width}}  {'max abs':>10}  {'max rel':>10}  {'ref max':>9}  bound")
    for r in rows:
        print(f"{r['quantity']:<{width}}  {r['max_abs']:10.3e}  {r['max_rel']:10.3e}  "
              f"{r['ref_max_abs']:9.3g}  {r['bound']}")
    seconds = conversion_seconds(args.keypoint)
    name = "keypointrcnn" if args.keypoint else "fasterrcnn"
    print(f"conversion of a {name}_resnet50_fpn state_dict:", json.dumps(seconds))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump({"parity": rows, "conversion_seconds": seconds}, f, indent=1)


if __name__ == "__main__":
    main()
