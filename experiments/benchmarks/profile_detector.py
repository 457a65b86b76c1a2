"""Where jaxdet's detector spends its time: one train step or one inference batch, traced with
``jax.profiler``, each XLA operation's time summed by the model scope that emitted it.

  python experiments/benchmarks/profile_detector.py [--mode=train|predict] [--scope_depth=3]
      [--top=25] [--trace_dir=DIR] [the detector arguments of vs_torchvision.py: --model=faster|mask
      --depth --batch --image_size --precision --mask_rois ...]

Same detector, settings and random batch as ``vs_torchvision.py`` (its ``jaxdet_side``). The
program is compiled once, runs 3 times (warm-up), then 3 timed runs, then one traced run. Each
traced XLA operation (``hlo_op``) is mapped to the JAX name stack in the compiled program's
metadata (``jit(...)`` frames dropped) and cut to ``--scope_depth`` names, e.g.
``FasterRCNN/FasterRCNN._box_head/roi_heads``. Prints the scopes by total time, each with its
three longest operations. On CPU, XLA's own (non-XNNPACK) dots run asynchronously: the
trace shows only their launch, and the operations running beside them look longer.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from experiments.benchmarks.vs_torchvision import (  # noqa: E402
    add_model_arguments,
    jaxdet_side,
)

_OP_NAME = re.compile(r'^\s*(?:ROOT )?%?([\w.\-]+) = .*?metadata=\{op_name="([^"]*)"')


def op_scopes(hlo_text: str) -> dict[str, str]:
    """``{hlo op name: JAX name stack}`` of a compiled program's text (``jit(...)`` frames
    dropped)."""
    scopes = {}
    for line in hlo_text.splitlines():
        m = _OP_NAME.match(line)
        if m and m.group(1) not in scopes:
            frames = [f for f in m.group(2).split("/") if not f.startswith("jit(")]
            scopes[m.group(1)] = "/".join(frames)
    return scopes


def op_times(trace_dir: str, module_prefix: str) -> collections.Counter:
    """Microseconds per HLO op of the modules named ``module_prefix*`` in the trace."""
    files = glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True)
    if not files:
        raise SystemExit(f"no trace written under {trace_dir}")
    with gzip.open(max(files, key=os.path.getmtime)) as f:
        events = json.load(f)["traceEvents"]
    times: collections.Counter = collections.Counter()
    for e in events:
        args = e.get("args", {})
        if e.get("ph") == "X" and str(args.get("hlo_module", "")).startswith(module_prefix):
            times[args.get("hlo_op", e["name"])] += e.get("dur", 0)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_arguments(p)
    p.add_argument("--mode", choices=["train", "predict"], default="train")
    p.add_argument("--scope_depth", type=int, default=3)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--trace_dir", default="", help="keep the trace here (default: a temp dir)")
    args = p.parse_args()

    import jax

    side = jaxdet_side(args)
    # Compiled once, ahead of time: the same executable gives the op names and runs.
    if args.mode == "train":
        compiled = side.train_step.jitted.lower(side.state, side.sharded).compile()
        holder = [side.state]

        def run():
            holder[0], metrics = compiled(holder[0], side.sharded)
            jax.block_until_ready(metrics["loss"])
    else:
        call_args = (side.state.params, side.state.batch_stats, side.plain)
        compiled = side.predict.lower(*call_args).compile()

        def run():
            jax.block_until_ready(compiled(*call_args))

    scopes = op_scopes(compiled.as_text())
    for _ in range(3):
        run()
    seconds = []
    for _ in range(3):
        t = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - t)
    trace_dir = args.trace_dir or tempfile.mkdtemp(prefix="jaxdet_profile_")
    with jax.profiler.trace(trace_dir):
        run()
    times = op_times(trace_dir, "jit_")
    by_scope: collections.Counter = collections.Counter()
    ops_of: dict[str, list[tuple[int, str]]] = collections.defaultdict(list)
    for op, us in times.items():
        if op not in scopes:
            continue  # runtime events (thunk executor, copies to host) and ops without metadata
        scope = "/".join(scopes[op].split("/")[:args.scope_depth]) or "(no scope)"
        by_scope[scope] += us
        ops_of[scope].append((us, op))
    total = sum(by_scope.values())
    print(f"{args.mode} of {args.model} R{args.depth}-FPN, batch {args.batch} at "
          f"{args.image_size}², {args.precision}: {', '.join(f'{s:.3f}' for s in seconds)} s "
          f"per call; traced ops sum to {total / 1e6:.3f} s (trace: {trace_dir})")
    for scope, us in by_scope.most_common(args.top):
        longest = ", ".join(f"{op} {t / 1e3:.0f}" for t, op in sorted(ops_of[scope])[::-1][:3])
        print(f"{us / 1e3:9.1f} ms  {us / total:5.1%}  {scope}  [{longest}]")


if __name__ == "__main__":
    main()
