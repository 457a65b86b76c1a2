"""Building a TFDS dataset once, however many runs ask for it at the same time.

:func:`prepare` returns a builder whose data is on disk under ``data_dir``, generating it
(``array_record``, no download) when it is not there yet. Generation holds an exclusive lock
(``fcntl.flock`` on ``<data_dir>/<builder>-<config>.lock``): concurrent runs on one machine or
on a shared POSIX file system build it once; the others wait, then read it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
from typing import Any

import tensorflow_datasets as tfds

HASHED = re.compile(r"[0-9a-f]{10}")


def lock_path(data_dir: str, builder_name: str, config_name: str) -> str:
    """The lock file guarding the generation of ``builder_name``/``config_name``."""
    return os.path.join(os.path.expanduser(data_dir), f"{builder_name}-{config_name}.lock")


def earlier_conversions(data_dir: str, builder_name: str, config_name: str) -> list[str]:
    """Other conversions of the same local folder (``<folder>_<10 hex digits>``, the names of
    :func:`jaxdet.data.local_tfds.config_name`) under ``data_dir``, oldest first; [] for
    other names."""
    base, _, digest = config_name.rpartition("_")
    root = os.path.join(os.path.expanduser(data_dir), builder_name)
    if not HASHED.fullmatch(digest) or not os.path.isdir(root):
        return []
    found = [os.path.join(root, d) for d in os.listdir(root) if d != config_name
             and d.rpartition("_")[0] == base and HASHED.fullmatch(d.rpartition("_")[2])]
    return sorted(found, key=os.path.getmtime)


def prepare(builder_cls: type, config: tfds.core.BuilderConfig, data_dir: str) -> Any:
    """``builder_cls`` with ``config`` (a predefined config of the same name when there is
    one) under ``data_dir``, generated under the lock unless already prepared."""
    data_dir = os.path.expanduser(data_dir)
    config = {c.name: c for c in builder_cls.BUILDER_CONFIGS}.get(config.name, config)
    builder = builder_cls(data_dir=data_dir, config=config)
    what = getattr(config, "description", "") or config.name
    if builder.is_prepared():
        logging.info("%s: reusing the conversion in %s (its source files are unchanged)",
                     what, builder.data_dir)
        skipped = builder.info.metadata.get("skipped") if builder.info.metadata else None
        if skipped:
            logging.warning("%s: the conversion reused skipped bad records %s", what,
                            dict(skipped))
        return builder
    os.makedirs(data_dir, exist_ok=True)
    with open(lock_path(data_dir, builder.name, config.name), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        builder = builder_cls(data_dir=data_dir, config=config)
        if not builder.is_prepared():  # not built by a run that held the lock first
            earlier = earlier_conversions(data_dir, builder.name, config.name)
            if earlier:
                logging.warning("%s: converting again into %s: its files or the conversion "
                                "options changed since %s", what, builder.data_dir, earlier[-1])
            builder.download_and_prepare(
                file_format="array_record",
                download_config=tfds.download.DownloadConfig(try_download_gcs=False))
            builder = builder_cls(data_dir=data_dir, config=config)
    return builder
