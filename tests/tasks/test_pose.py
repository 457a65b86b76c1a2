"""Pose task: preprocessing checks, visible-joint loss, overfitting a tiny set."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet.tasks import pose as pose_task
from jaxdet.train import loop
from tests.helpers import load_config

K = pose_task.NUM_JOINTS


def test_preprocess_and_bad_input():
    keypoints = np.zeros((K, 3), np.float32)
    keypoints[:, 2] = 2
    keypoints[3, 2] = 1  # occluded: not in the loss
    example = {"image": np.zeros((16, 16, 3), np.uint8), "keypoints": keypoints,
               "box": np.array([1, 2, 9, 12], np.float32), "image_id": 4}
    out = pose_task.preprocess(example)
    assert out["joints"].shape == (K, 2) and out["visible"].shape == (K,)
    assert out["visible"][3] == 0 and out["visible"].sum() == K - 1
    with pytest.raises(ValueError, match=f"pose example 4: keypoints must be \\[{K}, 3\\]"):
        pose_task.preprocess(dict(example, keypoints=keypoints[:5]))


def test_joint_loss_counts_visible_joints_only():
    config = load_config("pose", "runlocal")
    config.loss.joint_loss = "l2"
    joints = jnp.full((2, K, 2), 8.0)
    batch = {"image": jnp.zeros((2, 16, 32, 3), jnp.uint8), "joints": joints,
             "visible": jnp.ones((2, K)).at[0, 0].set(0.0), "mask": jnp.asarray([1.0, 0.0])}
    pred = joints / jnp.asarray([32.0, 16.0])
    pred = pred.at[0, 0].add(1.0).at[0, 1].add(jnp.asarray([0.5, 0.0]))  # joint 0 invisible
    total, count = pose_task._joint_loss(pred, batch, config)
    assert float(count) == K - 1
    np.testing.assert_allclose(total, 0.25, rtol=1e-6)


def test_overfits_eight_figures(tmp_path, data_dir):
    config = load_config("pose", "runlocal")
    config.data.data_dir = data_dir
    config.data.num_train = 8
    config.eval_split = "train"
    config.model.width = 8
    config.model.hidden = 64
    config.model.norm = "group"
    config.optimizer.learning_rate = 3e-3
    config.optimizer.schedule = "constant"
    config.batch_size = 8
    config.num_train_steps = 300
    config.log_every_steps = 100
    config.checkpoint_every_steps = 300
    config.progress_bar = False
    results = loop.train_and_evaluate(config, str(tmp_path))
    assert results[pose_task.PRIMARY_METRIC] >= 0.95, results
