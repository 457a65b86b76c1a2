"""The last step of every detector: threshold, class-aware NMS, padding; its config section."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxdet.core import ConfigError
from jaxdet.detection import select


def test_select_detections_thresholds_suppresses_per_class_and_pads():
    boxes = jnp.array([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30],
                       [5, 5, 5.001, 9], [40, 40, 50, 50]], jnp.float32)
    scores = jnp.array([0.9, 0.8, 0.7, 0.04, 0.95, 0.6])
    classes = jnp.array([0, 0, 1, 0, 0, 2])
    valid = jnp.array([True, True, True, True, True, False])
    dets = jax.jit(lambda *a: select.select_detections(
        *a, score_thresh=0.05, nms_thresh=0.5, detections_per_img=4))(
        boxes, scores, classes, valid)
    # row 1 overlaps row 0 (IoU 0.81, same class): suppressed; row 2 is another class: kept;
    # row 3 under the threshold, row 4 thinner than min_size, row 5 invalid.
    np.testing.assert_array_equal(dets.valid, [True, True, False, False])
    np.testing.assert_allclose(dets.scores, [0.9, 0.7, 0.0, 0.0])
    np.testing.assert_array_equal(dets.classes, [0, 1, 0, 0])
    np.testing.assert_array_equal(dets.boxes[2:], 0.0)


@pytest.mark.parametrize("section, defaults, want", [
    (None, select.PostprocessSpec(), select.PostprocessSpec()),
    ({"nms_thresh": 0.6}, select.PostprocessSpec(score_thresh=0.01),
     select.PostprocessSpec(score_thresh=0.01, nms_thresh=0.6)),
    ({"score_thresh": 0.2, "detections_per_img": 7}, select.PostprocessSpec(),
     select.PostprocessSpec(score_thresh=0.2, detections_per_img=7)),
])
def test_postprocess_from_config_updates_the_detectors_defaults(section, defaults, want):
    model = ml_collections.ConfigDict({"width": 8} if section is None
                                      else {"width": 8, "postprocess": section})
    assert select.postprocess_from_config(model, defaults) == want


def test_postprocess_fields_outside_the_section_are_refused():
    with pytest.raises(ConfigError, match="config.model.score_thresh: set it as "
                                          "config.model.postprocess.score_thresh"):
        select.postprocess_from_config({"score_thresh": 0.1})
    with pytest.raises(ConfigError, match="config.model.postprocess.top_k: not a field"):
        select.postprocess_from_config({"postprocess": {"top_k": 5}})
