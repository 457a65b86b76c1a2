"""Write torchvision goldens for RoIAlign, RoIPool, mask pasting and keypoint heatmaps.

Run once (needs the `ref` extra: torch + torchvision) and commit the output:

    .venv/bin/python experiments/golden/make_roi_fixtures.py

Writes tests/ops/fixtures/{roi_align,multiscale_roi_align,roi_pool,masks,keypoints}.npz (all
float32 / int, layout channels-last like jaxdet; small maps and few channels). The tests
read them with NumPy only.
"""

import pathlib
from collections import OrderedDict

import numpy as np
import torch
import torchvision
from torchvision.models.detection.roi_heads import (
    expand_boxes,
    expand_masks,
    heatmaps_to_keypoints,
    keypoints_to_heatmap,
    paste_masks_in_image,
)
from torchvision.ops import MultiScaleRoIAlign, roi_align, roi_pool

OUT = pathlib.Path(__file__).resolve().parents[2] / "tests" / "ops" / "fixtures"


def special_boxes(h: int, w: int) -> np.ndarray:
    """Hand-picked boxes in map pixels: outside, degenerate, on .5 and integer boundaries."""
    return np.array(
        [
            [0, 0, w, h],  # whole map
            [-w, -h, 2 * w, 2 * h],  # larger than the map
            [-5, -5, -2, -2],  # fully outside (before)
            [w + 1, h + 1, w + 4, h + 3],  # fully outside (after)
            [w - 1.5, h - 1.5, w + 2.5, h + 2.5],  # partly outside
            [-1.5, -1.5, 2.5, 2.5],
            [2.5, 3.5, 2.5, 7.5],  # zero width
            [3, 3, 3, 3],  # a point
            [5.5, 2.5, 1.5, 6.5],  # flipped x
            [0.5, 0.5, 4.5, 4.5],
            [1.5, 2.5, 6.5, 3.5],
            [-1, -1, w + 1, h + 1],  # samples at exactly -1 .. size + 1
            [0.25, 0.75, 3.25, 5.75],
            [2, 1, 9, 8],
        ],
        np.float32,
    )


def random_boxes(rng, n, lo, hi, max_wh) -> np.ndarray:
    xy = rng.uniform(lo, hi, (n, 2))
    wh = rng.uniform(-1, max_wh, (n, 2))
    return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)


def nchw(x: np.ndarray) -> torch.Tensor:
    return torch.tensor(x).permute(2, 0, 1)[None].contiguous()


def make_roi_align(rng) -> dict:
    h, w, c = 10, 12, 2
    feats = rng.standard_normal((h, w, c)).astype(np.float32)
    out = {"features": feats}
    for scale, tag, ratios in ((1.0, "s1", (1, 2, 3)), (0.5, "s05", (2,))):
        boxes = np.concatenate(
            [special_boxes(h, w) / scale, random_boxes(rng, 26, -6 / scale, 14 / scale, 12 / scale)]
        ).astype(np.float32)
        out[f"boxes_{tag}"] = boxes
        g = rng.standard_normal((len(boxes), c, 5, 4)).astype(np.float32)  # one cotangent
        out[f"gout_{tag}"] = np.transpose(g, (0, 2, 3, 1))
        for aligned in (True, False):
            for ratio in ratios:
                ft = nchw(feats).requires_grad_()
                y = roi_align(ft, [torch.tensor(boxes)], (5, 4), scale, ratio, aligned)
                y.backward(torch.tensor(g))
                key = f"{tag}_a{int(aligned)}_r{ratio}"
                out[f"out_{key}"] = y.detach().permute(0, 2, 3, 1).numpy()
                out[f"grad_{key}"] = ft.grad[0].permute(1, 2, 0).numpy()
    return out


def make_multiscale(rng) -> dict:
    img_h, img_w, c = 64, 96, 2
    levels = [2, 3, 4, 5]
    feats = [rng.standard_normal((img_h >> lv, img_w >> lv, c)).astype(np.float32) for lv in levels]
    # Sizes spread over all levels for canonical 224 / level 4: sqrt(area) from ~8 to ~900.
    n = 40
    side = np.exp(rng.uniform(np.log(8), np.log(900), n))
    aspect = np.exp(rng.uniform(-0.7, 0.7, n))
    bw, bh = side * aspect, side / aspect
    x1 = rng.uniform(-20, img_w, n)
    y1 = rng.uniform(-20, img_h, n)
    boxes = np.stack([x1, y1, x1 + bw, y1 + bh], 1).astype(np.float32)
    # Exact level boundaries: sqrt(area) = 112, 224, 448 (levels 3/4, 4/5, 5 clamp).
    boxes[:3] = [[0, 0, 112, 112], [4, 4, 228, 228], [0, 0, 448, 448]]
    fdict = OrderedDict((str(i), nchw(f).requires_grad_()) for i, f in enumerate(feats))
    pooler = MultiScaleRoIAlign(list(fdict.keys()), output_size=7, sampling_ratio=2)
    y = pooler(fdict, [torch.tensor(boxes)], [(img_h, img_w)])
    g = rng.standard_normal(y.shape).astype(np.float32)
    y.backward(torch.tensor(g))
    out = {f"features_{i}": f for i, f in enumerate(feats)}
    out["boxes"] = boxes
    out["out"] = y.detach().permute(0, 2, 3, 1).numpy()
    out["gout"] = np.transpose(g, (0, 2, 3, 1))
    for i, t in enumerate(fdict.values()):
        out[f"grad_{i}"] = t.grad[0].permute(1, 2, 0).numpy()
    return out


def make_roi_pool(rng) -> dict:
    h, w, c = 10, 12, 2
    feats = rng.standard_normal((h, w, c)).astype(np.float32)
    feats[2:6, 3:7, 0] = 0.75  # ties: the gradient must go to the first maximum
    feats[7:, :, 1] = 0.0
    out = {"features": feats}
    for scale, tag in ((1.0, "s1"), (0.5, "s05"), (0.25, "s025")):
        boxes = np.concatenate(
            [special_boxes(h, w) / scale, random_boxes(rng, 26, -6 / scale, 14 / scale, 12 / scale)]
        ).astype(np.float32)
        # Coordinates whose scaled value is exactly k + 0.5 (C round vs round-half-even).
        boxes[-4:] = (
            np.array(
                [
                    [0.5, 1.5, 2.5, 3.5],
                    [2.5, 2.5, 4.5, 6.5],
                    [-0.5, -1.5, 8.5, 9.5],
                    [1.5, 0.5, 1.5, 0.5],
                ]
            )
            / scale
        )
        ft = nchw(feats).requires_grad_()
        y = roi_pool(ft, [torch.tensor(boxes)], (5, 4), scale)
        g = rng.standard_normal(y.shape).astype(np.float32)
        y.backward(torch.tensor(g))
        out[f"boxes_{tag}"] = boxes
        out[f"out_{tag}"] = y.detach().permute(0, 2, 3, 1).numpy()
        out[f"gout_{tag}"] = np.transpose(g, (0, 2, 3, 1))
        out[f"grad_{tag}"] = ft.grad[0].permute(1, 2, 0).numpy()
    return out


def make_masks(rng) -> dict:
    img_h, img_w, m = 23, 31, 8
    n = 24
    masks = rng.random((n, m, m)).astype(np.float32)
    xy = rng.uniform(-8, 28, (n, 2))
    wh = rng.uniform(-2, 20, (n, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    boxes[:4] = [[2.5, 3.5, 10.5, 9.5], [-4, -4, 40, 30], [5, 5, 5.2, 5.2], [0, 0, img_w, img_h]]
    # torchvision's per-box paste slices with negative ends when the expanded integer box
    # lies wholly past an image edge, and then fails or wraps around; keep boxes it handles
    # (the tests check those others against our semantics: nothing pasted).
    _, scale = expand_masks(torch.tensor(masks)[:, None], padding=1)
    ib = expand_boxes(torch.tensor(boxes), scale).to(torch.int64).numpy()
    keep = (ib[:, 0] < img_w) & (ib[:, 1] < img_h) & (ib[:, 2] >= 0) & (ib[:, 3] >= 0)
    masks, boxes = masks[keep], boxes[keep]
    probs = paste_masks_in_image(torch.tensor(masks)[:, None], torch.tensor(boxes), (img_h, img_w))
    # Mask targets: detectron2's BitMasks.crop_and_resize with a static sampling ratio of 2.
    gt = rng.random((3, img_h, img_w)) > 0.5
    rois = random_boxes(rng, 10, -4, 24, 16)
    rois[0] = [-2.5, -2.5, img_w + 2.5, img_h + 2.5]
    index = rng.integers(0, 3, 10).astype(np.int32)
    soft = roi_align(
        torch.tensor(gt[index], dtype=torch.float32)[:, None],
        torch.cat([torch.arange(10, dtype=torch.float32)[:, None], torch.tensor(rois)], 1),
        (6, 6),
        1.0,
        2,
        True,
    )[:, 0]
    return {
        "masks": masks,
        "boxes": boxes,
        "height": np.int32(img_h),
        "width": np.int32(img_w),
        "probs": probs[:, 0].numpy(),
        "gt_masks": gt,
        "rois": rois,
        "mask_index": index,
        "targets_soft": soft.numpy(),
    }


def make_keypoints(rng) -> dict:
    r, k, s = 12, 4, 14
    xy = rng.uniform(0, 60, (r, 2))
    wh = rng.uniform(0.5, 30, (r, 2))  # <= 30 px: inside the decoder's exact window
    rois = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    rois[0] = [10, 10, 10.4, 20.2]  # width < 1: clamped to 1 by the decoder
    kp = np.concatenate([rng.uniform(-5, 95, (r, k, 2)), rng.integers(0, 3, (r, k, 1))], -1).astype(
        np.float32
    )
    kp[:4, 0, 0] = rois[:4, 2]  # on the right edge: cell S - 1
    kp[4:8, 1, 1] = rois[4:8, 3]  # on the bottom edge
    kp[8:, 2, :2] = rois[8:, :2]  # on the top-left corner: cell 0
    kp[8:, 2, 2] = 2
    targets, valid = keypoints_to_heatmap(torch.tensor(kp), torch.tensor(rois), s)
    maps = rng.standard_normal((r, k, s, s)).astype(np.float32)
    xy_pred, scores = heatmaps_to_keypoints(torch.tensor(maps), torch.tensor(rois))
    # A large RoI with peaked heatmaps (the approximation's documented regime).
    big = np.array([[5, 8, 205, 158], [0, 0, 120, 300]], np.float32)
    yy, xx = np.mgrid[0:s, 0:s]
    centres = rng.uniform(1, s - 1, (2, k, 2))
    peak = np.exp(
        -((yy - centres[..., 0, None, None]) ** 2 + (xx - centres[..., 1, None, None]) ** 2) / 3.0
    )
    peak = (4 * peak + 0.05 * rng.standard_normal(peak.shape)).astype(np.float32)
    big_pred, big_scores = heatmaps_to_keypoints(torch.tensor(peak), torch.tensor(big))
    return {
        "rois": rois,
        "keypoints": kp,
        "heatmap_size": np.int32(s),
        "targets": targets.numpy().astype(np.int32),
        "valid": valid.numpy().astype(bool),
        "maps": maps,
        "decoded_xy": xy_pred[..., :2].numpy(),
        "decoded_scores": scores.numpy(),
        "big_rois": big,
        "big_maps": peak,
        "big_decoded_xy": big_pred[..., :2].numpy(),
        "big_decoded_scores": big_scores.numpy(),
    }


def main() -> None:
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    makers = {
        "roi_align": make_roi_align,
        "multiscale_roi_align": make_multiscale,
        "roi_pool": make_roi_pool,
        "masks": make_masks,
        "keypoints": make_keypoints,
    }
    for i, (name, make) in enumerate(makers.items()):
        arrays = make(np.random.default_rng(1000 + i))
        path = OUT / f"{name}.npz"
        np.savez_compressed(path, **arrays)
        print(f"{path.name}: {path.stat().st_size / 1024:.1f} KB")
    print("torch", torch.__version__, "torchvision", torchvision.__version__)


if __name__ == "__main__":
    main()
