"""Classification + localisation task: box coding, preprocessing, loss terms, overfitting."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet.tasks import localization as loc_task
from jaxdet.train import loop
from tests.helpers import load_config


@pytest.mark.parametrize("box_format", ["cxcywh", "xyxy"])
def test_box_coding_round_trip(box_format):
    boxes = jnp.asarray([[4.0, 8.0, 20.0, 40.0], [0.0, 0.0, 64.0, 32.0]])
    numbers = loc_task.encode_boxes(boxes, (32, 64), box_format)
    assert numbers.dtype == jnp.float32
    np.testing.assert_allclose(loc_task.decode_boxes(numbers, (32, 64), box_format), boxes,
                               atol=1e-5)
    if box_format == "cxcywh":  # normalised centre and size: x by W = 64, y by H = 32
        np.testing.assert_allclose(numbers[0], [12 / 64, 24 / 32, 16 / 64, 32 / 32], atol=1e-6)
    with pytest.raises(ValueError, match="model.box_format='yxyx'"):
        loc_task.encode_boxes(boxes, (32, 64), "yxyx")


def test_preprocess_and_bad_input():
    example = {
        "image": np.zeros((16, 16, 3), np.uint8),
        "objects": {"bbox": np.array([[1, 2, 5, 9]], np.float32), "label": np.array([3])},
        "image_id": 7,
    }
    out = loc_task.preprocess(example)
    assert out["label"] == 3 and out["label"].dtype == np.int32
    np.testing.assert_array_equal(out["box"], [1, 2, 5, 9])
    two = dict(example, objects={"bbox": np.zeros((2, 4), np.float32), "label": np.zeros(2)})
    with pytest.raises(ValueError, match="localisation example 7: .*exactly one object"):
        loc_task.preprocess(two)


def test_loss_terms_by_hand():
    config = load_config("localization", "runlocal")
    config.loss.box_loss = "l1"
    batch = {
        "image": jnp.zeros((2, 10, 20, 3), jnp.uint8),
        "label": jnp.asarray([0, 1]),
        "box": jnp.asarray([[0.0, 0.0, 10.0, 10.0], [2.0, 2.0, 4.0, 4.0]]),
        "mask": jnp.asarray([1.0, 0.0]),  # the second example is padding
    }
    outputs = {
        "class_logits": jnp.zeros((2, 4)),
        "box": jnp.asarray([[0.25, 0.5, 0.5, 1.0], [9.0, 9.0, 9.0, 9.0]]),  # exact for ex. 0
    }
    terms = loc_task._loss_terms(outputs, batch, config)
    np.testing.assert_allclose(terms["class_ce"], (np.log(4.0), 1.0), rtol=1e-6)
    np.testing.assert_allclose(terms["box"], (0.0, 1.0), atol=1e-6)
    outputs["box"] = outputs["box"].at[0, 0].add(0.1)
    np.testing.assert_allclose(loc_task._loss_terms(outputs, batch, config)["box"][0], 0.1,
                               rtol=1e-5)
    assert loc_task.loss_weights(config) == {"class_ce": 1.0, "box": config.loss.box_weight}


def test_overfits_sixteen_images(tmp_path, data_dir):
    config = load_config("localization", "runlocal")
    config.data.data_dir = data_dir
    config.data.num_train = 16
    config.eval_split = "train"
    config.model.width = 8
    config.model.hidden = 64
    config.model.norm = "group"
    config.optimizer.learning_rate = 3e-3
    config.optimizer.schedule = "constant"
    config.batch_size = 16
    config.num_train_steps = 200
    config.log_every_steps = 100
    config.checkpoint_every_steps = 200
    config.progress_bar = False
    results = loop.train_and_evaluate(config, str(tmp_path))
    assert results["accuracy"] == 1.0, results
    assert results["correct_and_iou50"] >= 0.95, results
    assert results["val_loss/total"] == pytest.approx(
        results["val_loss/class_ce"] + config.loss.box_weight * results["val_loss/box"])
