import jax.numpy as jnp
import numpy as np

from jaxdet.metrics import confusion


def test_confusion_matrix_counts_and_ignores():
    labels = np.array([[[0, 1], [2, 255]]])
    preds = np.array([[[0, 2], [2, 1]]])
    cm = confusion.confusion_matrix(jnp.asarray(preds), jnp.asarray(labels), 3)
    expected = np.zeros((3, 3))
    expected[0, 0] = expected[1, 2] = expected[2, 2] = 1
    np.testing.assert_array_equal(cm, expected)
    masked = confusion.confusion_matrix(
        jnp.asarray(preds), jnp.asarray(labels), 3, example_mask=jnp.zeros(1)
    )
    assert float(masked.sum()) == 0


def test_summarize_hand_computed():
    cm = np.array([[5, 1, 0], [2, 3, 0], [0, 0, 0]])
    out = confusion.summarize(cm, ["bg", "a", "b"])
    iou0 = 5 / (6 + 7 - 5)
    iou1 = 3 / (5 + 4 - 3)
    np.testing.assert_allclose(out["mean_iou"], (iou0 + iou1) / 2)
    np.testing.assert_allclose(out["pixel_accuracy"], 8 / 11)
    np.testing.assert_allclose(out["class_accuracy"], (5 / 6 + 3 / 5) / 2)
    assert np.isnan(out["iou/b"])
    np.testing.assert_allclose(out["iou/a"], iou1)
