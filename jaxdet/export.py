r"""Export a trained model's prediction on images as a serialized ``jax.export`` program.

  python -m jaxdet.export --config=configs/mask_rcnn_shapes.py --workdir=WORKDIR \
      --output=DIR [--batch_size=N]

writes ``DIR/predict.jaxexport`` (StableHLO, lowered for CPU and, where the lowering succeeds,
CUDA and TPU), ``DIR/weights.npz`` (the program's first argument: the flattened weights, in
order) and ``DIR/metadata.json`` (task, padded input size and
resize rule, class names and dataset category ids, batch size, platforms, output layout).
Then, with neither the config file nor a Flax module::

  from jaxdet.export import load
  predictor = load(DIR)
  results = predictor(image)  # uint8 [H, W, 3], any size

returns exactly what ``--mode=predict --images=...`` writes for that image: detection /
localisation / pose records (:func:`jaxdet.tasks.on_images.image_results`, without
``file_name``), or the segmentation label map ``[H, W]`` uint8.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags
from jax import export as jax_export
from ml_collections import config_flags

from jaxdet import core, tasks
from jaxdet import predict as predict_lib
from jaxdet.tasks import on_images
from jaxdet.train import loop as loop_lib
from jaxdet.train import step as step_lib

PROGRAM_FILE = "predict.jaxexport"
WEIGHTS_FILE = "weights.npz"
METADATA_FILE = "metadata.json"
PLATFORMS = ("cpu", "cuda", "tpu")


def _program(model: Any, config: ml_collections.ConfigDict, treedef: Any):
    predict = on_images.make_batch_predict_fn(model, config)

    def program(weights: list[jax.Array], image: jax.Array, image_hw: jax.Array,
                orig_hw: jax.Array, mask: jax.Array) -> dict:
        params, batch_stats = jax.tree.unflatten(treedef, weights)
        batch = {"image": image, "image_hw": image_hw, "orig_hw": orig_hw, "mask": mask,
                 "index": jnp.arange(image.shape[0], dtype=jnp.int32)}
        return predict(params, batch_stats, batch)

    return program


def export_model(config: ml_collections.ConfigDict, workdir: str, output: str,
                 batch_size: int = 0) -> dict[str, Any]:
    """Exports the latest checkpoint of ``workdir`` for batches of ``batch_size`` images (0:
    ``config.eval_batch_size``, the batch ``--mode=predict`` uses); returns the metadata."""
    batch_size = int(batch_size or config.get("eval_batch_size", 1))
    if batch_size < 1:
        raise core.ConfigError(f"--batch_size={batch_size}: expected an integer >= 1")
    task = tasks.get_task(config.task)
    train_source, _ = loop_lib.split_sources(task, config)
    state = jax.device_get(predict_lib.restore_state(task, config, workdir,
                                                     step_lib.make_mesh(), train_source))
    model = task.create_model(config, bn_axis_name=None)
    weights, treedef = jax.tree.flatten((state.params, state.batch_stats))
    program = jax.jit(_program(model, config, treedef))
    height, width = on_images.input_size(config)
    specs = ([jax.ShapeDtypeStruct(np.shape(w), np.asarray(w).dtype) for w in weights],
             jax.ShapeDtypeStruct((batch_size, height, width, 3), jnp.uint8),
             jax.ShapeDtypeStruct((batch_size, 2), jnp.int32),
             jax.ShapeDtypeStruct((batch_size, 2), jnp.int32),
             jax.ShapeDtypeStruct((batch_size,), jnp.float32))
    try:
        exported = jax_export.export(program, platforms=PLATFORMS)(*specs)
    except Exception:  # noqa: BLE001 - an op without a lowering for some platform: CPU only
        exported = jax_export.export(program, platforms=("cpu",))(*specs)
    names, category_ids = on_images.label_names_and_ids(task, config)
    outputs = jax.eval_shape(program, *specs)
    metadata = {
        "task": config.task,
        "input": {"size": [height, width], "dtype": "uint8 RGB, 0-255 (normalised inside)",
                  "resize_short": int(config.data.get("resize_short", 0) or 0),
                  "resize_max": int(config.data.get("resize_max", 0) or 0)},
        "batch_size": batch_size,
        "class_names": names,
        "category_ids": category_ids,
        # the R-CNN branch sections the drawing reads (a config.model subset)
        "model": {k: config.model[k].to_dict() for k in ("mask", "keypoint")
                  if k in config.model},
        "draw_score_threshold": float(config.get("draw_score_threshold", 0.5)),
        "platforms": list(exported.platforms),
        "outputs": {k: [list(v.shape), str(v.dtype)] for k, v in outputs.items()},
    }
    os.makedirs(output, exist_ok=True)
    with open(os.path.join(output, PROGRAM_FILE), "wb") as f:
        f.write(exported.serialize())
    np.savez(os.path.join(output, WEIGHTS_FILE),
             **{f"w{i:05d}": np.asarray(w) for i, w in enumerate(weights)})
    with open(os.path.join(output, METADATA_FILE), "w") as f:
        json.dump(metadata, f, indent=1)
    return metadata


class Predictor:
    """The exported program of a directory written by :func:`export_model`; call it with one
    uint8 ``[H, W, 3]`` image (or :meth:`predict` with several)."""

    def __init__(self, directory: str):
        with open(os.path.join(directory, METADATA_FILE)) as f:
            self.metadata = json.load(f)
        with open(os.path.join(directory, PROGRAM_FILE), "rb") as f:
            self.program = jax_export.deserialize(bytearray(f.read()))
        with np.load(os.path.join(directory, WEIGHTS_FILE)) as stored:
            self.weights = jax.device_put([stored[k] for k in sorted(stored.files)])
        meta = self.metadata
        height, width = meta["input"]["size"]
        self.config = ml_collections.ConfigDict({
            "task": meta["task"], "draw_score_threshold": meta["draw_score_threshold"],
            "model": meta["model"],
            "data": {"pad_sizes": ((height, width),), "image_size": height,
                     "resize_short": meta["input"]["resize_short"],
                     "resize_max": meta["input"]["resize_max"]}})

    def predict(self, images: Sequence[np.ndarray]) -> list[Any]:
        """The results of each image (see the module docstring)."""
        n = int(self.metadata["batch_size"])
        results = []
        for start in range(0, len(images), n):
            chunk = [np.asarray(im, np.uint8) for im in images[start:start + n]]
            fitted = [on_images.fit_image(im, self.config) for im in chunk]
            batch = on_images.stack_batch(fitted, n)
            outputs = jax.device_get(self.program.call(
                self.weights, *(batch[k] for k in ("image", "image_hw", "orig_hw", "mask"))))
            for i, (image, fit) in enumerate(zip(chunk, fitted, strict=True)):
                result, _ = on_images.image_results(
                    image, fit, {k: v[i] for k, v in outputs.items()}, self.config,
                    self.metadata["class_names"], self.metadata["category_ids"], draw=False)
                results.append(result)
        return results

    def __call__(self, image: np.ndarray) -> Any:
        return self.predict([image])[0]


def load(directory: str) -> Predictor:
    """The :class:`Predictor` of an export directory."""
    return Predictor(directory)


_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/x.py:arg.")
_WORKDIR = flags.DEFINE_string("workdir", None, "The trained run's directory.")
_OUTPUT = flags.DEFINE_string("output", None, "Where the exported program goes (a folder).")
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size", 0, "Images per call of the program (0: config.eval_batch_size).")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        meta = export_model(_CONFIG.value, os.path.abspath(os.path.expanduser(_WORKDIR.value)),
                            os.path.abspath(os.path.expanduser(_OUTPUT.value)),
                            _BATCH_SIZE.value)
    except (core.UserError, FileNotFoundError) as err:
        raise app.UsageError(str(err)) from None
    size = os.path.getsize(os.path.join(_OUTPUT.value, PROGRAM_FILE))
    print(f"exported {meta['task']} for {meta['platforms']} to {_OUTPUT.value} "
          f"({size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    flags.mark_flags_as_required(["config", "workdir", "output"])
    app.run(main)
