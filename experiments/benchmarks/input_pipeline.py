"""Conversion and input-pipeline throughput of a COCO-format folder (issue 9's numbers).

  python experiments/benchmarks/input_pipeline.py [--num_images=48] [--image_size=1344]
      [--batch=2] [--batches=6] [--workdir=/tmp/jaxdet_input_bench]
      [--resize_short=800 --resize_max=1333] [--scale_jitter=0.5,2.0] [--photometric=0.2]
      [--num_workers=2]

Writes a synthetic COCO-format folder (``--num_images`` 640 x 480 JPEG images, quality 90,
textured, each with 7 polygon instances of 3 categories, COCO's mean per image), then times

Wall time and process CPU time (all threads) are both printed: on a shared machine the CPU
time is the steadier measure of the work.

1. the one-time conversion (:func:`jaxdet.data.coco.build`: JPEG read + check, polygons
   decoded with pycocotools, masks zlib-compressed, ArrayRecord written): images/s;
2. the input pipeline of Mask R-CNN at the COCO input size: ``config.data.source="coco"``
   sources (images fitted into ``--image_size`` squares) through the
   detection task's ``make_preprocess`` (mask head on: ``[G, 56, 56]`` box-cropped gt masks)
   and :func:`jaxdet.data.pipeline.train_dataset` (2 reader threads, then ``--num_workers``
   worker processes): batches/s over
   ``--batches`` batches after the first; with ``--resize_short`` / ``--scale_jitter`` /
   ``--photometric`` through the seeded augmentation chain instead of the fitting
   (:class:`jaxdet.data.augment.GeometryTransform`, padded to ``--image_size``);
3. per image, one thread, CPU time over ``--per_image`` images: decoding, fitting to the
   square, the detection task's ``make_preprocess``, and inside it
   :func:`jaxdet.detection.mask_head.crop_gt_masks` against the full products it replaced
   (``Wy @ mask @ Wx.T`` over every row and column of the 1344 x 1344 masks; same values).

Nothing here touches the network; the folder and TFDS data live under ``--workdir``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

import numpy as np  # noqa: E402
import PIL.Image  # noqa: E402

from experiments.benchmarks.timing import machine  # noqa: E402


def write_folder(root: str, num_images: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    os.makedirs(os.path.join(root, "train2017"), exist_ok=True)
    images, anns = [], []
    h, w = 480, 640
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(num_images):
        pixels = (np.stack([np.sin(xx / (7 + i % 5)), np.cos(yy / 9.0), np.sin((xx + yy) / 13)],
                           -1) * 60 + 128 + rng.normal(0, 20, (h, w, 3))).clip(0, 255)
        name = f"{i:012d}.jpg"
        PIL.Image.fromarray(pixels.astype(np.uint8)).save(
            os.path.join(root, "train2017", name), quality=90)
        images.append({"id": i + 1, "file_name": name, "height": h, "width": w})
        for k in range(7):
            cx, cy = rng.uniform(60, w - 60), rng.uniform(60, h - 60)
            r = rng.uniform(10, 55, 8)
            angles = np.sort(rng.uniform(0, 2 * np.pi, 8))
            poly = np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], 1)
            x1, y1 = poly.min(0)
            x2, y2 = poly.max(0)
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1 + k % 3,
                         "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                         "area": float((x2 - x1) * (y2 - y1)), "iscrowd": 0,
                         "segmentation": [poly.reshape(-1).round(2).tolist()]})
    cats = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"}]
    with open(os.path.join(root, "annotations", "instances_train2017.json"), "w") as f:
        json.dump({"images": images, "annotations": anns, "categories": cats}, f)


def full_product_crops(masks: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """``crop_gt_masks`` before it restricted the products to each box (the reference)."""
    from jaxdet.detection import mask_head

    out = np.zeros((len(boxes), size, size), np.uint8)
    h, w = masks.shape[1:3]
    for k, (x1, y1, x2, y2) in enumerate(np.asarray(boxes, np.float64)):
        wy = mask_head._align_weights(y1, y2 - y1, h, size, 2)
        wx = mask_head._align_weights(x1, x2 - x1, w, size, 2)
        out[k] = np.clip(np.rint(wy @ masks[k].astype(np.float64) @ wx.T * 255), 0, 255)
    return out


def cpu_ms(fn, items) -> float:
    """Mean process CPU milliseconds of ``fn(item)``."""
    start = time.process_time()
    for item in items:
        fn(item)
    return 1000 * (time.process_time() - start) / max(len(items), 1)


def per_image(source, raw, preprocess, size: int, n: int) -> None:
    from jaxdet.data import local_tfds
    from jaxdet.detection import mask_head

    idx = list(range(min(n, len(raw))))
    decode = cpu_ms(lambda i: raw[i], idx)
    fit = cpu_ms(lambda i: local_tfds.fit_to_square(raw[i], size), idx) - decode
    examples = [source[i] for i in idx]
    pre = cpu_ms(preprocess, examples)
    crops = [(np.asarray(e["objects"]["mask"])[..., 0], np.asarray(e["objects"]["bbox"]))
             for e in examples]
    new = cpu_ms(lambda mb: mask_head.crop_gt_masks(*mb, 56), crops)
    old = cpu_ms(lambda mb: full_product_crops(*mb, 56), crops)
    same = all(np.array_equal(mask_head.crop_gt_masks(m, b, 56), full_product_crops(m, b, 56))
               for m, b in crops)
    print(f"per image ({len(idx)} images, one thread, CPU ms): decode {decode:.1f}, fit to "
          f"{size}x{size} {fit:.1f}, make_preprocess {pre:.1f} of which crop_gt_masks "
          f"{new:.1f} (full products {old:.1f}: {old / max(new, 1e-9):.0f}x; same uint8 "
          f"crops: {same})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--num_images", type=int, default=48)
    parser.add_argument("--image_size", type=int, default=1344)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--per_image", type=int, default=6)
    parser.add_argument("--resize_short", type=int, default=0)
    parser.add_argument("--resize_max", type=int, default=0)
    parser.add_argument("--scale_jitter", default="", help="min,max")
    parser.add_argument("--photometric", type=float, default=0.0)
    parser.add_argument("--num_workers", type=int, default=2,
                        help="also time the pipeline with this many worker processes (0: not)")
    parser.add_argument("--workdir", default="/tmp/jaxdet_input_bench")
    args = parser.parse_args()

    import ml_collections

    from jaxdet.data import coco, pipeline
    from jaxdet.tasks import detection

    shutil.rmtree(args.workdir, ignore_errors=True)
    folder = os.path.join(args.workdir, "coco")
    write_folder(folder, args.num_images)
    start, cpu = time.perf_counter(), time.process_time()
    coco.build(folder, os.path.join(args.workdir, "tfds"), splits={"train": "train2017"})
    convert_s, convert_cpu = time.perf_counter() - start, time.process_time() - cpu
    print(f"conversion: {args.num_images} images in {convert_s:.2f} s wall = "
          f"{args.num_images / convert_s:.1f} images/s ({convert_cpu:.2f} s CPU = "
          f"{args.num_images / convert_cpu:.1f} images per CPU-second)")

    config = ml_collections.ConfigDict({
        "data": {"source": "coco", "path": folder, "data_dir": os.path.join(args.workdir, "tfds"),
                 "image_size": args.image_size, "max_instances": 100, "mask_crop_size": 56,
                 "resize_short": args.resize_short, "resize_max": args.resize_max,
                 "scale_jitter": tuple(float(v) for v in args.scale_jitter.split(",") if v),
                 "photometric": args.photometric},
        "model": {"mask": {}, "detector": "faster_rcnn"}})
    source = detection.datasets(config)["train"]
    for workers in sorted({0, args.num_workers}):
        ds = pipeline.train_dataset(source, detection.make_preprocess(config), args.batch,
                                    seed=0, process_index=0, process_count=1,
                                    num_workers=workers)
        it = iter(ds)
        batch = next(it)  # worker start-up and the first batch are left out
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(args.batches):
            batch = next(it)
        pipe_s, pipe_cpu = time.perf_counter() - start, time.process_time() - cpu
        getattr(it, "close", lambda: None)()
        how = f"{workers} worker processes" if workers else "2 reader threads"
        print(f"input pipeline ({how}): {args.batches} batches of {args.batch} at "
              f"{args.image_size}x{args.image_size} (image {batch['image'].shape}, gt_masks "
              f"{batch['gt_masks'].shape}) in {pipe_s:.2f} s wall = "
              f"{args.batches / pipe_s:.2f} batches/s ({pipe_cpu:.2f} s CPU of this process)")
    raw = coco.build(folder, os.path.join(args.workdir, "tfds"),
                     splits={"train": "train2017"}).as_data_source()["train"]
    per_image(source, raw, detection.make_preprocess(config), args.image_size, args.per_image)
    print(f"machine: {machine()}, "
          f"load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
