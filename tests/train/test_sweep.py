"""One-program sweeps: member k == the single run with member k's values; grid parsing; errors."""

import json
import os
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

from jaxdet import tasks
from jaxdet.data import pipeline
from jaxdet.train import loop
from jaxdet.train import state as state_lib
from jaxdet.train import step as step_lib
from jaxdet.train import sweep as sweep_lib
from tests.helpers import REPO, load_config


def _seg_config(data_dir=None, **sweep):
    config = load_config("segmentation", "runlocal")
    if data_dir:
        config.data.data_dir = data_dir
    config.progress_bar = False
    config.optimizer.learning_rate = 0.05
    config.optimizer.schedule = "constant"
    config.sweep = ml_collections.ConfigDict({"pixel_ce": (), "learning_rate": (), **sweep})
    config.sweep_strategy = "vmap"
    return config


def test_members_grid_and_member_config():
    config = _seg_config(pixel_ce=(0.5, 2.0), learning_rate=(0.01, 0.1))
    members = sweep_lib.sweep_members(config)
    assert members == [
        {"optimizer.learning_rate": 0.01, "loss.weights.pixel_ce": 0.5},
        {"optimizer.learning_rate": 0.01, "loss.weights.pixel_ce": 2.0},
        {"optimizer.learning_rate": 0.1, "loss.weights.pixel_ce": 0.5},
        {"optimizer.learning_rate": 0.1, "loss.weights.pixel_ce": 2.0},
    ]
    single = sweep_lib.member_config(config, members[3])
    assert single.loss.weights.pixel_ce == 2.0 and single.optimizer.learning_rate == 0.1
    assert sweep_lib.sweep_members(single) == []
    assert config.loss.weights.pixel_ce == 1.0  # the sweep config itself is untouched
    assert sweep_lib.member_name(members[1]) == "learning_rate=0.01,pixel_ce=2"
    assert sweep_lib.sweep_members(_seg_config()) == []


@pytest.mark.parametrize(
    ("sweep", "message"),
    [
        ({"nonsense": (1.0, 2.0)}, "config.sweep.nonsense: not a loss weight"),
        ({"pixel_ce": ("a",)}, "'a' is not a number"),
        ({"pixel_ce": "0.5"}, "expected a tuple of numbers"),
        ({"pixel_ce": (1.0, 1.0)}, "repeats a value"),
    ],
)
def test_bad_sweep_values_name_the_field(sweep, message):
    with pytest.raises(ValueError, match=message):
        sweep_lib.sweep_members(_seg_config(**sweep))


def test_only_loss_weights_and_learning_rate_can_be_swept():
    config = load_config("localization", "runlocal")
    with config.unlocked():
        config.sweep.smooth_l1_beta = (0.1, 0.2)  # changes the compiled loss: separate runs
    with pytest.raises(ValueError, match="smooth_l1_beta: not a loss weight.*box_weight"):
        sweep_lib.sweep_members(config)
    config.sweep.smooth_l1_beta = ()
    config.sweep_strategy = "pmap"
    config.sweep.box_weight = (1.0, 2.0)
    with pytest.raises(ValueError, match="sweep_strategy='pmap'"):
        sweep_lib.sweep_members(config)


def test_best_member_by_metric_not_loss():
    results = [{"mean_iou": 0.5, "loss": 0.1}, {"mean_iou": 0.9, "loss": 3.0}]
    assert sweep_lib.best_member(results, "mean_iou") == 1
    assert sweep_lib.best_member([{"err": 2.0}, {"err": 1.0}], "err", False) == 1
    with pytest.raises(ValueError, match="missing"):
        sweep_lib.best_member([{"loss": 1.0}], "mean_iou")


def _batch(num=16, size=32, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "image": rng.integers(0, 256, size=(num, size, size, 3)).astype(np.uint8),
        "label": rng.integers(0, 5, size=(num, size, size)).astype(np.int32),
        "mask": np.array([1.0] * (num - 3) + [0.0] * 3, np.float32),
        "index": np.arange(num, dtype=np.int32),
    }


def _train(config, members, mesh, steps):
    task = tasks.get_task(config.task)
    example = {k: v[0] for k, v in _batch().items() if k in ("image", "label")}
    state = loop.initial_state(task, config, mesh, example, num_members=len(members))
    step = loop.make_train_step(task, config, mesh, state_lib.make_optimizer(config), members)
    for i in range(steps):
        state, metrics = step(state, pipeline.to_global_batch(_batch(seed=i), mesh))
    return jax.device_get(state), jax.device_get(metrics)


# vmap batches the convolutions of the members, which rounds differently (~1e-7 relative);
# Adam's g / sqrt(v) blows that up for parameters with near-zero gradients (1.03e-5 seen after
# 3 steps), so vmap is checked with momentum SGD and the member loops with Adam, all to 1e-5.
@pytest.mark.parametrize(
    ("strategy", "optimizer", "sweep"),
    [("vmap", "momentum", {"pixel_ce": (0.3, 3.0), "learning_rate": (0.01, 0.05)}),
     ("map", "adam", {"learning_rate": (0.01, 0.05)}),
     ("unroll", "adam", {"pixel_ce": (0.3, 3.0)})],
)
def test_member_equals_independent_run(strategy, optimizer, sweep):
    config = _seg_config(**sweep)
    config.sweep_strategy = strategy
    config.optimizer.name = optimizer
    members = sweep_lib.sweep_members(config)
    mesh = step_lib.make_mesh()  # 8 devices, the last ones partly padded
    stacked, metrics = _train(config, members, mesh, steps=3)
    assert metrics["loss"].shape == (len(members),)
    for k, member in enumerate(members):
        single, single_metrics = _train(sweep_lib.member_config(config, member), [], mesh, 3)
        member = sweep_lib.unstack(stacked, k)
        for a, b in zip(jax.tree.leaves(single.params), jax.tree.leaves(member.params),
                        strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
        for a, b in zip(jax.tree.leaves(single.batch_stats), jax.tree.leaves(member.batch_stats),
                        strict=True):  # BatchNorm statistics are per member too
            np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
        assert int(member.step) == 3 and int(member.nonfinite_count) == 0
        np.testing.assert_allclose(single_metrics["loss"], metrics["loss"][k], rtol=1e-5)
    # The members really differ (the sweep is not training one model K times).
    p0, p1 = (jax.tree.leaves(sweep_lib.unstack(stacked.params, k))[0] for k in (0, -1))
    assert np.max(np.abs(p0 - p1)) > 1e-4


def test_sweep_run_writes_members_and_best(tmp_path, data_dir):
    config = _seg_config(data_dir, pixel_ce=(0.5, 2.0))
    config.num_train_steps = 4
    config.checkpoint_every_steps = 4
    results = loop.train_and_evaluate(config, str(tmp_path))
    assert [m["name"] for m in results["members"]] == ["pixel_ce=0.5", "pixel_ce=2"]
    best = results["best_member"]
    ious = [m["mean_iou"] for m in results["members"]]
    assert best == int(np.argmax(ious)) and results["selected_by"] == "mean_iou"
    saved = json.load(open(tmp_path / "eval_results.json"))
    assert saved["best"] == results["best"]
    best_config = json.load(open(tmp_path / "best" / "config.json"))
    assert best_config["loss"]["weights"]["pixel_ce"] == [0.5, 2.0][best]
    # The best member's checkpoint restores and evaluates like a single run's.
    single = sweep_lib.member_config(config, sweep_lib.sweep_members(config)[best])
    from jaxdet import predict

    again = predict.evaluate_checkpoint(single, str(tmp_path / "best"))
    assert again["mean_iou"] == pytest.approx(ious[best], abs=1e-6)
    # Resuming the workdir with another grid is refused instead of mixing members.
    other = _seg_config(data_dir, pixel_ce=(0.5, 3.0))
    other.num_train_steps = 6
    with pytest.raises(ValueError, match=r"another config \(sweep\.pixel_ce: \[0\.5, 2\.0\] -> "
                                         r"\[0\.5, 3\.0\]\)"):
        loop.train_and_evaluate(other, str(tmp_path))


def test_a_diverging_member_fails_alone(tmp_path, data_dir):
    config = _seg_config(data_dir, pixel_ce=(1.0, float("inf")))
    config.num_train_steps = 3
    config.checkpoint_every_steps = 3
    results = loop.train_and_evaluate(config, str(tmp_path))
    assert [m["failed"] for m in results["members"]] == [False, True]
    assert results["best_member"] == 0


def test_bad_sweep_override_on_the_command_line(tmp_path, data_dir):
    cmd = [
        sys.executable, "-m", "jaxdet.main", "--config=configs/localization.py:runlocal",
        f"--workdir={tmp_path}", f"--config.data.data_dir={data_dir}",
        "--config.sweep.box_weight=(a,)",
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "sweep.box_weight" in proc.stderr and "Traceback" not in proc.stderr
    assert not os.path.exists(tmp_path / "checkpoints")
