"""Regression losses and weighted cross-entropy: hand-computed values, smooth-L1 at its
boundary, beta = 0, masked rows (values and gradients), PyTorch ``reduction="sum"`` semantics
as NumPy references, jit/vmap."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet.losses import regression as reg

PRED = np.array([[1.0, 2.0], [0.0, 0.0]], np.float32)
TARGET = np.array([[0.0, 0.0], [3.0, -0.5]], np.float32)


def _torch_sum_reference(pred, target, weights, kind, beta):
    """``torch.nn.functional.<kind>_loss(pred[w > 0], target[w > 0], reduction="sum")``.

    PyTorch semantics written in NumPy (float64): mse ``d**2``, l1 ``|d|``, smooth_l1
    ``0.5 d**2 / beta`` if ``|d| < beta`` else ``|d| - 0.5 beta``, and plain L1 for beta == 0.
    """
    keep = weights > 0
    d = pred[keep].astype(np.float64) - target[keep].astype(np.float64)
    n = np.abs(d)
    if kind == "l2":
        loss = d**2
    elif kind == "l1" or beta == 0:
        loss = n
    else:
        loss = np.where(n < beta, 0.5 * n**2 / beta, n - 0.5 * beta)
    return loss.sum(), keep.sum()


@pytest.mark.parametrize(
    "kind,expected",
    [
        # rows: (1, 2) and (-3, 0.5) differences
        ("l2", (1 + 4) + (9 + 0.25)),
        ("l1", (1 + 2) + (3 + 0.5)),
        # beta 1: |1| -> 0.5, |2| -> 1.5, |3| -> 2.5, |0.5| -> 0.5 * 0.25
        ("smooth_l1", (0.5 + 1.5) + (2.5 + 0.125)),
    ],
)
def test_hand_computed(kind, expected):
    total, count = reg.regression_loss(jnp.asarray(PRED), jnp.asarray(TARGET), jnp.ones(2), kind)
    assert total.dtype == count.dtype == jnp.float32 and total.shape == count.shape == ()
    np.testing.assert_allclose(float(total), expected, rtol=1e-6)
    assert float(count) == 2.0


def test_float_weights_scale_rows():
    total, count = reg.regression_loss(
        jnp.asarray(PRED), jnp.asarray(TARGET), jnp.array([0.5, 2.0]), "l1"
    )
    np.testing.assert_allclose(float(total), 0.5 * 3.0 + 2.0 * 3.5, rtol=1e-6)
    np.testing.assert_allclose(float(count), 2.5)


def _smooth(x, beta):
    total, _ = reg.regression_loss(
        jnp.reshape(x, (1, 1)), jnp.zeros((1, 1)), jnp.ones(1), "smooth_l1", beta
    )
    return total


@pytest.mark.parametrize("beta", [0.5, 1.0 / 9.0])
def test_smooth_l1_continuous_at_beta(beta):
    beta32 = float(np.float32(beta))
    grad = jax.grad(_smooth)
    for sign in (1.0, -1.0):
        at = sign * beta32
        np.testing.assert_allclose(float(_smooth(at, beta32)), 0.5 * beta32, rtol=1e-6)
        assert float(grad(at, beta32)) == sign  # linear branch is taken at |x| = beta
        below = sign * float(np.nextafter(np.float32(beta32), np.float32(0)))
        np.testing.assert_allclose(float(_smooth(below, beta32)), 0.5 * beta32, rtol=1e-5)
        np.testing.assert_allclose(float(grad(below, beta32)), sign, rtol=1e-5)
    # quadratic inside, linear outside
    np.testing.assert_allclose(float(_smooth(beta32 / 2, beta32)), 0.125 * beta32, rtol=1e-6)
    np.testing.assert_allclose(float(_smooth(3 * beta32, beta32)), 2.5 * beta32, rtol=1e-6)


def test_beta_zero_is_l1_with_finite_gradients():
    x = jnp.array([[-2.0, 0.0, 0.25, 3.0]])
    w = jnp.ones(1)
    loss = lambda p, kind, beta: reg.regression_loss(p, jnp.zeros_like(p), w, kind, beta)[0]
    for fn in (loss, jax.jit(loss, static_argnums=1)):  # Python and traced beta
        np.testing.assert_allclose(float(fn(x, "smooth_l1", 0.0)), 5.25, rtol=1e-6)
        g = jax.grad(fn)(x, "smooth_l1", 0.0)
        np.testing.assert_array_equal(np.asarray(g), np.asarray(jax.grad(loss)(x, "l1", 1.0)))
        assert np.isfinite(np.asarray(g)).all()
        # sign away from 0 (at 0 JAX's |x| picks the subgradient 1, PyTorch's l1_loss 0)
        np.testing.assert_array_equal(np.asarray(g)[0, [0, 2, 3]], [-1.0, 1.0, 1.0])


@pytest.mark.parametrize("kind", reg.REGRESSION_KINDS)
def test_masked_rows_contribute_nothing_not_even_gradients(kind):
    pred = np.array([[[1.0, 2.0], [np.nan, 1.0]], [[np.inf, 0.0], [5.0, 5.0]]], np.float32)
    target = np.array([[[0.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [np.nan, 4.0]]], np.float32)
    weights = np.array([[1.0, 0.0], [0.0, 0.0]], np.float32)  # only row (0, 0) counts

    def loss(p, t):
        return reg.regression_loss(p, t, jnp.asarray(weights), kind)

    total, count = loss(jnp.asarray(pred), jnp.asarray(target))
    ref, _ = _torch_sum_reference(pred[:1, :1], target[:1, :1], np.ones((1, 1)), kind, 1.0)
    np.testing.assert_allclose(float(total), ref, rtol=1e-6)
    assert float(count) == 1.0
    gp, gt = jax.grad(lambda p, t: loss(p, t)[0], argnums=(0, 1))(
        jnp.asarray(pred), jnp.asarray(target)
    )
    for g in (np.asarray(gp), np.asarray(gt)):
        assert np.isfinite(g).all()
        np.testing.assert_array_equal(g[weights == 0], 0.0)
        assert np.abs(g[0, 0]).sum() > 0


@pytest.mark.parametrize(
    "kind,beta", [("l2", 1.0), ("l1", 1.0), ("smooth_l1", 1.0), ("smooth_l1", 1.0 / 9.0),
                  ("smooth_l1", 0.0), ("smooth_l1", 2.5)]
)
@pytest.mark.parametrize("shape", [(6, 4), (3, 5, 2)])
def test_matches_torch_sum_semantics(kind, beta, shape):
    rng = np.random.default_rng(sum(shape))
    pred = rng.normal(scale=2.0, size=shape).astype(np.float32)
    target = rng.normal(scale=2.0, size=shape).astype(np.float32)
    weights = (rng.uniform(size=shape[:-1]) < 0.7).astype(np.float32)
    total, count = reg.regression_loss(
        jnp.asarray(pred), jnp.asarray(target), jnp.asarray(weights), kind, beta
    )
    ref_total, ref_count = _torch_sum_reference(pred, target, weights, kind, beta)
    np.testing.assert_allclose(float(total), ref_total, rtol=1e-5)
    assert float(count) == ref_count


def test_jit_vmap_and_bfloat16_inputs():
    rng = np.random.default_rng(3)
    pred = jnp.asarray(rng.normal(size=(2, 3, 4)), jnp.bfloat16)
    target = jnp.asarray(rng.normal(size=(2, 3, 4)), jnp.float32)
    weights = jnp.array([[1.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    fn = jax.jit(functools.partial(reg.regression_loss, kind="smooth_l1", beta=0.5))
    totals, counts = jax.vmap(fn)(pred, target, weights)  # e.g. one pair per device
    whole_total, whole_count = fn(pred, target, weights)
    assert totals.dtype == jnp.float32
    np.testing.assert_allclose(float(totals.sum()), float(whole_total), rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(counts), [2.0, 3.0])
    assert float(whole_count) == 5.0


def test_unknown_kind_and_bad_shapes_raise():
    with pytest.raises(ValueError, match=r"unknown regression loss kind 'huber'.*smooth_l1"):
        reg.regression_loss(jnp.zeros((2, 4)), jnp.zeros((2, 4)), jnp.ones(2), "huber")
    with pytest.raises(ValueError, match="weights"):
        reg.regression_loss(jnp.zeros((2, 3, 2)), jnp.zeros((2, 3, 2)), jnp.ones(2), "l1")
    with pytest.raises(ValueError, match="target"):
        reg.regression_loss(jnp.zeros((2, 4)), jnp.zeros((2, 2)), jnp.ones(2), "l1")


def _numpy_ce(logits, labels, weights):
    z = logits.astype(np.float64)
    z = z - z.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    keep = weights != 0
    picked = logp[np.arange(len(labels))[keep], labels[keep]]
    return -(weights[keep] * picked).sum(), weights.sum()


def test_cross_entropy_hand_computed_and_numpy():
    total, count = reg.softmax_cross_entropy(
        jnp.zeros((3, 4)), jnp.array([0, 3, 1]), jnp.array([1.0, 1.0, 0.0])
    )
    np.testing.assert_allclose(float(total), 2 * np.log(4), rtol=1e-6)
    assert float(count) == 2.0
    # logits (0, ln 3) with label 1: p = 3/4
    total, _ = reg.softmax_cross_entropy(
        jnp.array([[0.0, np.log(3.0)]]), jnp.array([1]), jnp.ones(1)
    )
    np.testing.assert_allclose(float(total), -np.log(0.75), rtol=1e-6)
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=(7, 5)).astype(np.float32)
    labels = rng.integers(0, 5, size=7)
    weights = np.array([1, 0.5, 0, 1, 2, 0, 1], np.float32)
    total, count = jax.jit(reg.softmax_cross_entropy)(
        jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(weights)
    )
    ref_total, ref_count = _numpy_ce(logits, labels, weights)
    np.testing.assert_allclose(float(total), ref_total, rtol=1e-5)
    np.testing.assert_allclose(float(count), ref_count)


def test_cross_entropy_padding_has_no_value_nor_gradient():
    logits = jnp.array([[1.0, 2.0, 0.5], [jnp.nan, 0.0, jnp.inf]])
    labels = jnp.array([2, -1])
    weights = jnp.array([1.0, 0.0])
    loss = lambda lg: reg.softmax_cross_entropy(lg, labels, weights)[0]
    ref, _ = _numpy_ce(np.asarray(logits[:1]), np.array([2]), np.ones(1))
    np.testing.assert_allclose(float(loss(logits)), ref, rtol=1e-6)
    g = np.asarray(jax.grad(loss)(logits))
    assert np.isfinite(g).all()
    np.testing.assert_array_equal(g[1], 0.0)
    with pytest.raises(ValueError, match="labels"):
        reg.softmax_cross_entropy(jnp.zeros((2, 3)), jnp.zeros(3, jnp.int32), jnp.ones(2))
