"""Cost per image of the lecture's three segmentation designs, measured in one run.

Sliding window (every pixel classified from its own crop, stride 1) vs the full-resolution
FCN vs the encoder-decoder, all at the same input size (default 128x128, 5 classes), each
with the default fields of ``jaxdet.models.segmentation.DEFAULT_MODEL_FIELDS``. For each model:

* inference: ``model.apply(..., train=False)`` on a batch, jit-compiled;
* train: forward + backward of a per-pixel softmax cross-entropy (``train=True``; the
  sliding window at ``train_stride=1`` so that, like the others, it labels every pixel).

Time is the median over ``--repeats`` calls (models interleaved round-robin so that load from
other processes spreads over all of them), divided by the batch size; FLOPs come from XLA's
``jax.jit(f).lower(...).compile().cost_analysis()`` divided by the batch size. Ratios are
relative to the encoder-decoder. The sliding window runs one image per call with all its
crops in one chunk (XLA's cost analysis counts a loop body once, so chunking would hide FLOPs).

Run:  python experiments/benchmarks/segmentation_cost.py [--size 128] [--batch 4] [--repeats 5]
Results: experiments/benchmarks/segmentation_cost.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from experiments.benchmarks.timing import machine  # noqa: E402
from jaxdet.models import segmentation as seg  # noqa: E402

NUM_CLASSES = 5


def _flops(compiled: jax.stages.Compiled) -> float:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    return float(cost["flops"])


def _model_configs(size: int) -> dict[str, dict]:
    base = dict(seg.DEFAULT_MODEL_FIELDS)
    return {
        "sliding_window": {**base, "name": "sliding_window", "eval_stride": 1,
                           "train_stride": 1, "crop_chunk": size * size},
        "fcn_full_res": {**base, "name": "fcn_full_res"},
        "encoder_decoder (max_unpool)": {**base, "name": "encoder_decoder",
                                         "upsample": "max_unpool"},
        "encoder_decoder (transpose_conv)": {**base, "name": "encoder_decoder",
                                             "upsample": "transpose_conv"},
    }


def _describe(config: dict) -> str:
    name = config["name"]
    if name == "sliding_window":
        return (f"patch {config['patch_size']}, width {config['patch_width']}, "
                f"{config['patch_stages']} stages, stride 1")
    if name == "fcn_full_res":
        return f"{config['fcn_depth']} layers x {config['fcn_width']} ch"
    return (f"width {config['width']}, {config['num_levels']} levels x "
            f"{config['blocks_per_level']} blocks, skip {config['skip']}")


def _build(config: dict, size: int, batch: int) -> dict[str, Callable[[], jax.Array]]:
    model = seg.create_model(config, NUM_CLASSES)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(size=(batch, size, size, 3)), jnp.float32)
    y = jnp.asarray(rng.integers(0, NUM_CLASSES, (batch, size, size)), jnp.int32)
    variables = model.init(jax.random.key(0), x, train=False)

    def infer(v, x):
        return model.apply(v, x, train=False)

    def train(v, x, y):
        def loss(params):
            logits, _ = model.apply({**v, "params": params}, x, train=True,
                                    mutable=["batch_stats"])
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        return jax.grad(loss)(v["params"])

    out = {}
    for kind, fn, args in (("infer", infer, (variables, x)), ("train", train, (variables, x, y))):
        t0 = time.perf_counter()
        compiled = jax.jit(fn).lower(*args).compile()
        out[kind] = {"run": (lambda c=compiled, a=args: c(*a)), "flops": _flops(compiled) / batch,
                     "compile_s": time.perf_counter() - t0, "times": []}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4, help="images per call (FCN, ED)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    configs = _model_configs(args.size)
    built = {}
    for name, config in configs.items():
        batch = 1 if config["name"] == "sliding_window" else args.batch
        built[name] = (_build(config, args.size, batch), batch)
        for kind in ("infer", "train"):
            jax.block_until_ready(built[name][0][kind]["run"]())  # warm-up
    for _ in range(args.repeats):
        for fns, batch in built.values():
            for kind in ("infer", "train"):
                t0 = time.perf_counter()
                jax.block_until_ready(fns[kind]["run"]())
                fns[kind]["times"].append((time.perf_counter() - t0) / batch)

    ref_name = "encoder_decoder (max_unpool)"
    ref = {k: (statistics.median(built[ref_name][0][k]["times"]), built[ref_name][0][k]["flops"])
           for k in ("infer", "train")}
    print(f"jax {jax.__version__}, {jax.devices()[0].platform}, {machine()}; "
          f"input {args.size}x{args.size}x3, {NUM_CLASSES} classes, median of {args.repeats}")
    header = ("| model | config | infer ms/img | infer GFLOP/img | train ms/img | "
              "train GFLOP/img | infer time x | infer FLOP x | train time x | train FLOP x |")
    print(header)
    print("|" + "---|" * 10)
    for name, (fns, _) in built.items():
        cells = [name, _describe(configs[name])]
        ratios = []
        for kind in ("infer", "train"):
            t = statistics.median(fns[kind]["times"])
            f = fns[kind]["flops"]
            cells += [f"{1e3 * t:.1f}", f"{f / 1e9:.2f}"]
            ratios += [f"{t / ref[kind][0]:.1f}", f"{f / ref[kind][1]:.1f}"]
        print("| " + " | ".join(cells + [ratios[0], ratios[1], ratios[2], ratios[3]]) + " |")
    print("compile s: " + ", ".join(
        f"{n} {fns['infer']['compile_s']:.0f}+{fns['train']['compile_s']:.0f}"
        for n, (fns, _) in built.items()))
    spread = {n: (min(f["infer"]["times"]), max(f["infer"]["times"])) for n, (f, _) in
              built.items()}
    print("infer ms/img min..max: " + ", ".join(
        f"{n} {1e3 * a:.0f}..{1e3 * b:.0f}" for n, (a, b) in spread.items()))


if __name__ == "__main__":
    main()
