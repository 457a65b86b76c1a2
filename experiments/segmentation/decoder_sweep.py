"""Sweep encoder-decoder variants on the synthetic scenes: val mIoU after N steps.

A stripped-down trainer (one device, plain ``jax.jit``, no TFDS/grain/Orbax) so that it runs
on any machine that has jax, flax and optax — e.g. a borrowed GPU, where many variants fit in
the time one CPU run takes. Learning per step does not depend on the machine, so the curves
found here choose the shipped config; its CPU wall time is then measured with
``python -m jaxdet.main`` (see results.md).

The data are the same scenes the TFDS builder writes (same per-example generators, see
``jaxdet.data.scenes_tfds.example_rng``); the optimizer is the config's Adam with linear
warm-up and cosine decay; batches are drawn by a seeded per-epoch permutation (the order
differs from grain's, so numbers match the real runs statistically, not bit for bit).

  python experiments/segmentation/decoder_sweep.py --steps=1000 --out=/tmp/sweep.jsonl \
      --run='{"name": "unpool"}' --run='{"name": "unpool3", "upsample_input": "reduce_3x3"}'

Each ``--run`` is a JSON object: ``name``, optional ``lr``, ``batch``, ``seed``, ``steps``,
and any ``model`` config field (see ``jaxdet.models.segmentation``). Unset model fields take
the values of ``configs/segmentation.py``'s default variant.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdet.data import scenes
from jaxdet.losses import segmentation as seg_losses
from jaxdet.metrics import confusion
from jaxdet.models import segmentation as seg_models

BASE_MODEL = {
    "name": "encoder_decoder", "norm": "batch", "bn_momentum": 0.9,
    "level_widths": (8, 16, 32, 64, 128, 256), "level_blocks": (1, 1, 2, 2, 2, 2),
    "decoder_blocks": 1, "downsample": "max_pool", "upsample": "max_unpool", "skip": "concat",
    "transpose_kernel_size": 2,
}
RUN_KEYS = ("name", "lr", "batch", "seed", "steps", "warmup")
NUM_CLASSES = 5


def _example(args: tuple[str, int]) -> tuple[np.ndarray, np.ndarray]:
    split, index = args
    rng = np.random.default_rng([0, zlib.crc32(split.encode()), index])
    scene = scenes.generate_scene(rng, scenes.SceneSpec.for_image_size(128))
    return scene["image"], scene["segmentation"].astype(np.int32)


def make_split(split: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    with multiprocessing.Pool() as pool:
        pairs = pool.map(_example, [(split, i) for i in range(n)], chunksize=32)
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def run_one(run: dict, data: dict, default_steps: int, eval_every: int) -> dict:
    model_fields = {**BASE_MODEL, **{k: v for k, v in run.items() if k not in RUN_KEYS}}
    model = seg_models.create_model(model_fields, NUM_CLASSES)
    steps = int(run.get("steps", default_steps))
    batch, lr, seed = int(run.get("batch", 16)), float(run.get("lr", 3e-3)), run.get("seed", 0)
    warmup = min(int(run.get("warmup", 50)), steps // 2)
    schedule = optax.join_schedules(
        [optax.linear_schedule(0.0, lr, warmup), optax.cosine_decay_schedule(lr, steps - warmup)],
        [warmup],
    )
    tx = optax.adam(schedule)
    images, labels = data["train"]
    variables = model.init(jax.random.PRNGKey(seed), jnp.zeros((1, 128, 128, 3)), train=False)
    params, stats = variables["params"], variables.get("batch_stats", {})
    opt_state = tx.init(params)

    def loss_fn(params, stats, x, y):
        variables = {"params": params, "batch_stats": stats}
        logits, upd = model.apply(variables, x, train=True, mutable=["batch_stats"])
        ce, count = seg_losses.pixel_cross_entropy(logits, y, jnp.ones(x.shape[0]), 255)
        return ce / count, upd["batch_stats"]

    @jax.jit
    def train_step(params, stats, opt_state, x, y):
        x = x.astype(jnp.float32) / 255.0
        (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, stats, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), stats, opt_state, loss

    @jax.jit
    def eval_step(params, stats, x, y):
        logits = model.apply({"params": params, "batch_stats": stats},
                             x.astype(jnp.float32) / 255.0, train=False)
        return confusion.confusion_matrix(
            jnp.argmax(logits, -1), y, NUM_CLASSES, jnp.ones(x.shape[0]), 255)

    def evaluate() -> dict:
        vx, vy = data["validation"]
        total = sum(np.asarray(eval_step(params, stats, vx[i:i + 100], vy[i:i + 100]))
                    for i in range(0, len(vx), 100))
        return confusion.summarize(total, ["background", *scenes.CLASS_NAMES])

    flops = train_step.lower(params, stats, opt_state, images[:batch], labels[:batch]) \
        .compile().cost_analysis()
    flops = (flops[0] if isinstance(flops, list) else flops).get("flops", float("nan"))
    order_rng = np.random.default_rng(seed)
    perm, pos, curve = order_rng.permutation(len(images)), 0, []
    start = time.time()
    for step in range(1, steps + 1):
        if pos + batch > len(perm):
            perm, pos = order_rng.permutation(len(images)), 0
        idx = np.sort(perm[pos:pos + batch])
        pos += batch
        params, stats, opt_state, loss = train_step(params, stats, opt_state,
                                                    images[idx], labels[idx])
        if step % eval_every == 0 or step == steps:
            summary = evaluate()
            curve.append({"step": step, "loss": float(loss), "mean_iou": summary["mean_iou"]})
            print(f"  {run['name']} step {step}: loss {float(loss):.3f} "
                  f"mIoU {summary['mean_iou']:.3f}", flush=True)
    return {"run": run, "train_gflop_per_step": flops / 1e9, "curve": curve,
            "final": summary, "seconds": time.time() - start, "device": str(jax.devices()[0])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", required=True, help="JSON run spec")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--eval_every", type=int, default=100)
    parser.add_argument("--num_train", type=int, default=2000)
    parser.add_argument("--num_val", type=int, default=200)
    parser.add_argument("--out", default="decoder_sweep.jsonl")
    args = parser.parse_args()
    data = {"train": make_split("train", args.num_train),
            "validation": make_split("validation", args.num_val)}
    for spec in args.run:
        result = run_one(json.loads(spec), data, args.steps, args.eval_every)
        with open(args.out, "a") as f:
            f.write(json.dumps(result) + "\n")
        print(json.dumps({"name": result["run"]["name"], "final_miou": result["final"]["mean_iou"],
                          "gflop": result["train_gflop_per_step"],
                          "seconds": result["seconds"]}), flush=True)


if __name__ == "__main__":
    main()
