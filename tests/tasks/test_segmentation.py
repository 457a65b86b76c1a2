"""Segmentation task: preprocessing checks and an end-to-end overfit of 4 images."""

import numpy as np
import pytest

from jaxdet.tasks import segmentation as seg_task
from jaxdet.train import loop
from tests.helpers import load_config


def test_preprocess_shapes_and_bad_input():
    example = {
        "image": np.zeros((8, 8, 3), np.uint8),
        "segmentation": np.ones((8, 8, 1), np.uint8),
        "image_id": 3,
    }
    out = seg_task.preprocess(example)
    assert out["image"].dtype == np.uint8 and out["image"].shape == (8, 8, 3)
    assert out["label"].dtype == np.int32 and out["label"].shape == (8, 8)
    with pytest.raises(ValueError, match="segmentation example 3"):
        seg_task.preprocess(dict(example, segmentation=np.ones((4, 8), np.uint8)))


def test_inputs_are_padded_to_what_the_encoder_decoder_needs_with_ignored_labels():
    config = load_config("segmentation", "runlocal")  # encoder-decoder, 3 levels: multiple of 4
    example = {"image": np.full((5, 10, 3), 7, np.uint8),
               "segmentation": np.ones((5, 10, 1), np.uint8)}
    out = seg_task.make_preprocess(config)(example)
    assert out["image"].shape == (8, 12, 3) and out["label"].shape == (8, 12)
    assert (out["image"][:5, :10] == 7).all() and out["image"][5:].max() == 0
    assert (out["label"][:5, :10] == 1).all()
    assert (out["label"][5:] == seg_task.IGNORE_LABEL).all()
    assert (out["label"][:, 10:] == seg_task.IGNORE_LABEL).all()


def test_overfits_four_images_to_pixel_accuracy_099(tmp_path, data_dir):
    config = load_config("segmentation", "runlocal")
    config.data.data_dir = data_dir
    config.data.num_train = 4
    config.data.num_val = 4
    config.eval_split = "train"
    config.model.level_widths = (16, 32, 64)
    config.optimizer.learning_rate = 1e-2
    config.optimizer.schedule = "constant"
    config.num_train_steps = 100
    config.log_every_steps = 50
    config.checkpoint_every_steps = 100
    config.progress_bar = False
    results = loop.train_and_evaluate(config, str(tmp_path))
    assert results["num_pixels"] == 4 * 32 * 32
    assert results["pixel_accuracy"] >= 0.99, results
