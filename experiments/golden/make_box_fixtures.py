"""Write torchvision golden outputs for the box ops into tests/ops/fixtures/*.npz.

Run once (needs the `ref` extra, torch + torchvision); the .npz files are committed and the
tests read them with NumPy only:

    .venv/bin/python experiments/golden/make_box_fixtures.py

Covers box_iou / clip / box_convert, BoxCoder encode/decode (RPN and RoI-head weights),
Matcher (RPN 0.7/0.3 with low-quality matches, RoI heads 0.5/0.5), AnchorGenerator, nms and
batched_nms. Inputs include boxes partly or fully outside the image, degenerate boxes and
coordinates on .5 boundaries; scores have no ties. Deterministic (fixed seeds).
"""

import pathlib

import numpy as np
import torch
import torchvision
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList

OUT = pathlib.Path(__file__).resolve().parents[2] / "tests" / "ops" / "fixtures"
H, W = 60, 80  # the "image" the boxes live in


def random_boxes(rng: np.random.Generator, n: int, half_grid: bool = False) -> np.ndarray:
    """[n, 4] xyxy: mostly normal boxes, some outside the image, some degenerate."""
    c = rng.uniform(-0.2, 1.2, (n, 2)) * (W, H)
    wh = rng.uniform(0.5, 30.0, (n, 2))
    b = np.concatenate([c - wh / 2, c + wh / 2], axis=1)
    if half_grid:
        b = np.round(b * 2) / 2
    k = max(1, n // 10)
    b[:k, 2] = b[:k, 0]  # zero width
    b[k : 2 * k, 3] = b[k : 2 * k, 1]  # zero height
    b[2 * k : 3 * k] = b[2 * k : 3 * k] + (W + 40, 0, W + 40, 0)  # fully outside
    return rng.permutation(b).astype(np.float32)


def clustered_boxes(rng: np.random.Generator, n: int, clusters: int) -> np.ndarray:
    """[n, 4] xyxy jittered around `clusters` objects, like detector outputs."""
    c = rng.uniform(0, 1, (clusters, 2)) * (4 * W, 4 * H)
    wh = rng.uniform(8, 80, (clusters, 2))
    a = rng.integers(0, clusters, n)
    cc = c[a] + rng.normal(0, 0.08, (n, 2)) * wh[a]
    ww = wh[a] * np.exp(rng.normal(0, 0.08, (n, 2)))
    return np.concatenate([cc - ww / 2, cc + ww / 2], axis=1).astype(np.float32)


def distinct_scores(rng: np.random.Generator, n: int) -> np.ndarray:
    return ((rng.permutation(n) + rng.uniform(0.1, 0.9, n)) / n).astype(np.float32)


def t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x))


def boxes_fixture(rng: np.random.Generator) -> dict[str, np.ndarray]:
    b1 = np.concatenate([random_boxes(rng, 24), random_boxes(rng, 16, half_grid=True)])
    b2 = np.concatenate([random_boxes(rng, 20), random_boxes(rng, 10, half_grid=True), b1[:3]])
    b2 = b2[np.all(np.isfinite(b2), axis=1)]
    iou = torchvision.ops.box_iou(t(b1), t(b2)).numpy()
    return {
        "boxes1": b1,
        "boxes2": b2,
        "iou": iou,
        "area1": torchvision.ops.box_area(t(b1)).numpy(),
        "clipped1": torchvision.ops.clip_boxes_to_image(t(b1), (H, W)).numpy(),
        "cxcywh1": torchvision.ops.box_convert(t(b1), "xyxy", "cxcywh").numpy(),
        "image_hw": np.array([H, W], np.int32),
    }


def coder_fixture(rng: np.random.Generator) -> dict[str, np.ndarray]:
    out = {}
    proposals = random_boxes(rng, 40, half_grid=True)
    proposals[:, 2:] = proposals[:, :2] + np.maximum(proposals[:, 2:] - proposals[:, :2], 1.0)
    gt = proposals + rng.normal(0, 3.0, proposals.shape).astype(np.float32)
    gt[:, 2:] = gt[:, :2] + np.maximum(gt[:, 2:] - gt[:, :2], 0.5)
    deltas = rng.normal(0, 1.0, (40, 4)).astype(np.float32)
    deltas[:5, 2:] = 8.0  # beyond log(1000/16) even with weights 5: clamped
    deltas[5:10, 2:] = -6.0
    for name, weights in [("rpn", (1.0, 1.0, 1.0, 1.0)), ("roi", (10.0, 10.0, 5.0, 5.0))]:
        coder = det_utils.BoxCoder(weights)
        out[f"encoded_{name}"] = coder.encode_single(t(gt), t(proposals)).numpy()
        out[f"decoded_{name}"] = coder.decode_single(t(deltas * weights[0]), t(proposals)).numpy()
        out[f"deltas_{name}"] = deltas * weights[0]
    out["proposals"] = proposals
    out["gt"] = gt
    return out


def matcher_fixture(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """IoU matrices where every gt has a positive best IoU (where both matchers agree)."""
    out = {}
    for case in range(3):
        anchors = np.round(clustered_boxes(rng, 300, 40))  # integer coords
        anchors[250:] = anchors[:50]  # duplicated predictions: exact IoU ties
        gt = anchors[rng.choice(250, 8, replace=False)] + rng.integers(-4, 5, (8, 4))
        gt[:, 2:] = np.maximum(gt[:, 2:], gt[:, :2] + 2)
        gt[4:, 2:] += (gt[4:, 2:] - gt[4:, :2]) * 0.8  # poorly covered gt: low-quality matches
        gt[0] = gt[1]  # duplicate gt: ties between gt rows
        iou = torchvision.ops.box_iou(t(gt.astype(np.float32)), t(anchors)).numpy()
        assert (iou.max(axis=1) > 0).all()
        out[f"iou_{case}"] = iou
        for name, (hi, lo, lq) in {"rpn": (0.7, 0.3, True), "roi": (0.5, 0.5, False)}.items():
            m = det_utils.Matcher(hi, lo, allow_low_quality_matches=lq)
            out[f"matches_{name}_{case}"] = m(t(iou)).numpy().astype(np.int32)
    return out


def anchors_fixture() -> dict[str, np.ndarray]:
    out = {}
    image = (64, 96)
    configs = {
        "fpn": (((32,), (64,), (128,), (256,), (512,)), ((0.5, 1.0, 2.0),) * 5, (4, 8, 16, 32, 64)),
        "multi": (((16, 24.5, 40),), ((0.25, 0.5, 1.0, 1.5, 3.0),), (8,)),
        "odd": (((20, 50), (100,)), ((0.7, 1.3), (1.0, 2.0)), (6, 12)),
    }
    for name, (sizes, ratios, strides) in configs.items():
        gen = AnchorGenerator(sizes, ratios)
        fmaps = [torch.zeros(1, 1, image[0] // s, image[1] // s) for s in strides]
        images = ImageList(torch.zeros(1, 3, *image), [image])
        out[f"anchors_{name}"] = gen(images, fmaps)[0].numpy()
        out[f"grid_{name}"] = np.array([f.shape[-2:] for f in fmaps], np.int32)
    out["image_hw"] = np.array(image, np.int32)
    return out


def nms_fixture(rng: np.random.Generator) -> dict[str, np.ndarray]:
    out = {}
    cases = {
        "random_1500": (random_boxes(rng, 1500), 0.5),
        "half_500": (random_boxes(rng, 500, half_grid=True), 0.3),
        "clustered_2000": (clustered_boxes(rng, 2000, 100), 0.7),
    }
    for name, (boxes, thr) in cases.items():
        scores = distinct_scores(rng, len(boxes))
        keep = torchvision.ops.nms(t(boxes), t(scores), thr).numpy()
        out.update({f"{name}_boxes": boxes, f"{name}_scores": scores, f"{name}_keep": keep})
        out[f"{name}_thr"] = np.float64(thr)  # torchvision compares in double
    boxes = clustered_boxes(rng, 1000, 50)
    scores = distinct_scores(rng, 1000)
    classes = rng.integers(0, 4, 1000).astype(np.int32)
    keep = torchvision.ops.batched_nms(t(boxes), t(scores), t(classes).long(), 0.5).numpy()
    out.update(
        batched_boxes=boxes, batched_scores=scores, batched_classes=classes, batched_keep=keep
    )
    out["batched_thr"] = np.float64(0.5)
    return {k: (v.astype(np.int32) if v.dtype == np.int64 else v) for k, v in out.items()}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20261104)
    fixtures = {
        "boxes": boxes_fixture(rng),
        "box_coder": coder_fixture(rng),
        "matcher": matcher_fixture(rng),
        "anchors": anchors_fixture(),
        "nms": nms_fixture(rng),
    }
    for name, arrays in fixtures.items():
        path = OUT / f"{name}.npz"
        np.savez_compressed(path, **arrays)
        print(f"{path.relative_to(OUT.parents[2])}: {path.stat().st_size / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
