"""Builders shared by the tests: configs as the launcher loads them, trace counting, the
jit / no-jit variants of a test."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pathlib
import subprocess
import sys
from collections.abc import Iterator

import jax
import ml_collections
import pytest

from jaxdet import config_files
from tests.xla_env import xla_flags

REPO = pathlib.Path(__file__).resolve().parents[1]

# jax.monitoring's event for each jit trace (a trace precedes every compilation); the event's
# `fun_name` keyword names the traced function.
JAXPR_TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"


def run_main(*args: str, devices: int | None = 1) -> subprocess.CompletedProcess:
    """``python -m jaxdet.main ARGS --config.progress_bar=False`` in a fresh process on
    ``devices`` simulated CPU devices (None: the test session's 8), output captured as text."""
    env = {k: v for k, v in os.environ.items() if k != "JAXDET_TRACEBACK"}
    if devices is not None:
        env["XLA_FLAGS"] = xla_flags(devices)
    return subprocess.run([sys.executable, "-m", "jaxdet.main", *args,
                           "--config.progress_bar=False"], cwd=REPO, capture_output=True,
                          text=True, timeout=900, env=env)


def load_script(relative_path: str, name: str):
    """The Python script at ``REPO / relative_path`` (e.g. an ``experiments/`` script, which is
    not a package) imported as module ``name``."""
    spec = importlib.util.spec_from_file_location(name, REPO / relative_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def corrupt_checkpoint(step_dir: pathlib.Path) -> None:
    """Overwrites every file of a saved train state (``<workdir>/checkpoints/<step>``) with
    garbage of about the same length."""
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file()]
    assert files
    for p in files:
        p.write_bytes(b"\x00garbage" * (p.stat().st_size // 8 + 1))


def assert_same_layer(ours, reference, x: jax.Array, variables=None) -> None:
    """``ours`` computes what Flax module ``reference`` does: the same initial variables (names,
    shapes; values too unless ``variables`` is given, then both run on those), the same outputs
    and the same gradients of a non-linear loss for the variables and the input."""
    import numpy as np

    v = ours.init(jax.random.key(0), x)
    ref_v = reference.init(jax.random.key(0), x)
    if variables is None:
        jax.tree.map(np.testing.assert_array_equal, v, ref_v)
        variables = jax.tree.map(lambda a: a + 0.25, v)  # a non-zero bias
    else:
        assert jax.tree.map(jax.numpy.shape, v) == jax.tree.map(jax.numpy.shape, ref_v)
    np.testing.assert_allclose(ours.apply(variables, x), reference.apply(variables, x),
                               rtol=0, atol=1e-5)
    grads = [jax.grad(lambda v, x, m=m: jax.numpy.sum(jax.numpy.sin(m.apply(v, x))), (0, 1))(
        variables, x) for m in (ours, reference)]
    for got, want in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1]), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


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


def tiny_two_stage_detector(roi_batch_size: int = 8, *, mask=None, keypoint=None,
                            **postprocess):
    """A tiny Faster R-CNN (width-4 ResNet, FPN 8, 64 px anchors scale) on 3 classes with the
    given ``mask`` / ``keypoint`` branch specs (None: off) and ``roi_batch_size`` sampled RoIs."""
    from jaxdet.detection import faster_rcnn, roi_heads, rpn, select

    spec = faster_rcnn.DetectorSpec(
        num_classes=3, fpn_channels=8, recall_top_n=10,
        rpn=rpn.RPNSpec(anchor_sizes=((8,), (16,), (32,), (64,), (128,)),
                        batch_size_per_image=16, pre_nms_top_n_train=20,
                        post_nms_top_n_train=20, pre_nms_top_n_test=20,
                        post_nms_top_n_test=10),
        roi=roi_heads.RoiSpec(batch_size_per_image=roi_batch_size, representation_size=16),
        postprocess=select.PostprocessSpec(**{"detections_per_img": 5, **postprocess}),
        mask=mask, keypoint=keypoint)
    backbone = {"depth": 0, "width": 4, "stage_sizes": (1, 1, 1, 1), "block": "basic",
                "stem": "imagenet", "norm": "batch"}
    return faster_rcnn.FasterRCNN(spec=spec, backbone=backbone)
