"""Balanced sampler: counts, eligibility, padding, uniformity, jit/vmap."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet import ops
from tests import helpers


def check_sample(labels: np.ndarray, idx, valid, num_samples: int, fraction: float):
    """Assert every documented property against a NumPy reading of the labels.

    Returns (number of positives, number of negatives) sampled.
    """
    labels, idx, valid = np.asarray(labels), np.asarray(idx), np.asarray(valid)
    assert idx.shape == valid.shape == (num_samples,)
    assert idx.dtype == np.int32 and valid.dtype == bool
    n_valid = int(valid.sum())
    np.testing.assert_array_equal(valid, np.arange(num_samples) < n_valid)  # padding last
    np.testing.assert_array_equal(idx[~valid], -1)
    taken = idx[valid]
    assert len(np.unique(taken)) == len(taken), "sampled twice"
    taken_labels = labels[taken]
    assert (taken_labels >= 0).all(), "sampled an ignored entry"
    p = int((taken_labels == 1).sum())
    q = int((taken_labels == 0).sum())
    np.testing.assert_array_equal(taken_labels, [1] * p + [0] * q)  # positives first
    expected_p = min(int((labels == 1).sum()), int(num_samples * fraction))
    expected_q = min(int((labels == 0).sum()), num_samples - expected_p)
    assert (p, q) == (expected_p, expected_q), ((p, q), (expected_p, expected_q))
    return p, q


@helpers.with_and_without_jit
@pytest.mark.parametrize(
    "n_pos, n_neg, fraction",
    [
        pytest.param(300, 200, 0.5, id="many_positives"),
        pytest.param(10, 500, 0.5, id="few_positives"),
        pytest.param(400, 20, 0.25, id="few_negatives"),
        pytest.param(0, 400, 0.5, id="no_positives"),
        pytest.param(100, 0, 0.5, id="no_negatives"),
        pytest.param(5, 7, 0.5, id="too_few_in_total"),
        pytest.param(0, 0, 0.5, id="all_ignored"),
        pytest.param(40, 500, 0.25, id="roi_heads"),
    ],
)
def test_sample_balanced_counts_and_eligibility(variant, n_pos, n_neg, fraction):
    # One shape for every case (the rest ignored), so the eager variant compiles once.
    num_samples, n = 256, 600
    rng = np.random.default_rng(n_pos + 7 * n_neg)
    labels = np.array([1] * n_pos + [0] * n_neg + [-1] * (n - n_pos - n_neg), np.int32)
    labels = rng.permutation(labels)
    fn = variant(lambda r, lab: ops.sample_balanced(r, lab, num_samples, fraction))
    idx, valid = fn(jax.random.key(0), labels)
    chex.assert_shape([idx, valid], (num_samples,))
    check_sample(labels, idx, valid, num_samples, fraction)


def test_positive_fraction_zero_and_one():
    labels = np.array([1, 0, 1, 0, 0, -1, 1], np.int32)
    idx, valid = ops.sample_balanced(jax.random.key(1), labels, 4, 0.0)
    assert check_sample(labels, idx, valid, 4, 0.0) == (0, 3)
    idx, valid = ops.sample_balanced(jax.random.key(1), labels, 4, 1.0)
    assert check_sample(labels, idx, valid, 4, 1.0) == (3, 1)


def test_more_samples_than_entries_pads():
    labels = np.array([1, 0, -1], np.int32)
    idx, valid = ops.sample_balanced(jax.random.key(2), labels, 8, 0.5)
    assert check_sample(labels, idx, valid, 8, 0.5) == (1, 1)


def test_different_keys_give_different_samples():
    labels = np.array([1] * 50 + [0] * 50, np.int32)
    a, _ = ops.sample_balanced(jax.random.key(3), labels, 10, 0.5)
    b, _ = ops.sample_balanced(jax.random.key(4), labels, 10, 0.5)
    assert not np.array_equal(np.sort(a), np.sort(b))


def test_sampling_is_uniform_among_eligible_entries():
    # 20 positives, 5 slots for positives: each positive is picked with p = 1/4; the
    # 30 negatives share the other 5 slots: p = 1/6. 4000 draws via vmap over keys.
    labels = np.array([1] * 20 + [0] * 30 + [-1] * 10, np.int32)
    keys = jax.random.split(jax.random.key(5), 4000)
    idx, valid = jax.vmap(lambda k: ops.sample_balanced(k, labels, 10, 0.5))(keys)
    assert bool(np.all(valid))
    counts = np.bincount(np.asarray(idx).ravel(), minlength=60)
    np.testing.assert_array_equal(counts[50:], 0)
    for lo, hi, p in [(0, 20, 0.25), (20, 50, 1 / 6)]:
        freq = counts[lo:hi] / 4000
        sd = np.sqrt(p * (1 - p) / 4000)
        assert np.abs(freq - p).max() < 5 * sd, (lo, hi, freq)
        # chi-square over the group: 5-sigma-ish bound for (hi - lo - 1) dof
        chi2 = np.sum((counts[lo:hi] - 4000 * p) ** 2 / (4000 * p))
        dof = hi - lo - 1
        assert chi2 < dof + 5 * np.sqrt(2 * dof)


def test_sample_balanced_vmap_over_images():
    rng = np.random.default_rng(8)
    labels = rng.choice([-1, 0, 1], size=(3, 200), p=[0.2, 0.7, 0.1]).astype(np.int32)
    labels[2] = -1  # an image with nothing to sample
    keys = jax.random.split(jax.random.key(6), 3)
    idx, valid = jax.vmap(lambda k, lab: ops.sample_balanced(k, lab, 32, 0.5))(keys, labels)
    chex.assert_shape([idx, valid], (3, 32))
    for i in range(3):
        check_sample(labels[i], idx[i], valid[i], 32, 0.5)
    assert not bool(np.any(valid[2]))


def test_sample_balanced_from_matcher_output():
    matches = jnp.array([2, -1, -2, 0, -1, -1, -2, 1], jnp.int32)
    labels = ops.matches_to_labels(matches)
    idx, valid = ops.sample_balanced(jax.random.key(7), labels, 6, 0.5)
    check_sample(np.asarray(labels), idx, valid, 6, 0.5)
    assert set(np.asarray(idx)[:3].tolist()) == {0, 3, 7}


def test_sample_balanced_compiles_once_per_shape():
    traces = []

    @jax.jit
    def f(key, labels):
        traces.append(1)
        return ops.sample_balanced(key, labels, 16, 0.25)

    rng = np.random.default_rng(9)
    outs = [f(jax.random.key(i), rng.choice([-1, 0, 1], 64).astype(np.int32)) for i in range(3)]
    assert len(traces) == 1
    assert not np.array_equal(outs[0][0], outs[1][0])
