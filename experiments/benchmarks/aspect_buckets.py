"""Aspect-ratio buckets vs one square pad for COCO-shaped images: padding and train images/s.

  python experiments/benchmarks/aspect_buckets.py [--images=20000 --scale=0.25 --batch=2
      --rounds=4 --global_batch=16]

Part 1 (arithmetic, no images): sizes drawn from a COCO-like mix of shapes (:data:`SHAPES`, an
assumption: no COCO folder on this machine), resized as torchvision's transform (shorter side
800, longer at most 1,333) and fitted into one 1344 x 1344 pad, or into the nearest of
``(800, 1344), (1344, 800), (1344, 1344)`` (:func:`jaxdet.data.buckets.nearest_size`): mean
padding fraction, padded pixels per image and the examples an epoch leaves out
(:class:`jaxdet.data.buckets.BucketedOrder`, ``--global_batch``).
Part 2 (this machine): ``configs/faster_rcnn_coco.py:small``'s train step on random batches at
the square and at the landscape bucket, both scaled by ``--scale``, interleaved in one process;
the bucketed images/s weighs each bucket's step by its share of the batches.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from jaxdet.data import buckets  # noqa: E402

#: (height, width, share) of the drawn images (COCO-like: mostly 640-px-wide landscapes).
SHAPES = ((480, 640, 0.45), (427, 640, 0.25), (640, 480, 0.15), (640, 427, 0.08),
          (640, 640, 0.04), (320, 640, 0.03))
SQUARE = (1344, 1344)
BUCKETS = ((800, 1344), (1344, 800), (1344, 1344))


def fitted(h: int, w: int, pad: tuple[int, int]) -> tuple[int, int]:
    """torchvision's resize (shorter 800, longer <= 1333), then fitted into ``pad``."""
    scale = min(800 / min(h, w), 1333 / max(h, w), pad[0] / h, pad[1] / w)
    return round(h * scale), round(w * scale)


def padding_table(n: int, global_batch: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    kinds = rng.choice(len(SHAPES), n, p=[s[2] for s in SHAPES])
    sizes = [(SHAPES[k][0], SHAPES[k][1]) for k in kinds]
    labels = np.asarray([buckets.nearest_size(h, w, BUCKETS) for h, w in sizes])
    rows = ["| padding | mean padding fraction | padded pixels / image (M) | content pixels / "
            "image (M) | left out per epoch |", "|---|---:|---:|---:|---:|"]
    for name, pads in (("one square 1344 x 1344", [SQUARE] * n),
                       ("buckets 800x1344 / 1344x800 / 1344x1344", [BUCKETS[b] for b in labels])):
        content = np.asarray([np.prod(fitted(h, w, p)) for (h, w), p in zip(sizes, pads,
                                                                             strict=True)])
        padded = np.asarray([np.prod(p) for p in pads], np.float64)
        order = buckets.BucketedOrder(labels, len(BUCKETS), global_batch, seed)
        left = 0 if name.startswith("one") else n - order.epoch_length
        rows.append(f"| {name} | {np.mean(1 - content / padded):.3f} | "
                    f"{padded.mean() / 1e6:.2f} | {content.mean() / 1e6:.2f} | {left} of {n} |")
    shares = np.bincount(labels, minlength=len(BUCKETS)) / n
    return rows, shares


def step_times(scale: float, batch: int, rounds: int) -> dict[str, float]:
    import jax
    from random_batches import random_detection_batch

    from jaxdet import config_files
    from jaxdet.data import pipeline
    from jaxdet.tasks import detection as det_task
    from jaxdet.train import loop
    from jaxdet.train import state as state_lib
    from jaxdet.train import step as step_lib

    side, short = int(round(1344 * scale / 32)) * 32, int(round(800 * scale / 32)) * 32
    det_task.class_names = lambda _config: [f"class_{i}" for i in range(80)]
    mesh = step_lib.make_mesh()
    steps = {}
    for name, hw in (("square", (side, side)), ("landscape", (short, side))):
        config = config_files.load(os.path.join(REPO, "configs", "faster_rcnn_coco.py:small"))
        config.data.pad_sizes = (hw,)
        config.batch_size = batch
        batch_np = random_detection_batch(config, batch)
        state = loop.initial_state(det_task, config, mesh, {k: v[0] for k, v in batch_np.items()})
        step = loop.make_train_step(det_task, config, mesh, state_lib.make_optimizer(config), [])
        steps[name] = [step, state, pipeline.to_global_batch(batch_np, mesh), hw]
    times: dict[str, list[float]] = {k: [] for k in steps}
    for r in range(rounds + 1):
        for name, entry in steps.items():
            t = time.perf_counter()
            entry[1], metrics = entry[0](entry[1], entry[2])
            jax.block_until_ready(metrics["loss"])
            times[name].append(time.perf_counter() - t)
        print(f"round {r}: " + ", ".join(f"{k} {v[-1]:.3f} s" for k, v in times.items()),
              flush=True)
    return {f"{k} {steps[k][3][0]}x{steps[k][3][1]}": statistics.median(v[1:])
            for k, v in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=20000)
    p.add_argument("--global_batch", type=int, default=16)
    p.add_argument("--scale", type=float, default=0.25)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--skip_steps", action="store_true", help="part 1 only")
    args = p.parse_args()
    rows, shares = padding_table(args.images, args.global_batch)
    print("\n".join(rows))
    print("batch shares (landscape, portrait, square):", np.round(shares, 3).tolist())
    if args.skip_steps:
        return
    med = step_times(args.scale, args.batch, args.rounds)
    (sq_name, sq), (ls_name, ls) = med.items()
    bucketed = shares[0] * ls + shares[1] * ls + shares[2] * sq  # portrait costs as landscape
    print(f"median train step: {sq_name} {sq:.3f} s, {ls_name} {ls:.3f} s; batch {args.batch}")
    print(f"images/s: square {args.batch / sq:.2f}, bucketed {args.batch / bucketed:.2f} "
          f"({sq / bucketed:.2f}x)")


if __name__ == "__main__":
    main()
