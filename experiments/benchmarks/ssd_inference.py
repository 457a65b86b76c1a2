"""Inference images/s of SSD and Faster R-CNN on the same validation scenes (128x128).

  python experiments/benchmarks/ssd_inference.py [--ssd_workdir=workdirs/ssd]
      [--batch=50] [--calls=5]

Each detector is built from its own config (``configs/ssd_shapes.py``,
``configs/faster_rcnn_shapes.py``: the same data section, so the same input size and images);
its jit'd ``apply(..., train=False)`` (detections incl. score threshold and NMS, as in
evaluation) is timed on the first ``--batch`` validation images: first call (compile + run)
separately, then the median of ``--calls`` calls with inputs on device and
``block_until_ready``. ``--ssd_workdir``: restore SSD's trained weights from that workdir's
latest checkpoint (the NMS work depends on how many boxes pass the score threshold); without
it, and always for Faster R-CNN, weights are random.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from experiments.benchmarks.timing import machine  # noqa: E402
from jaxdet import config_files, tasks  # noqa: E402
from jaxdet.data import pipeline  # noqa: E402
from jaxdet.tasks.model_apply import model_input  # noqa: E402
from jaxdet.train import loop as loop_lib  # noqa: E402
from jaxdet.train import step as step_lib  # noqa: E402


def _measure(config_path: str, workdir: str | None, batch_size: int, calls: int):
    config = config_files.load(config_path)
    task = tasks.get_task(config.task)
    train_source, eval_source = loop_lib.split_sources(task, config)
    batch = next(pipeline.eval_batches(eval_source, loop_lib.preprocess_fn(task, config),
                                       batch_size, 0, 1, limit=batch_size))
    batch = {k: jnp.asarray(v) for k, v in batch.items()}
    model = task.create_model(config, bn_axis_name=None)
    if workdir:
        from jaxdet.predict import restore_state

        state = jax.device_get(restore_state(task, config, workdir, step_lib.make_mesh(),
                                             train_source))
        variables = {"params": state.params, **(
            {"batch_stats": state.batch_stats} if state.batch_stats else {})}
    else:
        variables = jax.jit(lambda k, b: task.init_variables(model, k, b))(
            jax.random.key(0), batch)
    fn = jax.jit(lambda v, x, hw: model.apply(v, x, hw, train=False))
    x, hw = model_input(batch), batch["image_hw"]
    t0 = time.perf_counter()
    jax.block_until_ready(fn(variables, x, hw))
    first = time.perf_counter() - t0
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn(variables, x, hw))
        times.append(time.perf_counter() - t0)
    n = int(np.sum(np.asarray(batch["mask"]) > 0))
    dets = float(np.mean(np.sum(np.asarray(out["valid"]), axis=1)))
    return first, statistics.median(times), n, dets


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ssd_workdir", default="")
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--calls", type=int, default=5)
    args = parser.parse_args()
    print(f"machine: {machine()}, "
          f"jax {jax.__version__}; batch {args.batch}, median of {args.calls} calls")
    print("| detector | weights | compile + first call s | median s/batch | images/s | "
          "mean detections/image |")
    print("|---|---|---:|---:|---:|---:|")
    rows = [("SSD", "configs/ssd_shapes.py", args.ssd_workdir or None),
            ("Faster R-CNN", "configs/faster_rcnn_shapes.py", None)]
    for name, path, workdir in rows:
        first, med, n, dets = _measure(path, workdir, args.batch, args.calls)
        print(f"| {name} | {'trained' if workdir else 'random'} | {first:.1f} | {med:.3f} | "
              f"{n / med:.1f} | {dets:.1f} |", flush=True)


if __name__ == "__main__":
    main()
