"""Correctly rounded float32 division by a small positive integer.

XLA:CPU may compile ``x / n`` by a constant into a multiplication by the rounded reciprocal,
one ulp off for many ``x``. The RoI kernels take ``floor``/``ceil`` of such quotients, where
one ulp moves a bin edge by a whole pixel; :func:`divide_by_int` returns the IEEE quotient.
"""

import jax
import jax.numpy as jnp

__all__ = ["divide_by_int"]

_MAX_DIVISOR = 1 << 12


def _residual(a: jax.Array, c: jax.Array, n: int) -> jax.Array:
    """Exact ``a - c * n`` for ``c`` within a few ulps of ``a / n`` and ``1 <= n <= 4096``.

    ``c`` is split into 12-bit halves so that every product and difference is exact (Sterbenz).
    """
    bits = jax.lax.bitcast_convert_type(c, jnp.uint32)
    c_hi = jax.lax.bitcast_convert_type(bits & jnp.uint32(0xFFFFF000), jnp.float32)
    c_lo = c - c_hi
    return (a - c_hi * float(n)) - c_lo * float(n)


def divide_by_int(a: jax.Array, n: int) -> jax.Array:
    """IEEE round-to-nearest-even ``float32(a) / n`` for a static int ``1 <= n <= 4096``.

    Float32 shaped like ``a``, bit-equal to ``np.float32(a) / np.float32(n)`` for finite normal
    quotients (non-finite inputs give the compiler's quotient). ValueError for ``n`` out of range.
    """
    n = int(n)
    if not 1 <= n <= _MAX_DIVISOR:
        raise ValueError(f"divisor must be in [1, {_MAX_DIVISOR}], got {n}")
    a = jnp.asarray(a, jnp.float32)
    if n & (n - 1) == 0:  # powers of two divide exactly
        return a * (1.0 / n)
    q = a / float(n)  # within one ulp of the IEEE quotient
    best, best_r = q, jnp.abs(_residual(a, q, n))
    for direction in (-jnp.inf, jnp.inf):
        c = jnp.nextafter(q, jnp.full_like(q, direction))
        r = jnp.abs(_residual(a, c, n))
        odd = (jax.lax.bitcast_convert_type(best, jnp.uint32) & 1) == 1
        better = (r < best_r) | ((r == best_r) & odd)  # exact half-way: keep the even one
        best = jnp.where(better, c, best)
        best_r = jnp.where(better, r, best_r)
    return best
