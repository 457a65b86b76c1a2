"""Config files (``configs/<name>.py:<arg>``) and flat config sections, outside absl flags.

:func:`load` is ``--config=configs/x.py:arg``; :func:`override` is ``--config.a.b=2.0``
(Python literal, else string); :func:`dataclass_from_section` builds a frozen spec dataclass
from a flat ``config.model``-like section, :func:`spec_from_section` from one nested section
(``config.model.rpn``) that may hold nothing else.
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

from jaxdet.core import ConfigError

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


def spec_from_section(cls: type[T], section: Mapping[str, Any] | None, name: str) -> T:
    """``cls(**section)`` for the nested config section ``name`` (e.g. ``"model.rpn"``; None or
    absent: ``cls()``); sequences become tuples. Raises :class:`~jaxdet.core.ConfigError` naming
    ``name.key`` for a key that is not a field of ``cls``.
    """
    section = dict(section or {})
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(section) - known)
    if unknown:
        raise ConfigError(f"config.{name}.{unknown[0]}: not a field of {name} (expected one of "
                          f"{sorted(known)})")
    return cls(**{k: _frozen(v) for k, v in section.items()})


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


#: Loop fields that must be integers >= 1 (``eval_every_steps``, ``eval_limit`` and the picture
#: counts may also be 0: none); checked by :func:`check_loop_fields`.
POSITIVE_INT_FIELDS = ("num_train_steps", "batch_size", "eval_batch_size", "log_every_steps",
                       "checkpoint_every_steps", "keep_checkpoints")


def check_loop_fields(config: ml_collections.ConfigDict) -> list[str]:
    """One message per loop field of ``config`` out of range (``config.x=v: expected ...``)."""
    errors = []
    for field in POSITIVE_INT_FIELDS + ("eval_every_steps", "eval_limit",
                                        "num_prediction_images", "tensorboard_images"):
        if field not in config:
            continue
        value, low = config[field], 1 if field in POSITIVE_INT_FIELDS else 0
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            errors.append(f"config.{field}={value!r}: expected an integer >= {low}")
    return errors


def _kind(value: Any) -> str | None:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, (tuple, list)):
        return "tuple"
    return None


def _fits(template: Any, value: Any) -> bool:
    """Whether ``value`` has the element kinds of the non-empty sequence ``template``."""
    kinds = {_kind(t) for t in template}
    if len(kinds) != 1 or None in kinds:
        return True  # a mixed default says nothing about the element type
    kind = kinds.pop()
    for v in value:
        got = _kind(v)
        if (kind == "float" and got == "int") or (
                kind == "int" and got == "float" and float(v).is_integer()):
            continue  # numbers of the other kind that mean the same
        if got != kind or (kind == "tuple" and template[0] and not _fits(template[0], v)):
            return False
    return True


def element_type_errors(defaults: ml_collections.ConfigDict, config: ml_collections.ConfigDict,
                        prefix: str = "config") -> list[str]:
    """One message per tuple field of ``config`` whose elements are not of the kind its value in
    ``defaults`` has (e.g. ``model.widths=(8.5, 16)`` where the default is ``(8, 16)``)."""
    errors = []
    for key, default in defaults.items():
        if key not in config:
            continue
        value, name = config[key], f"{prefix}.{key}"
        if isinstance(default, ml_collections.ConfigDict):
            if isinstance(value, ml_collections.ConfigDict):
                errors += element_type_errors(default, value, name)
        elif isinstance(default, (tuple, list)) and default and value is not None:
            if not isinstance(value, (tuple, list)) or not _fits(default, value):
                errors.append(f"{name}={value!r}: expected a tuple like the default "
                              f"{tuple(default)!r}")
    return errors
