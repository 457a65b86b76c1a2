"""Per-pixel losses for semantic segmentation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def labels_at_logit_resolution(labels: jax.Array, logits_hw: tuple[int, int]) -> jax.Array:
    """Picks the label of the pixel each logit classifies.

    Models may predict on a stride-``s`` grid (the sliding-window baseline does): logit
    ``(i, j)`` classifies pixel ``(i*s + s//2, j*s + s//2)``.

    Args:
      labels: ``[B, H, W]`` int class ids.
      logits_hw: ``(h, w)`` of the logits; ``H/h == W/w == s`` must be an integer.

    Returns:
      ``[B, h, w]`` labels.
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

    ``sum / count`` is cross-entropy averaged over pixels and the batch.
    The training step turns the pair into a global mean over all devices.

    Args:
      logits: ``[B, h, w, C]`` float scores (any float dtype; computed in float32).
      labels: ``[B, H, W]`` int class ids in ``[0, C)`` or ``ignore_label``; subsampled to the
        logits' grid by :func:`labels_at_logit_resolution`.
      example_mask: ``[B]`` 1 for real examples, 0 for padding.
      ignore_label: label value that contributes nothing.

    Returns:
      ``(loss_sum, pixel_count)``, float32 scalars.
    """
    labels = labels_at_logit_resolution(labels, logits.shape[1:3])
    valid = (labels != ignore_label) & (example_mask[:, None, None] > 0)
    safe_labels = jnp.where(valid, labels, 0)
    ce = optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), safe_labels
    )
    valid = valid.astype(jnp.float32)
    return jnp.sum(ce * valid), jnp.sum(valid)
