"""Metric writing: TensorBoard event files (tensorboardX, no TensorFlow) plus a JSON-lines file
in the workdir."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np


class JsonlWriter:
    """Appends one JSON object per ``write_scalars`` call: ``{"step": s, "name": value, ...}``."""

    def __init__(self, path: str):
        self.path = path
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        row = {"step": int(step)}
        row.update({k: float(np.asarray(v)) for k, v in scalars.items()})
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()  # readable while the run goes on (sweeps, tail -f)

    def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
        del step, images  # pictures go to TensorBoard and the workdir's PNGs only

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class TensorBoardWriter:
    """TensorBoard event files under ``logdir``: scalars and ``[H, W, 3]`` uint8 images."""

    def __init__(self, logdir: str):
        from tensorboardX import SummaryWriter  # imported here: only process 0 writes

        self._writer = SummaryWriter(logdir)

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        for name, value in scalars.items():
            self._writer.add_scalar(name, float(np.asarray(value)), int(step))

    def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
        for name, image in images.items():
            self._writer.add_image(name, np.asarray(image, np.uint8), int(step),
                                   dataformats="HWC")

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class MultiWriter:
    """Forwards every call to each of ``writers`` (none: a no-op, e.g. on processes > 0)."""

    def __init__(self, writers: list[Any]):
        self.writers = list(writers)

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        for writer in self.writers:
            writer.write_scalars(step, scalars)

    def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
        for writer in self.writers:
            writer.write_images(step, images)

    def flush(self) -> None:
        for writer in self.writers:
            writer.flush()

    def close(self) -> None:
        for writer in self.writers:
            writer.close()


def forget_rows_after(path: str, step: int, reevaluated: bool) -> int:
    """Drops the rows of ``path`` (``metrics.jsonl``) that a run resumed at ``step`` writes
    again: every row after ``step``, and with ``reevaluated`` (the run ends at ``step`` and
    evaluates it again) the ``eval/`` rows at ``step``, and lines a killed run cut short.
    Rewrites the file atomically; returns how many lines it dropped (0 without a file)."""
    if not os.path.isfile(path):
        return 0
    rows, cut_short = [], 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except ValueError:  # a line cut short by a killed run
                cut_short += 1

    def again(row: Mapping[str, Any]) -> bool:
        at = row.get("step")
        if at is None:
            return False
        return at > step or (reevaluated and at == step
                             and any(k.startswith("eval/") for k in row))

    kept = [row for row in rows if not again(row)]
    if len(kept) != len(rows) or cut_short:
        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(row) + "\n" for row in kept)
        os.replace(tmp, path)
    return len(rows) - len(kept) + cut_short


def create_writer(workdir: str) -> MultiWriter:
    """TensorBoard events under ``workdir`` and ``workdir/metrics.jsonl`` (process 0 only)."""
    if jax.process_index() != 0:
        return MultiWriter([])
    return MultiWriter([TensorBoardWriter(workdir),
                        JsonlWriter(os.path.join(workdir, "metrics.jsonl"))])


def read_jsonl(path: str) -> list[dict[str, Any]]:
    """Rows written by :class:`JsonlWriter` (for sweeps and tests)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
