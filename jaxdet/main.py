r"""Train, evaluate and draw predictions: ``python -m jaxdet.main``.

  python -m jaxdet.main --config=configs/segmentation.py[:variant] --workdir=DIR \
      [--config.some.field=value ...]
  # one process of a multi-process job (every process runs the same command but its id):
  python -m jaxdet.main ... --coordinator_address=HOST:PORT --num_processes=N --process_id=I
  python -m jaxdet.main ... --distributed   # Cloud TPU VM pods etc.: detected by JAX

Overrides of unknown keys or of the wrong type fail before anything runs, naming the key.
The same workdir resumes from the latest checkpoint.
"""

from __future__ import annotations

import os
import sys

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from jaxdet import config_files

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/x.py:arg.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, pictures.")
_MODE = flags.DEFINE_enum(
    "mode", "train", ["train", "eval", "predict"],
    "train: train (resuming) + evaluate + draw predictions; eval: evaluate the latest "
    "checkpoint; predict: draw predictions of the latest checkpoint.",
)
_IMAGES = flags.DEFINE_string(
    "images", None, "--mode=predict on your own images: a folder, a glob or one file (any image "
    "PIL reads, any size); writes records and drawings at each image's size to --output.")
_OUTPUT = flags.DEFINE_string("output", None, "Where --images predictions go (a folder).")
_SKIP_BAD_IMAGES = flags.DEFINE_bool(
    "skip_bad_images", False, "--images: skip unreadable files (listed) instead of stopping.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", os.environ.get("JAXDET_COORDINATOR_ADDRESS", ""),
    "Multi-process job: host:port of process 0 (every process passes the same). Default "
    "$JAXDET_COORDINATOR_ADDRESS; empty: one process (or --distributed).")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", int(os.environ.get("JAXDET_NUM_PROCESSES", "0")),
    "Processes in the job (with --coordinator_address). Default $JAXDET_NUM_PROCESSES.")
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", int(os.environ.get("JAXDET_PROCESS_ID", "-1")),
    "This process's index in the job (with --coordinator_address). Default $JAXDET_PROCESS_ID.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False,
    "Join a multi-process job detected by jax.distributed.initialize() (Cloud TPU VM pods, "
    "SLURM, Open MPI) without --coordinator_address.")
flags.mark_flags_as_required(["config", "workdir"])


def _load_config_file(spec: str) -> ml_collections.ConfigDict:
    try:
        return config_files.load(spec)
    except ValueError as e:
        raise flags.IllegalFlagValueError(str(e)) from e


def unknown_override_keys(argv: list[str]) -> list[str]:
    """``--config.a.b=v`` overrides in ``argv`` whose key ``a.b`` the config does not have."""
    spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if spec is None:
        return []
    config = _load_config_file(spec)
    bad = []
    for arg in argv:
        if not arg.startswith("--config."):
            continue
        key = arg[len("--config."):].split("=", 1)[0]
        node = config
        for part in key.split("."):
            if not isinstance(node, ml_collections.ConfigDict) or part not in node:
                bad.append(key)
                break
            node = node[part]
    return bad


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing that names unknown ``--config.*`` keys instead of a traceback."""
    try:
        bad = unknown_override_keys(argv)
        if bad:
            raise flags.IllegalFlagValueError(
                f"config override(s) of key(s) that do not exist in the config: {bad}"
            )
        rest = flags.FLAGS(argv)
        spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
        if spec is not None:
            errors = config_files.element_type_errors(_load_config_file(spec), _CONFIG.value)
            errors += config_files.check_loop_fields(_CONFIG.value)
            if errors:
                raise flags.IllegalFlagValueError("; ".join(errors))
        return rest
    except flags.Error as err:
        sys.stderr.write(f"jaxdet: error: {err}\n")
        sys.exit(2)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    # Orbax and TFDS log every step of their work at INFO; keep the terminal for progress.
    logging.set_verbosity(logging.WARNING)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # Imported here so that `--help` and flag errors do not pay for importing JAX.
    from jaxdet import core, runtime
    from jaxdet.train import sweep

    try:
        runtime.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value,
                                       _PROCESS_ID.value, auto=_DISTRIBUTED.value)
    except ValueError as err:
        raise app.UsageError(str(err)) from None
    config = _CONFIG.value
    workdir = os.path.abspath(os.path.expanduser(_WORKDIR.value))
    runtime.enable_compilation_cache(config.get("compilation_cache_dir") or None)
    try:
        members = sweep.sweep_members(config)
    except ValueError as err:
        raise app.UsageError(str(err)) from None
    if members and _MODE.value != "train":
        raise app.UsageError(
            f"--mode={_MODE.value} evaluates one model: point --workdir at {workdir}/best and "
            "pass the best member's values instead of config.sweep (see best/config.json)"
        )
    try:
        _run_mode(config, workdir, members)
    except (core.UserError, FileNotFoundError) as err:
        _fail(err)


def _fail(err: Exception) -> None:
    """A user-facing error: one line on stderr and exit code 2 (``JAXDET_TRACEBACK=1``: the
    traceback instead)."""
    if os.environ.get("JAXDET_TRACEBACK"):
        raise err
    sys.stderr.write(f"jaxdet: error: {err}\n")
    sys.exit(2)


def _run_mode(config, workdir: str, members: list) -> None:
    """Runs ``--mode`` (train / eval / predict) for ``config`` in ``workdir``."""
    from jaxdet import core, predict
    from jaxdet.train import loop, sweep

    if _MODE.value == "train":
        results = loop.train_and_evaluate(config, workdir)
        if results.get("preempted"):  # SIGTERM: saved at this step; the same command resumes
            print(f"preempted: saved the checkpoint of step {results['step']} in {workdir}; "
                  "rerun the same command to resume")
            return
        print(loop.format_results(results))
        if members:  # draw the best member, saved as a single run in workdir/best
            config = sweep.member_config(config, members[results["best_member"]])
            workdir = os.path.join(workdir, "best")
        path = predict.write_predictions(config, workdir)
        if path:
            print(f"prediction picture: {path}")
    elif _MODE.value == "eval":
        print(loop.format_results(predict.evaluate_checkpoint(config, workdir)))
    elif _IMAGES.value:
        if not _OUTPUT.value:
            raise core.UserError("--images needs --output=DIR")
        done = predict.predict_images(config, workdir, _IMAGES.value,
                                      os.path.abspath(os.path.expanduser(_OUTPUT.value)),
                                      skip_bad_images=_SKIP_BAD_IMAGES.value)
        skipped = f"; skipped {len(done['skipped'])}: {done['skipped']}" if done["skipped"] else ""
        print(f"predicted {done['images']} images into {done['output']}{skipped}")
    else:
        path = predict.write_predictions(config, workdir)
        print(f"prediction picture: {path}" if path else "config.num_prediction_images=0: "
              "nothing drawn")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
