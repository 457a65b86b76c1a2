"""Prediction pictures, evaluation and prediction on the user's images of a trained checkpoint.

  python -m jaxdet.main --mode=predict --config=configs/segmentation.py --workdir=DIR

writes ``DIR/predictions/NNNN.png`` for the first ``config.num_prediction_images`` validation
images and ``DIR/predictions.png`` with all of them. With ``--images=PATTERN --output=OUT``
(:func:`predict_images`) it predicts on a folder, a glob or one file of any images instead.
"""

from __future__ import annotations

import glob
import json
import logging
import os
from typing import Any

import jax
import ml_collections
import numpy as np
import PIL.Image
import tqdm

from jaxdet import core, tasks, visualize
from jaxdet.tasks import on_images
from jaxdet.train import checkpointing
from jaxdet.train import loop as loop_lib
from jaxdet.train import step as step_lib
from jaxdet.train import workdir as workdir_lib
from jaxdet.train.state import TrainState


def restore_state(task, config, workdir: str, mesh, train_source) -> TrainState:
    """The latest readable checkpoint's train state; else the ``config.init_from`` weights if set,
    else FileNotFoundError.
    """
    directory = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(directory) and not config.get("init_from"):
        raise FileNotFoundError(f"no checkpoints in {workdir} (expected {directory}/ written by "
                                "--mode=train, or config.init_from)")
    example = loop_lib.preprocess_fn(task, config)(train_source[0])
    state = loop_lib.initial_state(task, config, mesh, example)
    ckpt = checkpointing.Checkpointer(directory, save_every=1)
    try:
        restored = ckpt.restore_latest(state)
    finally:
        ckpt.close()
    if restored is None:
        if config.get("init_from"):  # imported weights (jaxdet.convert), not trained here
            return state
        raise FileNotFoundError(f"no readable checkpoint under {workdir}/checkpoints")
    return restored[0]


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Validation metrics of the latest readable checkpoint in ``workdir``, with its ``step``."""
    workdir_lib.check_same_run(config, workdir)
    task = tasks.get_task(config.task)
    mesh = step_lib.make_mesh()
    train_source, eval_source = loop_lib.split_sources(task, config)
    state = restore_state(task, config, workdir, mesh, train_source)
    results = loop_lib.evaluate(task, config, state, eval_source, mesh, results_dir=workdir)
    return {**results, "step": int(np.max(jax.device_get(state.step)))}


def write_predictions(config: ml_collections.ConfigDict, workdir: str) -> str | None:
    """Draws predictions of the latest checkpoint; returns the combined picture's path (None
    with ``config.num_prediction_images=0``: nothing drawn)."""
    workdir_lib.check_same_run(config, workdir)
    if int(config.get("num_prediction_images", 8)) <= 0:
        return None
    task = tasks.get_task(config.task)
    mesh = step_lib.make_mesh()
    train_source, eval_source = loop_lib.split_sources(task, config)
    state = restore_state(task, config, workdir, mesh, train_source)
    pictures = loop_lib.prediction_pictures(task, config, state, eval_source,
                                            int(config.get("num_prediction_images", 8)))
    path = os.path.join(workdir, "predictions.png")
    if jax.process_index() != 0:  # every process restores (a collective); one writes
        return path
    out_dir = os.path.join(workdir, "predictions")
    os.makedirs(out_dir, exist_ok=True)
    for i, picture in enumerate(pictures):
        picture.save(os.path.join(out_dir, f"{i:04d}.png"))
    visualize.stack_vertically(pictures).save(path)
    return path


#: Extensions :func:`find_images` takes from a folder (any file PIL reads is taken when named).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
RECORDS_FILE = "predictions.json"


def find_images(pattern: str) -> list[str]:
    """The images of ``pattern``: a folder (its image files, sorted), a glob, or one file;
    :class:`~jaxdet.core.UserError` when nothing matches."""
    pattern = os.path.expanduser(pattern)
    if os.path.isdir(pattern):
        files = [os.path.join(pattern, f) for f in sorted(os.listdir(pattern))
                 if f.lower().endswith(IMAGE_EXTENSIONS)]
    elif os.path.isfile(pattern):
        files = [pattern]
    else:
        files = sorted(f for f in glob.glob(pattern) if os.path.isfile(f))
    if not files:
        raise core.UserError(f"--images={pattern}: no image files there")
    return files


def load_image(path: str) -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB of any image PIL reads (grey, palette, RGBA: converted);
    :class:`~jaxdet.core.UserError` naming the file otherwise."""
    try:
        with PIL.Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except Exception as err:  # noqa: BLE001 - PIL raises several types for bad files
        raise core.UserError(f"{path}: not a readable image ({type(err).__name__}: {err})"
                             ) from None


def _output_names(files: list[str]) -> list[str]:
    """A unique output stem per input file (its stem; ``stem_N`` when two share one)."""
    seen: dict[str, int] = {}
    out = []
    for f in files:
        stem = os.path.splitext(os.path.basename(f))[0]
        seen[stem] = seen.get(stem, 0) + 1
        out.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
    return out


def predict_images(config: ml_collections.ConfigDict, workdir: str, pattern: str, output: str,
                   skip_bad_images: bool = False) -> dict[str, Any]:
    """Predicts on the images of ``pattern`` with the latest checkpoint in ``workdir`` and writes
    under ``output``: detection, localisation, pose: ``predictions.json`` (records of
    :func:`jaxdet.tasks.on_images.image_results` with ``file_name``) and ``<stem>.png`` drawings;
    segmentation: ``<stem>.png`` (palette PNG of class indices), ``<stem>_overlay.png`` and
    ``classes.json``. Every output is at the image's original size. Images go through the model
    ``config.eval_batch_size`` at a time (the last batch padded: one compiled program). Returns
    ``{"images": n, "skipped": [files], "output": output}``.
    """
    workdir_lib.check_same_run(config, workdir)
    files = find_images(pattern)
    task = tasks.get_task(config.task)
    mesh = step_lib.make_mesh()
    train_source, _ = loop_lib.split_sources(task, config)
    state = jax.device_get(restore_state(task, config, workdir, mesh, train_source))
    model = task.create_model(config, bn_axis_name=None)
    predict_fn = jax.jit(on_images.make_batch_predict_fn(model, config))
    names, category_ids = on_images.label_names_and_ids(task, config)
    os.makedirs(output, exist_ok=True)
    batch_size = max(1, int(config.get("eval_batch_size", 1)))
    stems = _output_names(files)
    records, skipped, done = [], [], 0
    bar = tqdm.tqdm(total=len(files), desc="predict", unit="image",
                    disable=not config.get("progress_bar", True))
    for start in range(0, len(files), batch_size):
        chunk = []
        for path, stem in zip(files[start:start + batch_size], stems[start:start + batch_size],
                              strict=True):
            try:
                image = load_image(path)
            except core.UserError as err:
                if not skip_bad_images:
                    raise
                logging.warning("skipping %s", err)
                skipped.append(path)
                bar.update(1)
                continue
            chunk.append((path, stem, image, on_images.fit_image(image, config)))
        if not chunk:
            continue
        batch = on_images.stack_batch([c[3] for c in chunk], batch_size)
        outputs = jax.device_get(predict_fn(state.params, state.batch_stats, batch))
        for i, (path, stem, image, fitted) in enumerate(chunk):
            result, picture = on_images.image_results(
                image, fitted, {k: v[i] for k, v in outputs.items()}, config, names,
                category_ids)
            if config.task == "segmentation":
                label_png = PIL.Image.frombytes("P", result.shape[::-1], result.tobytes())
                label_png.putpalette(visualize.PALETTE.astype(np.uint8).reshape(-1).tolist())
                label_png.save(os.path.join(output, f"{stem}.png"))
                picture.save(os.path.join(output, f"{stem}_overlay.png"))
            else:
                records += [{"file_name": os.path.basename(path), **r} for r in result]
                picture.save(os.path.join(output, f"{stem}.png"))
            done += 1
            bar.update(1)
    bar.close()
    if config.task == "segmentation":
        classes = [{"index": i, "name": n,
                    "color": visualize.PALETTE[i % len(visualize.PALETTE)].tolist()}
                   for i, n in enumerate(names)]
        with open(os.path.join(output, "classes.json"), "w") as f:
            json.dump(classes, f, indent=1)
    else:
        with open(os.path.join(output, RECORDS_FILE), "w") as f:
            json.dump(records, f)
    return {"images": done, "skipped": skipped, "output": output}
