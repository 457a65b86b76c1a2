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
    """Sample up to ``num_samples`` entries, at most a fraction of them positive.

    Semantics of torchvision's ``BalancedPositiveNegativeSampler``: take
    ``p = min(#positives, int(num_samples * positive_fraction))`` positives uniformly at
    random without replacement, then ``min(#negatives, num_samples - p)`` negatives likewise.
    Ignored entries are never sampled. Compiled once per shape and ``(num_samples,
    positive_fraction)``.

    Args:
      rng: a ``jax.random`` key.
      labels: ``[N]`` int, ``1`` positive, ``0`` negative, ``-1`` ignore (see
        :func:`jaxdet.ops.matches_to_labels`).
      num_samples: static output size (e.g. 256 anchors or 512 RoIs per image).
      positive_fraction: at most ``int(num_samples * positive_fraction)`` positives.

    Returns:
      ``(indices, valid)``: ``indices`` ``[num_samples]`` int32 into ``labels`` - the sampled
      positives first, then the sampled negatives, then ``-1`` padding; ``valid``
      ``[num_samples]`` bool, ``False`` exactly on the padding. Gather with
      ``jnp.take(x, indices, axis=0, mode="clip")`` (or ``jnp.maximum(indices, 0)``) and mask
      with ``valid``.
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
