"""A guard against recompilation: every compiled step should compile once per run.

:class:`CompilationGuard` counts each step's compilations (JAX traces, :class:`CountedStep`)
and, when a step compiles again after its warm-up (the train step: its first ``after_steps``
steps; others: their first call), acts by policy: ``"warn"`` (default, names step, step number
and count), ``"fail"`` (:class:`RecompilationError`) or ``"off"`` (count only).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from jaxdet.core import ConfigError

log = logging.getLogger(__name__)

POLICIES = ("warn", "fail", "off")


class RecompilationError(RuntimeError):
    """A compiled step compiled again after its warm-up (``recompile_policy="fail"``)."""


class TraceCounter:
    """``fn`` counting its calls; under ``jax.jit``, ``count`` = the times JAX traced it (one per
    input shape / dtype signature; a recompilation without a new trace is not counted)."""

    def __init__(self, fn: Callable):
        self.fn = fn
        self.count = 0
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.count += 1
        return self.fn(*args, **kwargs)


class CountedStep:
    """A compiled step (``jax.jit(wrap(TraceCounter(body)))``) that knows its compilations."""

    def __init__(self, jitted: Callable, counter: TraceCounter):
        self.jitted = jitted
        self.counter = counter

    def __call__(self, *args: Any) -> Any:
        return self.jitted(*args)

    @property
    def compilations(self) -> int:
        return self.counter.count


def count_compilations(body: Callable, wrap: Callable[[Callable], Callable]) -> CountedStep:
    """``CountedStep`` of ``wrap(body)`` with the traces of ``body`` counted; ``wrap`` must
    return the jitted function (e.g. ``lambda f: jax.jit(jax.shard_map(f, ...))``)."""
    counter = TraceCounter(body)
    return CountedStep(wrap(counter), counter)


def compilations(fn: Any) -> int:
    """Compilations of a :class:`CountedStep` (0 for other callables)."""
    return int(getattr(fn, "compilations", 0))


class CompilationGuard:
    def __init__(self, policy: str = "warn", after_steps: int = 1):
        if policy not in POLICIES:
            raise ConfigError(f"config.recompile_policy={policy!r}; expected one of {POLICIES}")
        self.policy = policy
        self.after_steps = int(after_steps)
        self._warm: dict[str, int] = {}  # name -> compilations at the end of its warm-up
        self.counts: dict[str, int] = {}

    def check(self, name: str, fn: Any, step: int, warm: bool = True) -> int:
        """Call after ``fn`` ran at train step ``step``; ``warm``: its warm-up is over (e.g.
        the train step past ``after_steps``). Returns its compilation count."""
        count = compilations(fn)
        self.counts[name] = count
        if name not in self._warm:
            if warm:
                self._warm[name] = count
            return count
        if count > self._warm[name]:
            message = (f"{name} compiled again at step {step} ({count} compilations, "
                       f"{self._warm[name]} after warm-up): an input shape or dtype changed")
            self._warm[name] = count
            if self.policy == "fail":
                raise RecompilationError(message)
            if self.policy == "warn":
                log.warning(message)
        return count

    def check_train(self, fn: Any, step: int, start: int = 0) -> int:
        """:meth:`check` of the train step at ``step`` of a run (re)started after ``start``:
        warm once it has run ``after_steps`` steps in this process."""
        return self.check("train_step", fn, step, warm=step - start >= self.after_steps)
