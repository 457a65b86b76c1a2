"""Train-step images/s of a jaxdet config and of torchvision's recipe, interleaved in one process.

  python experiments/peer_training/speed.py --voc=/tmp/voc_shapes \
      [--jaxdet_config=configs/faster_rcnn_voc.py] [--batch=4 --image_size=256 --rounds=10] \
      [--out=FILE] [-- jaxdet overrides key=value ...]

Both train on the same ``--rounds`` batches of real images of the folder's training split (no
flips): torchvision's Faster R-CNN ResNet-18-FPN with its SGD
(:func:`compare.torchvision_model_and_optimizer`, ``torch.set_num_threads(os.cpu_count())``)
and jaxdet's compiled train step of the config (``jaxdet.train.loop.make_train_step``, the
task's own preprocessing). Each round times one jaxdet step and then one torchvision step, so
a change in the machine's load hits both; after one warm-up round (compilation) the medians
over rounds give images/s and their ratio. Appends a Markdown table to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402  (sets up sys.path and the torchvision import guard)

from experiments.benchmarks.timing import machine  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--voc", required=True)
    p.add_argument("--jaxdet_config", default="configs/faster_rcnn_voc.py")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--image_size", type=int, default=256)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--out", default="")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()

    import jax
    import torch

    from jaxdet import config_files
    from jaxdet.data import pipeline
    from jaxdet.tasks import detection as det_task
    from jaxdet.train import loop
    from jaxdet.train import state as state_lib
    from jaxdet.train import step as step_lib

    folder = os.path.abspath(os.path.expanduser(args.voc))
    names = compare.class_names(folder)
    n = args.batch * (args.rounds + 1)

    config = config_files.load(os.path.join(compare.REPO, args.jaxdet_config))
    for item in [f"data.path={folder}", f"data.image_size={args.image_size}",
                 f"batch_size={args.batch}", "data.random_flip=False",
                 "data.scale_jitter=()", *args.overrides]:
        config_files.override(config, item)
    mesh = step_lib.make_mesh()
    train_source, _ = loop.split_sources(det_task, config)
    preprocess = loop.preprocess_fn(det_task, config)
    examples = [{**preprocess(train_source[i]), "index": np.int32(i), "mask": np.float32(1)}
                for i in range(n)]  # "index", "mask": what the input pipeline adds
    batches = [pipeline.to_global_batch(
        {k: np.stack([e[k] for e in examples[r * args.batch:(r + 1) * args.batch]])
         for k in examples[0]}, mesh) for r in range(args.rounds + 1)]
    state = loop.initial_state(det_task, config, mesh, examples[0])
    train_step = loop.make_train_step(det_task, config, mesh, state_lib.make_optimizer(config),
                                      [])

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    images, targets = compare.torchvision_examples(folder, "train", names, limit=n)
    model, opt = compare.torchvision_model_and_optimizer(len(names), args.image_size)
    model.train()

    jax_times, torch_times = [], []
    for r in range(args.rounds + 1):
        t = time.perf_counter()
        state, metrics = train_step(state, batches[r])
        jax.block_until_ready(metrics["loss"])
        jax_times.append(time.perf_counter() - t)
        sl = slice(r * args.batch, (r + 1) * args.batch)
        t = time.perf_counter()
        loss = sum(model(images[sl], targets[sl]).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        torch_times.append(time.perf_counter() - t)
        print(f"round {r}: jaxdet {jax_times[-1]:.2f} s, torchvision {torch_times[-1]:.2f} s",
              flush=True)
    jx, tv = statistics.median(jax_times[1:]), statistics.median(torch_times[1:])
    text = "\n".join([
        f"Train step, batch {args.batch} at {args.image_size} px, {args.rounds} interleaved "
        f"rounds on `{os.path.basename(folder)}`; {machine()}, "
        f"jax {jax.__version__}, torch {torch.__version__}; load {os.getloadavg()[0]:.2f}.",
        "", "| side | median s/step | images/s |", "|---|---:|---:|",
        f"| jaxdet `{args.jaxdet_config}` {' '.join(args.overrides)} | {jx:.3f} | "
        f"{args.batch / jx:.2f} |",
        f"| torchvision ResNet-18-FPN (defaults) | {tv:.3f} | {args.batch / tv:.2f} |",
        "", f"jaxdet / torchvision images/s: **{tv / jx:.2f}x** (jaxdet first call, "
        f"compilation included: {jax_times[0]:.1f} s).", ""])
    print(text)
    if args.out:
        with open(args.out, "a") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
