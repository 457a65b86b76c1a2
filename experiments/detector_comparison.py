"""Single-shot vs two-stage detection on the synthetic scenes: accuracy and speed, one machine.

  python experiments/detector_comparison.py \
      --run yolo=configs/yolo_shapes.py@workdirs/yolo \
      --run ssd=configs/ssd_shapes.py@workdirs/ssd \
      --run faster_rcnn=configs/faster_rcnn_shapes.py@workdirs/frcnn \
      [--batch=8] [--calls=5] [--out=experiments/detector_comparison.md]

For each ``name=CONFIG@WORKDIR`` (a trained run of ``python -m jaxdet.main``):

* accuracy: ``WORKDIR/eval_results.json`` (COCO box AP, AP50, AP75, AP small / medium /
  large on the validation split, written by the training loop's final evaluation);
* inference: the task's compiled predict function (the model at test time, score threshold,
  NMS and the mapping back to image pixels) on one batch of ``--batch`` validation images with
  the run's restored weights (random weights when the workdir has no checkpoint): images/s
  from the median of ``--calls`` calls after a warm-up call;
* training: the loop's compiled train step (forward, four or so losses, backward, optimizer)
  on one batch of the config's ``batch_size`` training examples: steps/s and images/s, median
  of ``--calls`` calls after a warm-up call.

All rows run in the same process one after another on the same device(s), at each config's
own input size (they share the 128x128 scenes), so the ratios are comparable; absolute
numbers move with the machine's load (the load average is printed). Writes a Markdown table
to ``--out`` (and stdout).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from experiments.benchmarks.timing import first_and_median, machine  # noqa: E402

ACCURACY_KEYS = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large")


def _measure(config_spec: str, workdir: str, batch: int, calls: int) -> dict[str, float]:
    from jaxdet import config_files, predict, tasks
    from jaxdet.data import pipeline
    from jaxdet.train import loop
    from jaxdet.train import state as state_lib
    from jaxdet.train import step as step_lib

    config = config_files.load(os.path.join(REPO, config_spec))
    task = tasks.get_task(config.task)
    mesh = step_lib.make_mesh()
    train_source, eval_source = loop.split_sources(task, config)
    preprocess = loop.preprocess_fn(task, config)
    try:
        state = predict.restore_state(task, config, workdir, mesh, train_source)
        weights = "trained"
    except FileNotFoundError:
        state = loop.initial_state(task, config, mesh, preprocess(train_source[0]))
        weights = "random"
    out: dict[str, float | str] = {"weights": weights, "image_size": int(config.data.image_size)}
    results_path = os.path.join(workdir, "eval_results.json")
    if os.path.exists(results_path):
        with open(results_path, encoding="utf-8") as f:
            results = json.load(f)
        out.update({k: float(results[k]) for k in ACCURACY_KEYS if k in results})
        out["step"] = int(results.get("step", 0))

    eval_batch = next(pipeline.eval_batches(eval_source, preprocess, batch, limit=batch))
    predict_step = loop.make_eval_step(task, config, mesh)
    global_eval = pipeline.to_global_batch(eval_batch, mesh)
    _, seconds = first_and_median(lambda: predict_step(state, global_eval), calls=calls)
    out["infer_images_per_s"] = batch / seconds

    train_batch = next(iter(pipeline.train_dataset(
        train_source, preprocess, int(config.batch_size), seed=0)))
    global_train = pipeline.to_global_batch(train_batch, mesh)
    train_step = loop.make_train_step(task, config, mesh, state_lib.make_optimizer(config), [])
    holder = [state]  # the step donates its state: feed each new state back


    def one_step():
        holder[0], metrics = train_step(holder[0], global_train)
        return metrics

    _, seconds = first_and_median(one_step, calls=calls)
    out["train_steps_per_s"] = 1.0 / seconds
    out["train_images_per_s"] = int(config.batch_size) / seconds
    out["batch_size"] = int(config.batch_size)
    return out


def _table(rows: dict[str, dict], reference: str | None) -> list[str]:
    header = ("| detector | steps | AP | AP50 | AP75 | AP small | AP medium | AP large | "
              "inference images/s | vs Faster R-CNN | train steps/s (batch) | train images/s |")
    lines = [header, "|" + "---|" * 12]
    ref = rows.get(reference or "", {}).get("infer_images_per_s")

    def f(value, fmt="{:.3f}"):
        return "—" if value is None or value < 0 else fmt.format(value)  # -1: no such objects

    for name, r in rows.items():
        speed = r["infer_images_per_s"]
        lines.append(
            f"| {name} ({r['weights']} weights) | {r.get('step', '—')} | {f(r.get('AP'))} | "
            f"{f(r.get('AP50'))} | {f(r.get('AP75'))} | {f(r.get('AP_small'))} | "
            f"{f(r.get('AP_medium'))} | {f(r.get('AP_large'))} | {speed:.1f} | "
            f"{f(speed / ref if ref else None, '{:.2f}×')} | "
            f"{r['train_steps_per_s']:.2f} ({r['batch_size']}) | {r['train_images_per_s']:.1f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", required=True, metavar="NAME=CONFIG@WORKDIR")
    parser.add_argument("--batch", type=int, default=8, help="images per inference call")
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--reference", default="faster_rcnn")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    runs = []
    for item in args.run:
        name, _, rest = item.partition("=")
        config_spec, _, workdir = rest.partition("@")
        if not (name and config_spec and workdir):
            parser.error(f"--run {item!r}: expected NAME=CONFIG@WORKDIR")
        runs.append((name, config_spec, workdir))
    import jax

    rows = {}
    for name, config_spec, workdir in runs:
        print(f"measuring {name} ({config_spec}, {workdir}) ...", file=sys.stderr)
        rows[name] = _measure(config_spec, workdir, args.batch, args.calls)
        print(f"  {rows[name]}", file=sys.stderr)
    sizes = sorted({r["image_size"] for r in rows.values()})
    lines = [
        "# Single-shot vs two-stage detectors on the synthetic scenes",
        "",
        f"Written by `python experiments/detector_comparison.py "
        f"{' '.join('--run ' + r for r in args.run)} --batch={args.batch} "
        f"--calls={args.calls}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        f"Machine: {machine()}, devices "
        f"{[d.device_kind for d in jax.devices()]}, jax {jax.__version__}, load average "
        f"{os.getloadavg()[0]:.1f} at the end. Input size {sizes} px; inference = compiled "
        f"predict function incl. NMS on batches of {args.batch}; training = compiled train step "
        "on the config's batch; medians after a warm-up call, all rows in one process.",
        "",
        *_table(rows, args.reference),
        "",
        "Accuracy: each workdir's final validation evaluation (COCO box AP through pycocotools, "
        "200 validation scenes).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)


if __name__ == "__main__":
    main()
