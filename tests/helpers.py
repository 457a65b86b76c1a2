"""Builders shared by the tests: configs as the launcher loads them, trace counting, the
jit / no-jit variants of a test."""

from __future__ import annotations

import contextlib
import pathlib
from collections.abc import Iterator

import jax
import ml_collections
import pytest

from jaxdet import config_files

REPO = pathlib.Path(__file__).resolve().parents[1]

# jax.monitoring's event for each jit trace (a trace precedes every compilation); the event's
# `fun_name` keyword names the traced function.
JAXPR_TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"


def load_config(name: str, arg: str | None = None) -> ml_collections.ConfigDict:
    """``configs/<name>.py``'s ``get_config(arg)``, as the launcher loads it."""
    return config_files.load(str(REPO / "configs" / f"{name}.py") + (f":{arg}" if arg else ""))


@contextlib.contextmanager
def count_traces(fun_name: str) -> Iterator[list[str]]:
    """A list that collects one entry per ``jax.jit`` trace of a function named ``fun_name``
    while the context is open (public ``jax.monitoring`` events)."""
    traces: list[str] = []

    def listener(event: str, duration: float, **kwargs) -> None:
        del duration
        if event == JAXPR_TRACE_EVENT and kwargs.get("fun_name") == fun_name:
            traces.append(fun_name)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield traces
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def _without_jit(fn):
    """The function itself (chex's ``without_jit`` variant)."""
    return fn


# chex.variants(with_jit=True, without_jit=True) for plain pytest functions: a test that takes
# ``variant`` runs once with ``variant = jax.jit`` and once with the identity.
with_and_without_jit = pytest.mark.parametrize(
    "variant", [jax.jit, _without_jit], ids=["with_jit", "without_jit"]
)
