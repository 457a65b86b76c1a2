"""Per-row regression losses (boxes, joints) and a weighted classification cross-entropy.

Like :mod:`jaxdet.losses.segmentation`, every loss returns a ``(sum, count)`` pair of float32
scalars; the training step turns the pairs into global means over all devices. Rows whose
weight is 0 contribute nothing and get exactly zero gradient, even when their predictions or
targets hold garbage (NaN, inf) as padding may: their inputs are replaced by zeros before the
loss is computed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

REGRESSION_KINDS = ("l2", "l1", "smooth_l1")


def elementwise_regression_loss(
    diff: jax.Array, kind: str, beta: float | jax.Array = 1.0
) -> jax.Array:
    """Elementwise loss of ``diff = pred - target`` (any shape, computed in float32).

    ``"l2"``: ``x**2`` (``mse_loss``); ``"l1"``: ``|x|``; ``"smooth_l1"`` (torchvision /
    Fast R-CNN, PyTorch's ``smooth_l1_loss``): ``0.5 * x**2 / beta`` where ``|x| < beta``, else
    ``|x| - 0.5 * beta``; ``beta = 0`` is exactly L1. Continuous with a continuous gradient at
    ``|x| = beta`` (value ``0.5 * beta``, slope ``sign(x)``). ``beta`` may be traced.
    """
    if kind not in REGRESSION_KINDS:
        raise ValueError(
            f"unknown regression loss kind {kind!r}; expected one of {list(REGRESSION_KINDS)}"
        )
    x = diff.astype(jnp.float32)
    if kind == "l2":
        return jnp.square(x)
    ax = jnp.abs(x)
    if kind == "l1":
        return ax
    beta = jnp.asarray(beta, jnp.float32)
    # beta = 0: the quadratic branch is never taken; divide by 1 there so that neither the
    # value nor the gradient of the untaken branch is inf/NaN.
    safe_beta = jnp.where(beta > 0, beta, 1.0)
    return jnp.where(ax < beta, 0.5 * jnp.square(x) / safe_beta, ax - 0.5 * beta)


def smooth_l1(diff: jax.Array, beta: float | jax.Array) -> jax.Array:
    """Elementwise smooth L1 of ``diff`` (float32): :func:`elementwise_regression_loss`'s
    ``"smooth_l1"``; ``beta = 0`` is L1."""
    return elementwise_regression_loss(diff, "smooth_l1", beta)


def regression_loss(
    pred: jax.Array,
    target: jax.Array,
    weights: jax.Array,
    kind: str,
    beta: float | jax.Array = 1.0,
) -> tuple[jax.Array, jax.Array]:
    """Weighted sum of per-row losses, and the sum of the weights.

    The per-row loss is the elementwise loss (:func:`elementwise_regression_loss`) summed over
    the last axis, so ``sum / count`` is the mean per row (e.g. per box or per joint), not per
    coordinate. With 0/1 weights the pair equals PyTorch's ``<loss>(pred[w], target[w],
    reduction="sum")`` and the number of selected rows.

    Args:
      pred: ``[..., D]`` float predictions, e.g. ``[B, 4]`` box coordinates or ``[B, K, 2]``
        joint positions (any float dtype; computed in float32).
      target: same shape as ``pred``.
      weights: ``pred.shape[:-1]`` float or bool, e.g. example validity x joint visibility;
        0 drops a row (no value, zero gradient).
      kind: ``"l2"`` (squared error), ``"l1"`` or ``"smooth_l1"``.
      beta: smooth-L1 transition point (ignored by the other kinds); 0 gives L1.

    Returns:
      ``(loss_sum, weight_sum)``: float32 scalars ``sum(w * row_loss)`` and ``sum(w)``.

    Raises:
      ValueError: unknown ``kind``, or shapes that do not match.
    """
    if kind not in REGRESSION_KINDS:
        raise ValueError(
            f"unknown regression loss kind {kind!r}; expected one of {list(REGRESSION_KINDS)}"
        )
    if pred.shape != target.shape or weights.shape != pred.shape[:-1]:
        raise ValueError(
            f"regression_loss needs pred and target [..., D] and weights [...]: got pred "
            f"{pred.shape}, target {target.shape}, weights {weights.shape}"
        )
    w = weights.astype(jnp.float32)
    keep = (w != 0)[..., None]
    diff = jnp.where(keep, pred.astype(jnp.float32) - target.astype(jnp.float32), 0.0)
    rows = jnp.sum(elementwise_regression_loss(diff, kind, beta), axis=-1)
    return jnp.sum(w * rows), jnp.sum(w)


def softmax_cross_entropy(
    logits: jax.Array, labels: jax.Array, weights: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Weighted softmax cross-entropy with integer labels, and the sum of the weights.

    Args:
      logits: ``[B, C]`` (or ``[..., C]``) float scores, computed in float32.
      labels: ``[B]`` (or ``[...]``) int class ids in ``[0, C)``; any value where the weight
        is 0 (e.g. -1 for padding).
      weights: ``[B]`` (or ``[...]``) float or bool; 0 drops an example (no value, zero
        gradient, even for non-finite logits).

    Returns:
      ``(loss_sum, weight_sum)``: float32 scalars ``sum(w * ce)`` and ``sum(w)``.
    """
    if labels.shape != logits.shape[:-1] or weights.shape != labels.shape:
        raise ValueError(
            f"softmax_cross_entropy needs logits [..., C], labels and weights [...]: got "
            f"logits {logits.shape}, labels {labels.shape}, weights {weights.shape}"
        )
    w = weights.astype(jnp.float32)
    keep = w != 0
    safe_logits = jnp.where(keep[..., None], logits.astype(jnp.float32), 0.0)
    ce = optax.softmax_cross_entropy_with_integer_labels(safe_logits, jnp.where(keep, labels, 0))
    return jnp.sum(w * ce), jnp.sum(w)
