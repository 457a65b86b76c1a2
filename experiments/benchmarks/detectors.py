"""Test-time seconds per image of the four detectors, as ratios to Faster R-CNN, with their AP.

  python experiments/benchmarks/detectors.py \
      [--workdir sliding_window=workdirs/sliding_window_b --workdir rcnn=workdirs/rcnn_b \
       --workdir fast_rcnn=workdirs/fast_rcnn --workdir faster_rcnn=workdirs/frcnn] \
      [--config=configs/faster_rcnn_shapes.py] [--batch=4] [--calls=5]
      [--images=validation|scenes|random] [--proposals=selective_search|random]
      [--num_proposals=500] [--only=NAME,...] [--out=FILE] [-- overrides]

Detectors (row names): ``sliding_window`` (:mod:`jaxdet.detection.sliding_window`: every window
of the static grid classified by its CNN, then NMS), ``rcnn`` (:mod:`jaxdet.detection.rcnn`:
one CNN pass per warped proposal crop), ``fast_rcnn`` (:mod:`jaxdet.detection.fast_rcnn`: one
backbone pass, RoI pooling of the proposals) and ``faster_rcnn``
(:mod:`jaxdet.detection.faster_rcnn`, the reference, ratio 1).

Weights. ``--workdir NAME=WORKDIR`` (a finished ``python -m jaxdet.main`` run of that detector,
repeatable): the detector is built from ``WORKDIR/config.json`` (the config the run trained
with, overrides included) and its latest checkpoint is restored by
:func:`jaxdet.predict.restore_state` (:class:`jaxdet.train.checkpointing.Checkpointer` into the
train state of :func:`jaxdet.train.loop.initial_state`: the training loop's own code); its
``AP`` / ``AP50`` and step come from ``WORKDIR/eval_results.json`` (the training loop's final
COCO evaluation on the 200 validation scenes). A detector without a workdir is built from
``--config`` (plus the trailing ``key=value`` overrides, e.g. ``model.width=32``) with its
module's ``create_model(config, num_classes, None)`` and random weights (only its time means
anything, and the number of boxes surviving the score threshold, hence the NMS work, is not
that of a trained model).

Timing: each detector's jit'd ``apply(variables, images, image_hw, train=False, ...)`` (the
network, decoding, score threshold, class-aware NMS, padded ``[B, 100]`` detections) on the
SAME batch of ``--batch`` images: ``validation`` (the first images of the validation split of
the scenes, the default with workdirs), ``scenes`` (freshly generated scenes, the default
without) or ``random`` (noise). The first call (compile + run) is reported separately, then the
median of ``--calls`` calls (inputs on device, ``block_until_ready``) divided by the batch size
gives seconds per image. The persistent compilation cache of ``jaxdet.main`` is on (restoring
builds the training loop's initial state, whose init program the training run compiled), so
a rerun's first call can be a cache hit.

R-CNN and Fast R-CNN get ``P = --num_proposals`` proposals per image (a static count):
``selective_search`` (default; :func:`jaxdet.data.proposals.compute_proposals`, ``"fast"`` mode,
the settings of the training config, zero-padded to ``P`` as in the cached dataset, so the
same work as in their evaluation) or ``random`` boxes (all valid; sides 8 px to half the
image). Selective Search's own host time (one thread, per image) is measured on the same
images and added in an extra column. Rows whose module or OpenCV is missing are skipped with a
message.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from experiments.benchmarks.timing import first_and_median, machine  # noqa: E402

# (row name, module, needs proposals)
DETECTORS = (
    ("sliding_window", "jaxdet.detection.sliding_window", False),
    ("rcnn", "jaxdet.detection.rcnn", True),
    ("fast_rcnn", "jaxdet.detection.fast_rcnn", True),
    ("faster_rcnn", "jaxdet.detection.faster_rcnn", False),
)
TITLES = {"sliding_window": "sliding window", "rcnn": "R-CNN", "fast_rcnn": "Fast R-CNN",
          "faster_rcnn": "Faster R-CNN"}


def _tuples(value: Any) -> Any:
    """JSON lists back to the tuples the config files use (nested)."""
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def config_from_workdir(workdir: str):
    """The ``ConfigDict`` a run trained with (``WORKDIR/config.json``, lists as tuples)."""
    import ml_collections

    with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
        return ml_collections.ConfigDict(_tuples(json.load(f)))


def read_results(workdir: str) -> dict[str, float]:
    """``AP``, ``AP50`` and ``step`` of ``WORKDIR/eval_results.json`` (those present)."""
    with open(os.path.join(workdir, "eval_results.json"), encoding="utf-8") as f:
        results = json.load(f)
    return {k: float(results[k]) for k in ("AP", "AP50", "step") if k in results}


def restore_variables(config, workdir: str) -> tuple[dict[str, Any], int]:
    """Flax variables of the latest checkpoint in ``workdir`` and its step, restored with the
    training loop's checkpoint code (:func:`jaxdet.predict.restore_state`)."""
    import jax

    from jaxdet import predict, tasks
    from jaxdet.train import loop
    from jaxdet.train import step as step_lib

    task = tasks.get_task(config.task)
    mesh = step_lib.make_mesh()
    train_source, _ = loop.split_sources(task, config)
    state = jax.device_get(predict.restore_state(task, config, workdir, mesh, train_source))
    variables = {"params": state.params}
    if state.batch_stats:
        variables["batch_stats"] = state.batch_stats
    return variables, int(state.step)


def _images(kind: str, batch: int, size: int, config=None, seed: int = 0):
    """uint8 ``[B, size, size, 3]`` RGB images."""
    import numpy as np

    if kind == "random":
        return np.random.default_rng(seed).integers(0, 256, (batch, size, size, 3), np.uint8)
    if kind == "validation":
        from jaxdet import tasks
        from jaxdet.train import loop

        _, source = loop.split_sources(tasks.get_task(config.task), config)
        return np.stack([np.asarray(source[i]["image"], np.uint8) for i in range(batch)])
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


def _selective_search(images, count: int, settings) -> tuple[Any, Any, float | None, str]:
    """(boxes ``[B, P, 4]``, valid ``[B, P]``, host seconds per image, note), or ``(None,
    None, None, why)`` when OpenCV or the module is missing."""
    import numpy as np

    try:
        from jaxdet.data import proposals

        t = time.perf_counter()
        boxes, counts = proposals.compute_proposals(
            list(images), max_proposals=count, mode=settings.get("mode", "fast"),
            min_size=float(settings.get("min_size", 2.0)))
        seconds = (time.perf_counter() - t) / len(images)
    except Exception as e:  # noqa: BLE001 - OpenCV contrib missing
        return None, None, None, f"selective_search failed: {type(e).__name__}: {e}"
    valid = np.arange(count)[None, :] < counts[:, None]
    return boxes, valid, seconds, (f"{counts.min()}-{counts.max()} proposals per image, "
                                   f"padded to {count}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/faster_rcnn_shapes.py",
                        help="config of the detectors without a --workdir (random weights)")
    parser.add_argument("--workdir", action="append", default=[], metavar="NAME=WORKDIR")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--images", choices=("validation", "scenes", "random"), default=None)
    parser.add_argument("--proposals", choices=("selective_search", "random"),
                        default="selective_search")
    parser.add_argument("--num_proposals", type=int, default=500,
                        help="P proposals per image fed to R-CNN and Fast R-CNN")
    parser.add_argument("--only", default="", help="comma-separated detector names")
    parser.add_argument("--out", default="")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    names = [n for n, _, _ in DETECTORS]
    workdirs: dict[str, str] = {}
    for item in args.workdir:
        name, _, workdir = item.partition("=")
        if name not in names or not workdir:
            parser.error(f"--workdir {item!r}: expected NAME=WORKDIR, NAME in {names}")
        workdirs[name] = workdir
    import jax
    import jax.numpy as jnp

    from jaxdet import config_files, runtime
    from jaxdet.tasks import detection

    runtime.enable_compilation_cache()  # as jaxdet.main: restoring re-runs the loop's init

    base = config_files.load(os.path.join(REPO, args.config))
    for item in args.overrides:
        config_files.override(base, item)
    configs = {n: config_from_workdir(w) for n, w in workdirs.items()}
    size = int(base.data.image_size)
    if any(int(c.data.image_size) != size for c in configs.values()):
        parser.error("the workdirs and --config must share data.image_size")
    kind = args.images or ("validation" if workdirs else "scenes")
    data_config = next(iter(configs.values()), base)
    images_u8 = _images(kind, args.batch, size, data_config)
    images = jnp.asarray(images_u8, jnp.float32) / 255.0
    image_hw = jnp.full((args.batch, 2), size, jnp.int32)
    proposal_config = next((configs[n] for n in ("rcnn", "fast_rcnn") if n in configs), base)
    ss_boxes, ss_valid, ss_seconds, ss_note = _selective_search(
        images_u8, args.num_proposals, proposal_config.get("proposals", {}))
    if args.proposals == "selective_search" and ss_boxes is not None:
        props, prop_valid = jnp.asarray(ss_boxes), jnp.asarray(ss_valid)
    else:
        props = jnp.asarray(_random_proposals(args.batch, args.num_proposals, size))
        prop_valid = jnp.ones(props.shape[:2], bool)
        if args.proposals == "selective_search":
            print(f"{ss_note}; R-CNN / Fast R-CNN get random boxes", file=sys.stderr)
    only = set(filter(None, args.only.split(",")))

    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    for name, module_name, needs_proposals in DETECTORS:
        if only and name not in only:
            continue
        config = configs.get(name, base)
        extra: dict[str, Any] = (
            {"proposals": props, "proposal_valid": prop_valid} if needs_proposals else {})
        row: dict[str, Any] = {"name": name, "weights": "random"}
        try:
            module = importlib.import_module(module_name)
            model = module.create_model(config, len(detection.class_names(config)), None)
            if name in workdirs:
                variables, step = restore_variables(config, workdirs[name])
                row.update(read_results(workdirs[name]), weights=f"trained, step {step}")
            else:
                variables = jax.jit(lambda k, m=model, e=extra: m.init(
                    k, images, image_hw, train=False, **e))(jax.random.key(0))
            fn = jax.jit(lambda v, x, hw, m=model, e=extra: m.apply(v, x, hw, train=False, **e))
            first, per_call = first_and_median(fn, variables, images, image_hw, calls=args.calls)
        except Exception as e:  # noqa: BLE001 - a module, checkpoint or results file missing
            notes.append(f"{TITLES[name]}: skipped ({type(e).__name__}: {e})")
            print(notes[-1], file=sys.stderr)
            continue
        m = config.model
        row.update(first=first, per_image=per_call / args.batch,
                   backbone=f"R{m.get('depth')} w{m.get('width')}, {m.get('stem')} stem")
        rows.append(row)
        print(f"{TITLES[name]}: compile + first call {first:.1f} s, "
              f"{row['per_image']:.4f} s/image", file=sys.stderr)

    ref = next((r["per_image"] for r in rows if r["name"] == "faster_rcnn"), None)
    needs = {n: p for n, _, p in DETECTORS}
    proposals_text = (f"Selective Search proposals padded to P = {args.num_proposals}"
                      if args.proposals == "selective_search" and ss_boxes is not None
                      else f"P = {args.num_proposals} random boxes")
    random_config = " ".join([args.config, *args.overrides])
    lines = [
        f"Detectors at test time: batch {args.batch} of {size}x{size} {kind} images; "
        f"R-CNN / Fast R-CNN on {proposals_text} per image; median of {args.calls} calls "
        f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}).",
        f"Machine: {machine()}, devices "
        f"{[d.device_kind for d in jax.devices()]}, jax {jax.__version__}, load average "
        f"{os.getloadavg()[0]:.1f}.",
        "Weights: " + ("; ".join(f"{TITLES[n]} `{w}`" for n, w in workdirs.items())
                       or "random") + (f"; the others random, `{random_config}`"
                                        if len(workdirs) < len(DETECTORS) else "") + ".",
        "",
        "| detector | backbone | weights | compile + first call s | s/image | vs Faster R-CNN | "
        "+ Selective Search s/image | AP | AP50 |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = f"{r['per_image'] / ref:.2f}" if ref else "-"
        with_ss = (f"{r['per_image'] + ss_seconds:.4f}"
                   if needs[r["name"]] and ss_seconds is not None else "-")
        ap = {k: f"{r[k]:.3f}" if k in r else "-" for k in ("AP", "AP50")}
        lines.append(f"| {TITLES[r['name']]} | {r['backbone']} | {r['weights']} | "
                     f"{r['first']:.1f} | {r['per_image']:.4f} | {ratio} | {with_ss} | "
                     f"{ap['AP']} | {ap['AP50']} |")
    lines.append("")
    if ss_seconds is not None:
        lines.append(f"Selective Search (\"fast\", host, one thread, one image at a time): "
                     f"{ss_seconds:.4f} s/image, {ss_note}.")
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
