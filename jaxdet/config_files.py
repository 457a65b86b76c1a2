"""Config files (``configs/<name>.py:<arg>``) and flat config sections, outside absl flags.

:func:`load` is ``--config=configs/x.py:arg``; :func:`override` is ``--config.a.b=2.0``
(Python literal, else string); :func:`dataclass_from_section` builds a frozen spec dataclass
from a flat ``config.model``-like section.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import os
import types
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

import ml_collections

T = TypeVar("T")


_MODULES: dict[str, types.ModuleType] = {}


def load_module(config_file: str, name: str) -> types.ModuleType:
    """The Python file ``name`` next to ``config_file`` as a module, loaded once per path (how
    config files import ``configs/common.py``).
    """
    path = os.path.join(os.path.dirname(os.path.abspath(config_file)), name)
    if path not in _MODULES:
        module_spec = importlib.util.spec_from_file_location(
            f"_jaxdet_config_{os.path.splitext(name)[0]}", path)
        if not os.path.isfile(path) or module_spec is None or module_spec.loader is None:
            raise ValueError(f"{config_file}: cannot load {path!r}")
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        _MODULES[path] = module
    return _MODULES[path]


def load(spec: str, overrides: Iterable[str] = ()) -> ml_collections.ConfigDict:
    """``get_config(arg)`` of the file in ``spec`` = ``path[:arg]``, then ``overrides``."""
    path, _, arg = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("_jaxdet_config", path)
    if not os.path.isfile(path) or module_spec is None or module_spec.loader is None:
        raise ValueError(f"--config={spec}: cannot load {path!r}")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    config = module.get_config(arg) if arg else module.get_config()
    for item in overrides:
        override(config, item)
    return config


def override(config: ml_collections.ConfigDict, item: str) -> None:
    """Applies ``"a.b=value"`` to ``config`` (``value`` a Python literal, else a string)."""
    key, sep, value = item.partition("=")
    if not sep:
        raise ValueError(f"override {item!r}: expected key=value")
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
        node = node[part]
    try:
        node[leaf] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        node[leaf] = value


def _frozen(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    return value


def dataclass_from_section(cls: type[T], section: Mapping[str, Any], **fixed: Any) -> T:
    """``cls(**fixed, **{f: section[f]})`` for the dataclass fields of ``cls`` in ``section``
    and not in ``fixed``; other keys ignored; sequences become (nested) tuples (hashable).
    """
    kwargs = {
        f.name: _frozen(section[f.name])
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        if f.name in section and f.name not in fixed
    }
    return cls(**fixed, **kwargs)
