"""Converted weights (``python -m jaxdet.convert``): save, load, merge into variables.

A weights directory holds ``variables.msgpack`` (``{"params": ..., "batch_stats": ...}`` in
jaxdet's layout) and ``conversion.json`` (provenance). ``config.init_from`` names one.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

import flax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

log = logging.getLogger(__name__)

VARIABLES_FILE = "variables.msgpack"
REPORT_FILE = "conversion.json"
COLLECTIONS = ("params", "batch_stats")


def save_variables(directory: str, variables: Mapping[str, Any], info: Mapping[str, Any]) -> str:
    """Write ``directory/variables.msgpack`` and ``conversion.json``; return ``directory``."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, VARIABLES_FILE), "wb") as f:
        f.write(flax.serialization.msgpack_serialize(dict(variables)))
    with open(os.path.join(directory, REPORT_FILE), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=1, default=str)
    return directory


def load_variables(path: str) -> dict[str, Any]:
    """A converted file (the ``--output`` directory or its ``variables.msgpack``) ->
    ``{"params": ..., "batch_stats": ...}`` nested dicts of NumPy arrays."""
    path = os.path.expanduser(path)
    if os.path.isdir(path):
        path = os.path.join(path, VARIABLES_FILE)
    with open(path, "rb") as f:
        return flax.serialization.msgpack_restore(f.read())


def merge_variables(
    variables: Mapping[str, Any], loaded: Mapping[str, Any]
) -> tuple[dict[str, Any], int, list[str]]:
    """``variables`` with every leaf of ``loaded`` put in its place (in the leaf's dtype).

    Every loaded leaf must exist (same collection, path, shape), else ValueError naming all
    offenders (convert with ``--exclude`` to keep e.g. a class-specific head initialised). Returns
    ``(merged, number of leaves loaded, "collection/path" of leaves kept as initialised)``.
    """
    flat = traverse_util.flatten_dict(dict(variables))
    new = traverse_util.flatten_dict(dict(loaded))
    bad = []
    for path, value in new.items():
        if path not in flat:
            bad.append(f"{'/'.join(path)}: not in the model")
        elif tuple(np.shape(value)) != tuple(flat[path].shape):
            bad.append(f"{'/'.join(path)}: {np.shape(value)} vs the model's {flat[path].shape}")
    if bad:
        raise ValueError(f"{len(bad)} loaded arrays do not fit the model: " + "; ".join(bad))
    kept = ["/".join(p) for p in flat if p not in new]
    merged = {p: (jnp.asarray(new[p], flat[p].dtype) if p in new else v) for p, v in flat.items()}
    return traverse_util.unflatten_dict(merged), len(new), kept


def init_from(variables: Mapping[str, Any], path: str) -> dict[str, Any]:
    """``config.init_from``: :func:`merge_variables` of the converted file at ``path``."""
    merged, n, kept = merge_variables(variables, load_variables(path))
    log.info("init_from %s: %d arrays loaded, %d kept as initialised%s", path, n, len(kept),
             f" (e.g. {kept[:3]})" if kept else "")
    return merged
