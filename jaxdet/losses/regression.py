"""Per-row regression losses (boxes, joints) and a weighted classification cross-entropy.

Every loss returns a ``(sum, count)`` pair of float32 scalars (the training step turns the
pairs into global means). Rows of weight 0 contribute nothing and get exactly zero gradient,
even when padding holds NaN or inf: their inputs are zeroed before the loss.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

REGRESSION_KINDS = ("l2", "l1", "smooth_l1")


def elementwise_regression_loss(
    diff: jax.Array, kind: str, beta: float | jax.Array = 1.0
) -> jax.Array:
    """Elementwise loss of ``diff = pred - target`` (any shape, float32).

    ``"l2"``: ``x**2``; ``"l1"``: ``|x|``; ``"smooth_l1"`` (PyTorch's ``smooth_l1_loss``):
    ``0.5 * x**2 / beta`` where ``|x| < beta``, else ``|x| - 0.5 * beta`` (``beta = 0`` is L1;
    ``beta`` may be traced). ValueError for another ``kind``.
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

    ``pred``, ``target``: ``[..., D]`` (e.g. ``[B, 4]`` boxes, ``[B, K, 2]`` joints; any float
    dtype); ``weights``: ``pred.shape[:-1]`` float or bool, 0 drops a row; ``kind``: ``"l2"``,
    ``"l1"`` or ``"smooth_l1"`` (transition ``beta``; 0 gives L1). Returns float32 scalars
    ``(sum(w * row_loss), sum(w))``, ``row_loss`` being :func:`elementwise_regression_loss` summed
    over the last axis (0/1 weights: PyTorch's ``<loss>(pred[w], target[w], reduction="sum")``
    and the row count). ValueError for an unknown ``kind`` or mismatched shapes.
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

    ``logits``: ``[..., C]`` (computed in float32); ``labels``: ``[...]`` int in ``[0, C)``, any
    value where the weight is 0 (e.g. -1); ``weights``: ``[...]`` float or bool, 0 drops an
    example (zero gradient, even for non-finite logits). Returns float32 scalars
    ``(sum(w * ce), sum(w))``; ValueError for mismatched shapes.
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
