"""Test-time seconds per image of the four detectors, as ratios to Faster R-CNN.

  python experiments/benchmarks/detectors.py [--config=configs/faster_rcnn_shapes.py]
      [--batch=4] [--calls=5] [--images=scenes|random] [--num_proposals=300]
      [--ap_from sliding_window=WORKDIR faster_rcnn=WORKDIR ...] [--out=FILE] [-- overrides]

Every detector is built by its module's ``create_model(config, num_classes, None)`` from the
SAME config (so the same ``config.model`` backbone fields; each reads its own extra keys and
uses its defaults for the rest), initialised, and its jit'd ``apply(..., train=False)`` is
timed on the same batch of ``--batch`` images of the config's ``data.image_size``: the first
call (compile + run) is reported separately, then the median of ``--calls`` calls (inputs
already on device, ``block_until_ready``) divided by the batch size gives seconds per image.

* sliding window (:mod:`jaxdet.detection.sliding_window`): every window of the static grid
  classified by the CNN, then NMS;
* R-CNN (:mod:`jaxdet.detection.rcnn`) and Fast R-CNN (:mod:`jaxdet.detection.fast_rcnn`):
  fed ``P = --num_proposals`` random boxes per image (all valid; sides 8 px to half the image),
  a fixed count standing in for Selective Search, whose own cost is timed separately on the
  same images (``jaxdet.data.proposals.selective_search``, ``"fast"`` mode, median seconds per
  image on the host) and added in an extra column. Those rows are skipped with a message
  while the modules (or OpenCV) are missing or fail to build;
* Faster R-CNN (:mod:`jaxdet.detection.faster_rcnn`), the reference (ratio 1).

Images: ``scenes`` (the synthetic shapes of :mod:`jaxdet.data.scenes`, default) or
``random`` (uniform noise). Weights are random, so only the time is meaningful, except where
the number of boxes surviving the score threshold changes the NMS work (it does not change
the shapes). ``--ap_from name=workdir`` (names: ``sliding_window``, ``rcnn``, ``fast_rcnn``,
``faster_rcnn``) reads ``<workdir>/eval_results.json`` (written by ``jaxdet.train.loop``) and
prints its ``AP`` and ``AP50`` beside the times. Overrides are ``key=value`` pairs applied to
the config (``model.width=32``).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

# (row name, module, needs proposals)
DETECTORS = (
    ("sliding_window", "jaxdet.detection.sliding_window", False),
    ("rcnn", "jaxdet.detection.rcnn", True),
    ("fast_rcnn", "jaxdet.detection.fast_rcnn", True),
    ("faster_rcnn", "jaxdet.detection.faster_rcnn", False),
)
TITLES = {"sliding_window": "sliding window", "rcnn": "R-CNN", "fast_rcnn": "Fast R-CNN",
          "faster_rcnn": "Faster R-CNN"}


def _time(fn, *args, calls: int) -> tuple[float, float]:
    """(compile + first call seconds, median seconds per call)."""
    import jax

    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return first, statistics.median(times)


def _images(kind: str, batch: int, size: int, seed: int = 0):
    """uint8 ``[B, size, size, 3]`` RGB images."""
    import numpy as np

    if kind == "random":
        return np.random.default_rng(seed).integers(0, 256, (batch, size, size, 3), np.uint8)
    from jaxdet.data import scenes

    rng = np.random.default_rng(seed)
    spec = scenes.SceneSpec(image_size=size, max_size=min(scenes.SceneSpec().max_size, size))
    return np.stack([scenes.generate_scene(rng, spec)["image"] for _ in range(batch)])


def _random_proposals(batch: int, count: int, size: int, seed: int = 1):
    """``[B, P, 4]`` float32 ``(x1, y1, x2, y2)`` boxes inside the image, sides 8..size/2."""
    import numpy as np

    rng = np.random.default_rng(seed)
    wh = rng.uniform(8, max(size / 2, 9), (batch, count, 2))
    xy = rng.uniform(0, 1, (batch, count, 2)) * (size - wh)
    return np.concatenate([xy, xy + wh], -1).astype(np.float32)


def _selective_search_seconds(images) -> tuple[float | None, str]:
    """Median host seconds per image of Selective Search ("fast"), or None and why."""
    try:
        from jaxdet.data import proposals
    except ImportError as e:
        return None, f"jaxdet.data.proposals not importable ({e})"
    times, counts = [], []
    try:
        for image in images:
            t = time.perf_counter()
            boxes = proposals.selective_search(image, mode="fast")
            times.append(time.perf_counter() - t)
            counts.append(len(boxes))
    except Exception as e:  # noqa: BLE001 - OpenCV missing or the module in progress
        return None, f"selective_search failed: {type(e).__name__}: {e}"
    return statistics.median(times), f"{min(counts)}-{max(counts)} proposals per image"


def _read_ap(workdir: str) -> dict[str, float]:
    with open(os.path.join(workdir, "eval_results.json"), encoding="utf-8") as f:
        results = json.load(f)
    return {k: float(results[k]) for k in ("AP", "AP50") if k in results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/faster_rcnn_shapes.py")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--images", choices=("scenes", "random"), default="scenes")
    parser.add_argument("--num_proposals", type=int, default=300,
                        help="P random boxes per image fed to R-CNN and Fast R-CNN")
    parser.add_argument("--ap_from", nargs="*", default=[], metavar="NAME=WORKDIR")
    parser.add_argument("--only", default="", help="comma-separated detector names")
    parser.add_argument("--out", default="")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    import jax
    import jax.numpy as jnp

    from jaxdet import config_files
    from jaxdet.data import scenes

    config = config_files.load(os.path.join(REPO, args.config))
    for item in args.overrides:
        config_files.override(config, item)
    size = int(config.data.image_size)
    num_classes = len(scenes.SceneSpec().class_names)
    images_u8 = _images(args.images, args.batch, size)
    images = jnp.asarray(images_u8, jnp.float32) / 255.0
    image_hw = jnp.full((args.batch, 2), size, jnp.int32)
    props = jnp.asarray(_random_proposals(args.batch, args.num_proposals, size))
    prop_valid = jnp.ones(props.shape[:2], bool)
    ap = {}
    for item in args.ap_from:
        name, _, workdir = item.partition("=")
        try:
            ap[name] = _read_ap(workdir)
        except (OSError, ValueError, KeyError) as e:
            print(f"--ap_from {item}: {type(e).__name__}: {e}", file=sys.stderr)
    only = set(filter(None, args.only.split(",")))

    rows: list[tuple[str, float, float]] = []
    notes: list[str] = []
    for name, module_name, needs_proposals in DETECTORS:
        if only and name not in only:
            continue
        try:
            module = importlib.import_module(module_name)
            model = module.create_model(config, num_classes, None)
        except Exception as e:  # noqa: BLE001 - modules being written may not exist or build
            notes.append(f"{TITLES[name]}: skipped ({type(e).__name__}: {e})")
            print(notes[-1], file=sys.stderr)
            continue
        extra: dict[str, Any] = (
            {"proposals": props, "proposal_valid": prop_valid} if needs_proposals else {})
        try:
            variables = jax.jit(lambda k, m=model, e=extra: m.init(
                k, images, image_hw, train=False, **e))(jax.random.key(0))
            fn = jax.jit(lambda v, x, hw, m=model, e=extra: m.apply(v, x, hw, train=False, **e))
            first, per_call = _time(fn, variables, images, image_hw, calls=args.calls)
        except Exception as e:  # noqa: BLE001
            notes.append(f"{TITLES[name]}: failed ({type(e).__name__}: {e})")
            print(notes[-1], file=sys.stderr)
            continue
        rows.append((name, first, per_call / args.batch))
        print(f"{TITLES[name]}: compile + first call {first:.1f} s, "
              f"{per_call / args.batch:.4f} s/image", file=sys.stderr)

    ss_seconds, ss_note = _selective_search_seconds(images_u8)
    ref = dict((n, t) for n, _, t in rows).get("faster_rcnn")
    model_cfg = config.model
    lines = [
        f"Detectors at test time, `{args.config}` {' '.join(args.overrides)}: batch "
        f"{args.batch} of {size}x{size} {args.images} images, backbone "
        f"depth {model_cfg.get('depth')} stages {tuple(model_cfg.get('stage_sizes', ()))} "
        f"width {model_cfg.get('width')} stem {model_cfg.get('stem')}, random weights; "
        f"R-CNN / Fast R-CNN on P = {args.num_proposals} random boxes per image; median of "
        f"{args.calls} calls.",
        f"Machine: {platform.machine()} {os.cpu_count()} CPUs, devices "
        f"{[d.device_kind for d in jax.devices()]}, jax {jax.__version__}, load average "
        f"{os.getloadavg()[0]:.1f}.",
        "",
        "| detector | compile + first call s | s/image | vs Faster R-CNN | "
        "+ Selective Search s/image | AP | AP50 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, first, per_image in rows:
        ratio = f"{per_image / ref:.2f}" if ref else "-"
        needs = dict((n, p) for n, _, p in DETECTORS)[name]
        with_ss = f"{per_image + ss_seconds:.4f}" if needs and ss_seconds is not None else "-"
        a = {k: f"{v:.3f}" for k, v in ap.get(name, {}).items()}
        lines.append(f"| {TITLES[name]} | {first:.1f} | {per_image:.4f} | {ratio} | {with_ss} | "
                     f"{a.get('AP', '-')} | {a.get('AP50', '-')} |")
    lines.append("")
    if ss_seconds is not None:
        lines.append(f"Selective Search (\"fast\", host, one image at a time): {ss_seconds:.4f} "
                     f"s/image, {ss_note}.")
    else:
        lines.append(f"Selective Search not timed: {ss_note}.")
    lines += notes
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as f:
            f.write(text + "\n\n")


if __name__ == "__main__":
    main()
