"""Per-pixel losses for semantic segmentation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def labels_at_logit_resolution(labels: jax.Array, logits_hw: tuple[int, int]) -> jax.Array:
    """``[B, H, W]`` labels -> ``[B, h, w]``: the pixel each logit classifies.

    For logits on a stride-``s`` grid (``s = H / h = W / w``, an integer, else ValueError) logit
    ``(i, j)`` classifies pixel ``(i*s + s//2, j*s + s//2)``.
    """
    height, width = labels.shape[1:3]
    h, w = logits_hw
    if (h, w) == (height, width):
        return labels
    if height % h or width % w or height // h != width // w:
        raise ValueError(
            f"logits of spatial size {(h, w)} do not tile labels of size {(height, width)} "
            "with one integer stride"
        )
    s = height // h
    return labels[:, s // 2 :: s, s // 2 :: s]


def pixel_cross_entropy(
    logits: jax.Array,
    labels: jax.Array,
    example_mask: jax.Array,
    ignore_label: int = 255,
) -> tuple[jax.Array, jax.Array]:
    """Softmax cross-entropy summed over valid pixels, and the number of valid pixels.

    ``logits``: ``[B, h, w, C]`` (computed in float32); ``labels``: ``[B, H, W]`` int in
    ``[0, C)`` or ``ignore_label`` (subsampled by :func:`labels_at_logit_resolution`);
    ``example_mask``: ``[B]``, 0 for padding examples. Returns float32 scalars
    ``(loss_sum, pixel_count)``: their ratio is the mean over pixels and batch.
    """
    labels = labels_at_logit_resolution(labels, logits.shape[1:3])
    valid = (labels != ignore_label) & (example_mask[:, None, None] > 0)
    safe_labels = jnp.where(valid, labels, 0)
    ce = optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), safe_labels
    )
    valid = valid.astype(jnp.float32)
    return jnp.sum(ce * valid), jnp.sum(valid)
