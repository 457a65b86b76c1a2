"""Sweep config fields by launching one ``jaxdet.main`` run per value (or grid point).

  python experiments/sweeps/sweep.py --config=configs/localization.py \
      --root=workdirs/sweeps/box_weight --param=loss.box_weight=0.3,1,3,10,30 \
      [--param=loss.box_loss=l1,smooth_l1] [--parallel=2] [--metric=correct_and_iou50] \
      [-- --config.num_train_steps=500 ...]

Each grid point runs ``python -m jaxdet.main --config=CONFIG --workdir=ROOT/<point>
--config.<field>=<value> ... [extra overrides]`` (one after another, or ``--parallel`` at a
time). A point whose workdir already holds ``eval_results.json`` is not rerun (delete it or
pass ``--force``); an interrupted run resumes from its checkpoint. Then every run's final
validation metrics and validation loss terms are collected into a table (printed, and written
to ``ROOT/results.md`` and ``ROOT/results.json``) and the best run is named **by the validation
metric** (default: the task's ``PRIMARY_METRIC``), never by a loss value: the total loss is a
weighted sum whose scale changes with the weights being swept.

For a sweep trained by one compiled program instead (``--config.sweep.box_weight='(...)'``,
see jaxdet.train.sweep), the same table is made from that run's workdir:

  python experiments/sweeps/sweep.py --one_program=workdirs/loc_sweep
"""

from __future__ import annotations

import argparse
import concurrent.futures
import itertools
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_param(spec: str) -> tuple[str, list[str]]:
    """``loss.box_weight=0.3,1,3`` -> ``("loss.box_weight", ["0.3", "1", "3"])``."""
    field, sep, values = spec.partition("=")
    items = [v.strip() for v in values.split(",") if v.strip()]
    if not sep or not field or not items:
        raise argparse.ArgumentTypeError(
            f"--param={spec!r}: expected FIELD=V1,V2,... e.g. loss.box_weight=0.3,1,3"
        )
    return field, items


def grid(params: list[tuple[str, list[str]]]) -> list[dict[str, str]]:
    """Cartesian product of the parameters, in the order given."""
    fields = [f for f, _ in params]
    return [dict(zip(fields, combo, strict=True)) for combo in itertools.product(
        *(values for _, values in params))]


def point_name(point: dict[str, str]) -> str:
    return ",".join(f"{field.rsplit('.', 1)[-1]}={value}" for field, value in point.items())


def run_point(config: str, workdir: str, point: dict[str, str], extra: list[str],
              force: bool) -> int:
    """Runs (or skips, when finished before) one grid point; returns its exit status."""
    if not force and os.path.exists(os.path.join(workdir, "eval_results.json")):
        return 0
    os.makedirs(workdir, exist_ok=True)
    cmd = [sys.executable, "-m", "jaxdet.main", f"--config={config}", f"--workdir={workdir}",
           "--config.progress_bar=False"]
    cmd += [f"--config.{field}={value}" for field, value in point.items()] + extra
    with open(os.path.join(workdir, "sweep_run.log"), "w") as log:
        log.write(" ".join(cmd) + "\n")
        log.flush()
        return subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT).returncode


def last_train_metrics(workdir: str) -> dict[str, float]:
    """The last ``train/*`` row of the run's metrics.jsonl (empty if none)."""
    path = os.path.join(workdir, "metrics.jsonl")
    last: dict[str, float] = {}
    if os.path.exists(path):
        for line in open(path, encoding="utf-8"):
            row = json.loads(line)
            if any(k.startswith("train/") for k in row):
                last = row
    return last


def primary_metric(workdir: str) -> str:
    """The task's PRIMARY_METRIC, read from the run's config.json."""
    sys.path.insert(0, REPO)
    from jaxdet import tasks

    task = json.load(open(os.path.join(workdir, "config.json"), encoding="utf-8"))["task"]
    return getattr(tasks.get_task(task), "PRIMARY_METRIC", "mean_iou")


def collect(root: str, points: list[dict[str, str]], metric: str | None) -> dict:
    """Rows of (point, validation loss terms, total, train loss, metric) and the best row."""
    rows = []
    for point in points:
        workdir = os.path.join(root, point_name(point))
        path = os.path.join(workdir, "eval_results.json")
        if not os.path.exists(path):
            rows.append({"point": point, "name": point_name(point), "failed": True})
            continue
        results = json.load(open(path, encoding="utf-8"))
        metric = metric or primary_metric(workdir)
        train = last_train_metrics(workdir)
        rows.append({
            "point": point, "name": point_name(point), "failed": False,
            "val_loss": {k.split("/", 1)[1]: v for k, v in results.items()
                         if k.startswith("val_loss/")},
            "train_loss": train.get("train/loss"),
            "metric": results.get(metric),
            "results": results,
        })
    done = [r for r in rows if not r["failed"] and r["metric"] is not None]
    best = max(done, key=lambda r: r["metric"]) if done else None
    return {"metric": metric, "rows": rows, "best": best["name"] if best else None}


def collect_one_program(workdir: str) -> dict:
    """The rows of a one-program sweep, from its ``eval_results.json`` (``members``)."""
    results = json.load(open(os.path.join(workdir, "eval_results.json"), encoding="utf-8"))
    metric = results["selected_by"]
    train = last_train_metrics(workdir)
    rows = []
    for member in results["members"]:
        name = member["name"]
        rows.append({
            "point": {path: f"{value:g}" for path, value in member["values"].items()},
            "name": name, "failed": bool(member.get("failed")),
            "val_loss": {k.split("/", 1)[1]: v for k, v in member.items()
                         if k.startswith("val_loss/")},
            "train_loss": train.get(f"train/{name}/loss"),
            "metric": member.get(metric),
        })
    return {"metric": metric, "rows": rows, "best": results["best"]}


def table(summary: dict) -> str:
    """A markdown table: one row per run, the best run marked."""
    rows = summary["rows"]
    fields = list(rows[0]["point"]) if rows else []
    terms = sorted({t for r in rows if not r["failed"] for t in r["val_loss"]})
    header = [*(f.rsplit(".", 1)[-1] for f in fields), *(f"val {t}" for t in terms),
              "train loss (weighted)", f"val {summary['metric']}", ""]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [r["point"][f] for f in fields]
        if r["failed"]:
            cells += ["failed"] + [""] * (len(header) - len(cells) - 1)
        else:
            cells += [f"{r['val_loss'].get(t, float('nan')):.4f}" for t in terms]
            cells += [f"{r['train_loss']:.4f}" if r["train_loss"] is not None else "",
                      f"{r['metric']:.4f}", "**best**" if r["name"] == summary["best"] else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:
        extra = argv[argv.index("--") + 1:]
        argv = argv[:argv.index("--")]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one_program", default="",
                        help="workdir of a config.sweep run: print and write its table only")
    parser.add_argument("--config", help="configs/<name>.py[:arg]")
    parser.add_argument("--root", help="parent directory of the runs' workdirs")
    parser.add_argument("--param", action="append", type=parse_param,
                        help="FIELD=V1,V2,... (repeat for a grid)")
    parser.add_argument("--parallel", type=int, default=1, help="runs at a time")
    parser.add_argument("--metric", default=None, help="validation metric (higher is better)")
    parser.add_argument("--force", action="store_true", help="rerun finished points")
    args = parser.parse_args(argv)
    if args.one_program:
        summary = collect_one_program(args.one_program)
        _report(summary, args.one_program)
        return 0
    if not (args.config and args.root and args.param):
        parser.error("--config, --root and --param are required (or --one_program=WORKDIR)")

    points = grid(args.param)
    root = os.path.abspath(args.root)
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(args.parallel, 1)) as pool:
        codes = list(pool.map(
            lambda p: run_point(args.config, os.path.join(root, point_name(p)), p, extra,
                                args.force),
            points,
        ))
    summary = collect(root, points, args.metric)
    _report({**summary, "exit_codes": codes}, root)
    return 0 if all(c == 0 for c in codes) else 1


def _report(summary: dict, directory: str) -> None:
    """Prints the table and writes ``results.md`` and ``results.json`` into ``directory``."""
    text = table(summary)
    print(text)
    print(f"best by validation {summary['metric']}: {summary['best']}")
    with open(os.path.join(directory, "results.md"), "w", encoding="utf-8") as f:
        f.write(text + f"\n\nBest by validation {summary['metric']}: {summary['best']}\n")
    with open(os.path.join(directory, "results.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2, default=str)


if __name__ == "__main__":
    sys.exit(main())
