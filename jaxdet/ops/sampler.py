"""Balanced positive/negative sampling with a fixed number of outputs."""

import functools

import jax
import jax.numpy as jnp

__all__ = ["sample_balanced"]


def _random_order(bits: jax.Array, eligible: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """Indices of ``k`` entries, eligible ones first in uniformly random order."""
    # 31 random bits per entry, ineligible entries -1: top_k picks a uniformly random subset
    # of the eligible entries (ties between equal random keys, rare, go to the lower index).
    keys = jnp.where(eligible, (bits >> 1).astype(jnp.int32), -1)
    _, idx = jax.lax.top_k(keys, k)
    return idx.astype(jnp.int32), jnp.sum(eligible, dtype=jnp.int32)


@functools.partial(jax.jit, static_argnames=("num_samples", "positive_fraction"))
def sample_balanced(
    rng: jax.Array,
    labels: jax.typing.ArrayLike,
    num_samples: int,
    positive_fraction: float,
) -> tuple[jax.Array, jax.Array]:
    """Balanced sampling of up to ``num_samples`` entries (torchvision's
    ``BalancedPositiveNegativeSampler``).

    ``labels``: ``[N]`` int, 1 positive, 0 negative, -1 ignore (:func:`matches_to_labels`).
    Takes ``p = min(#positives, int(num_samples * positive_fraction))`` positives, then
    ``min(#negatives, num_samples - p)`` negatives, uniformly without replacement (``rng``: a
    ``jax.random`` key). Returns ``(indices, valid)``, ``[num_samples]`` each: int32 positives,
    negatives, then ``-1`` padding, and bool, False exactly on the padding (gather with
    ``jnp.take(x, indices, axis=0, mode="clip")``).
    """
    lab = jnp.asarray(labels)
    n = lab.shape[0]
    max_pos = int(num_samples * positive_fraction)
    bits = jax.random.bits(rng, (2, n), jnp.uint32)  # one draw: independent rows
    k_pos = min(max_pos, n)
    k_neg = min(num_samples, n)
    pos_idx, num_pos = _random_order(bits[0], lab == 1, k_pos)
    neg_idx, num_neg = _random_order(bits[1], lab == 0, k_neg)
    p = jnp.minimum(num_pos, max_pos)
    q = jnp.minimum(num_neg, num_samples - p)
    slot = jnp.arange(num_samples, dtype=jnp.int32)
    from_pos = jnp.take(pos_idx, slot, mode="clip") if k_pos else jnp.zeros_like(slot)
    from_neg = jnp.take(neg_idx, jnp.maximum(slot - p, 0), mode="clip")
    idx = jnp.where(slot < p, from_pos, from_neg)
    valid = slot < p + q
    return jnp.where(valid, idx, -1).astype(jnp.int32), valid
