"""One-program sweep vs separate runs: steady-state time per step, as ratios from one run.

  python experiments/benchmarks/sweep.py [--config=configs/localization.py] [--members=4]
      [--steps=20] [--devices=1] [--out=experiments/benchmarks/sweep.md]

Times, on the same batches (random uint8 images of the config's size, so no input pipeline is
involved): (a) ``members`` separate single-run train steps, one after another, per step of
the sweep; then one compiled sweep step over all members with each strategy of
``jaxdet.train.sweep``: ``jax.vmap``, a loop over members inside the program (``lax.map``),
and the members' steps unrolled into one program. Compilation is timed separately (first
call) and left out of the per-step figures; each figure is the median of ``--steps`` calls.
Ratios below 1.0 mean the one-program sweep is faster than the separate runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from experiments.benchmarks.timing import machine  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/localization.py")
    parser.add_argument("--field", default="box_weight", help="config.sweep field to sweep")
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--devices", type=int, default=1, help="simulated CPU devices")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    if args.devices > 1:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   f" --xla_force_host_platform_device_count={args.devices}")
    import jax
    import numpy as np

    from jaxdet import config_files, tasks
    from jaxdet.data import pipeline
    from jaxdet.train import loop
    from jaxdet.train import state as state_lib
    from jaxdet.train import step as step_lib
    from jaxdet.train import sweep as sweep_lib

    config = config_files.load(os.path.join(REPO, args.config))
    task = tasks.get_task(config.task)
    field = args.field
    base = (float(config.optimizer.learning_rate) if field == "learning_rate"
            else float(config.loss.get(field, 1.0)))
    with config.unlocked():
        config.sweep[field] = tuple(base * 2.0**k for k in range(args.members))
    members = sweep_lib.sweep_members(config)
    mesh = step_lib.make_mesh()
    size, batch_size = config.data.image_size, config.batch_size
    rng = np.random.default_rng(0)
    example = task.preprocess(_fake_example(config, rng))
    batches = []
    for _ in range(4):
        ex = [task.preprocess(_fake_example(config, rng)) for _ in range(batch_size)]
        batch = {k: np.stack([e[k] for e in ex]) for k in ex[0]}
        batch["mask"] = np.ones(batch_size, np.float32)
        batch["index"] = np.arange(batch_size, dtype=np.int32)
        batches.append(pipeline.to_global_batch(batch, mesh))
    optimizer = state_lib.make_optimizer(config)

    def timed(step, state):
        t0 = time.perf_counter()
        state, metrics = step(state, batches[0])
        jax.block_until_ready(metrics)
        compile_s = time.perf_counter() - t0
        times = []
        for i in range(args.steps):
            t0 = time.perf_counter()
            state, metrics = step(state, batches[i % len(batches)])
            jax.block_until_ready(metrics)
            times.append(time.perf_counter() - t0)
        return statistics.median(times), compile_s

    results = {}
    single_steps = []
    for member in members:
        member_cfg = sweep_lib.member_config(config, member)
        state = loop.initial_state(task, member_cfg, mesh, example)
        step = loop.make_train_step(task, member_cfg, mesh, optimizer, [])
        single_steps.append(timed(step, state))
    results["separate"] = (sum(t for t, _ in single_steps), sum(c for _, c in single_steps))
    for strategy in sweep_lib.STRATEGIES:
        with config.unlocked():
            config.sweep_strategy = strategy
        state = loop.initial_state(task, config, mesh, example, num_members=len(members))
        step = loop.make_train_step(task, config, mesh, optimizer, members)
        results[strategy] = timed(step, state)

    sep = results["separate"][0]
    lines = [
        f"# One-program sweep vs {len(members)} separate runs ({config.task}, "
        f"{size}x{size}, batch {batch_size}, {jax.device_count()} device(s))",
        "",
        f"Machine: {machine()}, "
        f"jax {jax.__version__}, backend {jax.default_backend()} "
        f"({jax.devices()[0].device_kind}).",
        f"Command: `python experiments/benchmarks/sweep.py --config={args.config} "
        f"--field={field} --members={args.members} --steps={args.steps} "
        f"--devices={args.devices}`",
        "",
        "| strategy | ms per sweep step (median) | ratio to separate runs | compile s |",
        "|---|---|---|---|",
    ]
    for name, (t, c) in results.items():
        lines.append(f"| {name} | {t * 1e3:.1f} | {t / sep:.2f} | {c:.1f} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as f:
            f.write(text + "\n\n")


def _fake_example(config, rng):
    """A random example in the raw format of the config's task (shapes only matter here)."""
    import numpy as np

    size = config.data.image_size
    image = rng.integers(0, 256, size=(size, size, 3)).astype(np.uint8)
    if config.task == "localization":
        return {"image": image, "objects": {"bbox": np.array([[4, 4, size - 8, size - 4]],
                                                             np.float32),
                                            "label": np.array([1])}}
    if config.task == "pose":
        kp = np.concatenate([rng.uniform(0, size, (17, 2)), np.full((17, 1), 2.0)], 1)
        return {"image": image, "keypoints": kp.astype(np.float32),
                "box": np.array([0, 0, size, size], np.float32)}
    return {"image": image, "segmentation": rng.integers(0, 5, size=(size, size)).astype(
        np.uint8)}


if __name__ == "__main__":
    main()
