import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet.losses import segmentation as seg_losses


def _numpy_ce(logits, labels, valid):
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    picked = np.take_along_axis(logp, np.where(valid, labels, 0)[..., None], -1)[..., 0]
    return -(picked * valid).sum(), valid.sum()


def test_pixel_cross_entropy_matches_numpy_with_ignore_and_padding():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 4, 5, 6)).astype(np.float32)
    labels = rng.integers(0, 6, size=(3, 4, 5))
    labels[0, 0, :3] = 255
    mask = np.array([1, 1, 0], np.float32)
    total, count = seg_losses.pixel_cross_entropy(jnp.asarray(logits), jnp.asarray(labels), mask)
    valid = (labels != 255) & (mask[:, None, None] > 0)
    ref_total, ref_count = _numpy_ce(logits, labels, valid)
    assert float(count) == ref_count == 2 * 20 - 3
    np.testing.assert_allclose(float(total), ref_total, rtol=1e-5)


def test_uniform_logits_give_log_num_classes():
    logits = jnp.zeros((2, 3, 3, 5))
    labels = jnp.ones((2, 3, 3), jnp.int32)
    total, count = seg_losses.pixel_cross_entropy(logits, labels, jnp.ones(2))
    np.testing.assert_allclose(float(total / count), np.log(5), rtol=1e-6)


def test_labels_at_stride_pick_block_centres():
    labels = jnp.arange(8 * 8).reshape(1, 8, 8)
    sub = seg_losses.labels_at_logit_resolution(labels, (2, 2))
    # stride 4: pixels (2, 2), (2, 6), (6, 2), (6, 6)
    np.testing.assert_array_equal(sub[0], [[18, 22], [50, 54]])
    with pytest.raises(ValueError, match="integer stride"):
        seg_losses.labels_at_logit_resolution(labels, (3, 3))
