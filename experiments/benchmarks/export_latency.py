"""Exported size and per-image latency of ``jaxdet.export.load(DIR)`` against in-process
prediction (the jitted :func:`jaxdet.tasks.on_images.make_batch_predict_fn` plus the same
fitting and result mapping), on one machine, interleaved.

  python experiments/benchmarks/export_latency.py --config=configs/faster_rcnn_voc.py \
      --rounds=5 --image_hw=360,480 [-- data.image_size=256 ...]

Both sides use a randomly initialised model (latency does not depend on the weights), batch 1,
one random ``image_hw`` photo; the first call of each side (compilation) is left out.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import jax
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from jaxdet import config_files, export, tasks  # noqa: E402
from jaxdet.tasks import on_images  # noqa: E402
from jaxdet.train import checkpointing, loop, step  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--config", required=True)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--image_hw", default="360,480")
    p.add_argument("overrides", nargs="*", help="config overrides a.b=value")
    args = p.parse_args()
    config = config_files.load(args.config, args.overrides)
    config.eval_batch_size = 1
    task = tasks.get_task(config.task)
    train_source, _ = loop.split_sources(task, config)
    state = loop.initial_state(task, config, step.make_mesh(),
                               loop.preprocess_fn(task, config)(train_source[0]))
    with tempfile.TemporaryDirectory() as workdir:
        ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), 1)
        ckpt.save(1, state, {"train": {}, "sweep": []}, force=True)
        ckpt.close()
        out = os.path.join(workdir, "exported")
        export.export_model(config, workdir, out, batch_size=1)
        sizes = {f: os.path.getsize(os.path.join(out, f)) for f in os.listdir(out)}
        predictor = export.load(out)
    state = jax.device_get(state)
    model = task.create_model(config, bn_axis_name=None)
    fn = jax.jit(on_images.make_batch_predict_fn(model, config))
    names = list(task.class_names(config)) if hasattr(task, "class_names") else ["person"]
    h, w = (int(v) for v in args.image_hw.split(","))
    image = np.random.default_rng(0).integers(0, 256, (h, w, 3), np.uint8)

    def in_process():
        fitted = on_images.fit_image(image, config)
        batch = {k: v[None] for k, v in fitted.items()}
        batch["mask"] = np.ones(1, np.float32)
        batch["index"] = np.zeros(1, np.int32)
        outputs = jax.device_get(fn(state.params, state.batch_stats, batch))
        return on_images.image_results(image, fitted, {k: v[0] for k, v in outputs.items()},
                                       config, names, draw=False)[0]

    sides = {"in-process": in_process, "exported": lambda: predictor(image)}
    for side in sides.values():
        side()  # compile
    times: dict[str, list[float]] = {k: [] for k in sides}
    for _ in range(args.rounds):
        for name, side in sides.items():
            t = time.perf_counter()
            side()
            times[name].append(time.perf_counter() - t)
    print(f"{args.config} {' '.join(args.overrides)}; {h}x{w} photo; "
          f"{jax.devices()[0].device_kind}; files: "
          + ", ".join(f"{k} {v / 2**20:.2f} MiB" for k, v in sorted(sizes.items())))
    for name, values in times.items():
        print(f"{name}: median {statistics.median(values) * 1e3:.1f} ms per image "
              f"({args.rounds} rounds)")
    ratio = statistics.median(times["exported"]) / statistics.median(times["in-process"])
    print(f"exported / in-process: {ratio:.2f}")


if __name__ == "__main__":
    main()
