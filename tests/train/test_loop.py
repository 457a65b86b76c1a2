"""The shared training loop on the tiny segmentation config: resume, NaN stop, exact eval."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet import predict, tasks
from jaxdet.data import pipeline
from jaxdet.metrics import confusion
from jaxdet.train import loop, metric_writing
from jaxdet.train import step as step_lib
from tests.helpers import load_config, run_main


def _config(data_dir, **overrides):
    config = load_config("segmentation", "runlocal")
    config.data.data_dir = data_dir
    config.progress_bar = False
    config.optimizer.schedule = "constant"
    for key, value in overrides.items():
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return config


def _restored_params(config, workdir):
    task = tasks.get_task(config.task)
    mesh = step_lib.make_mesh()
    train_source, _ = loop.split_sources(task, config)
    return jax.device_get(predict.restore_state(task, config, workdir, mesh, train_source))


def _main(workdir, data_dir, *overrides):
    return run_main("--config=configs/segmentation.py:runlocal", f"--workdir={workdir}",
                    f"--config.data.data_dir={data_dir}", "--config.optimizer.schedule=constant",
                    *overrides, devices=None)


def test_resume_after_process_exit_equals_straight_run(tmp_path, data_dir):
    straight = _config(data_dir, num_train_steps=6, checkpoint_every_steps=3,
                       recompile_policy="fail")
    results = loop.train_and_evaluate(straight, str(tmp_path / "straight"))
    assert results["train_step_compilations"] == results["eval_step_compilations"] == 1
    first = _main(tmp_path / "split", data_dir, "--config.num_train_steps=3",
                  "--config.checkpoint_every_steps=3")
    assert first.returncode == 0, first.stderr[-3000:]
    second = _main(tmp_path / "split", data_dir, "--config.num_train_steps=6",
                   "--config.checkpoint_every_steps=3")
    assert second.returncode == 0, second.stderr[-3000:]
    a = _restored_params(straight, str(tmp_path / "straight"))
    b = _restored_params(straight, str(tmp_path / "split"))
    assert int(a.step) == int(b.step) == 6
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, atol=1e-6, rtol=0)
    # One metrics file across both processes, every row finite.
    rows = metric_writing.read_jsonl(str(tmp_path / "split" / "metrics.jsonl"))
    train_steps = [r["step"] for r in rows if "train/loss" in r]
    assert train_steps == [2, 3, 4, 6]  # the first process logged its last step, 3
    assert all(np.isfinite(r["train/loss"]) for r in rows if "train/loss" in r)
    # The prediction picture was written: input | ground truth | prediction, per image.
    assert os.path.getsize(tmp_path / "split" / "predictions.png") > 0
    results = json.loads((tmp_path / "split" / "eval_results.json").read_text())
    assert results["step"] == 6 and 0.0 <= results["mean_iou"] <= 1.0


def test_prediction_pictures_reach_tensorboard_at_each_evaluation(tmp_path, data_dir):
    from tests.train.test_metric_writing import read_events

    config = _config(data_dir, num_train_steps=4, eval_every_steps=2, tensorboard_images=2)
    loop.train_and_evaluate(config, str(tmp_path / "run"))
    steps = [e.step for e in read_events(tmp_path / "run") for v in e.summary.value
             if v.tag == "eval/predictions" and v.image.height > 0]
    assert steps == [2, 4]


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, data_dir):
    workdir = str(tmp_path / "nan")
    loop.train_and_evaluate(_config(data_dir, num_train_steps=3), workdir)
    good = _restored_params(_config(data_dir), workdir)
    diverging = _config(data_dir, num_train_steps=6)
    diverging.optimizer.learning_rate = 1e30
    with pytest.raises(loop.NonFiniteLossError, match="non-finite loss"):
        loop.train_and_evaluate(diverging, workdir)
    after = _restored_params(_config(data_dir), workdir)
    assert int(after.step) == 3
    for x, y in zip(jax.tree.leaves(good), jax.tree.leaves(after), strict=True):
        np.testing.assert_array_equal(x, y)
        assert np.all(np.isfinite(x))


def test_eval_covers_every_example_once_with_padding(data_dir):
    # 10 validation examples, global eval batch 8 over 8 devices: the 2nd batch is 6/8 padding.
    config = _config(data_dir, **{"data.num_val": 10, "eval_batch_size": 8})
    task = tasks.get_task(config.task)
    mesh = step_lib.make_mesh()
    train_source, eval_source = loop.split_sources(task, config)
    assert len(eval_source) == 10
    state = loop.initial_state(task, config, mesh, task.preprocess(train_source[0]))
    results = loop.evaluate(task, config, state, eval_source, mesh)
    size = config.data.image_size
    assert results["num_pixels"] == 10 * size * size
    # Reference: the same model applied to all 10 examples at once, without the pipeline.
    examples = [task.preprocess(eval_source[i]) for i in range(10)]
    images = jnp.stack([e["image"] for e in examples]).astype(jnp.float32) / 255.0
    labels = np.stack([e["label"] for e in examples])
    host = jax.device_get(state)
    model = task.create_model(config, bn_axis_name=None)
    preds = task.predict(model, host.params, host.batch_stats, images)
    cm = confusion.confusion_matrix(preds, jnp.asarray(labels), task.num_classes(config))
    expected = confusion.summarize(np.asarray(cm), task.class_names(config))
    assert results["mean_iou"] == pytest.approx(expected["mean_iou"], abs=1e-9)
    assert results["pixel_accuracy"] == pytest.approx(expected["pixel_accuracy"], abs=1e-9)


def test_eval_batches_pad_and_index(data_dir):
    config = _config(data_dir, **{"data.num_val": 10})
    task = tasks.get_task(config.task)
    _, source = loop.split_sources(task, config)
    batches = list(pipeline.eval_batches(source, task.preprocess, 8, 0, 1))
    assert [b["image"].shape[0] for b in batches] == [8, 8]
    np.testing.assert_array_equal(batches[1]["mask"], [1, 1, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(batches[1]["index"], [8, 9, -1, -1, -1, -1, -1, -1])
    # Two processes: each reads its own half, the same number of batches each.
    p0 = list(pipeline.eval_batches(source, task.preprocess, 8, 0, 2))
    p1 = list(pipeline.eval_batches(source, task.preprocess, 8, 1, 2))
    seen = np.concatenate([b["index"][b["mask"] > 0] for b in p0 + p1])
    assert len(p0) == len(p1) == 2 and sorted(seen.tolist()) == list(range(10))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("--config.loss.box_weight=2.0", "loss.box_weight"),
        ("--config.model.widht=8", "model.widht"),
        ("--config.batch_size=abc", "config.batch_size"),
    ],
)
def test_bad_config_override_fails_before_training(tmp_path, data_dir, override, message):
    result = _main(tmp_path / "bad", data_dir, override)
    assert result.returncode != 0
    assert message in result.stderr
    assert not (tmp_path / "bad" / "checkpoints").exists()
