"""Stride-1 SAME convolution whose kernel gradient is one matmul on CPU.

XLA:CPU computes a convolution's kernel gradient as a convolution over the batch and spatial
axes, several times slower per FLOP than the forward pass (the largest items of the detectors'
CPU train-step profiles: RPN, FPN and mask-head 3x3 convs, the 1x1 mask logits).
:func:`conv2d_same` has the forward pass and input gradient of ``lax.conv_general_dilated``;
on CPU its kernel gradient is ``patches^T @ grad`` with the ``kh * kw`` shifted copies of the
padded input as patches (transient memory ``kh * kw`` times the input), elsewhere the
convolution's own.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["conv2d_same"]

_DIMS = ("NHWC", "HWIO", "NHWC")


def _conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=_DIMS)


def _kernel_grad_by_matmul(x: jax.Array, kernel: jax.Array, g: jax.Array) -> jax.Array:
    kh, kw, cin, cout = kernel.shape
    n, h, w, _ = x.shape
    ph, pw = (kh - 1) // 2, (kw - 1) // 2
    padded = jnp.pad(x, ((0, 0), (ph, kh - 1 - ph), (pw, kw - 1 - pw), (0, 0)))
    patches = jnp.stack([padded[:, dy:dy + h, dx:dx + w] for dy in range(kh)
                         for dx in range(kw)], axis=3)  # [N, H, W, kh * kw, Cin]
    grad = jax.lax.dot_general(patches.reshape(n * h * w, kh * kw * cin),
                               g.reshape(n * h * w, cout), (((0,), (0,)), ((), ())),
                               preferred_element_type=jnp.float32)
    return grad.reshape(kh, kw, cin, cout).astype(kernel.dtype)


@jax.custom_vjp
def conv2d_same(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """``[N, H, W, Cin]`` NHWC, ``kernel`` ``[kh, kw, Cin, Cout]`` HWIO (same dtype) ->
    ``[N, H, W, Cout]``: stride 1, dilation 1, SAME padding (``(k - 1) // 2`` before)."""
    return _conv(x, kernel)


def _fwd(x, kernel):
    return _conv(x, kernel), (x, kernel)


def _bwd(residuals, g):
    x, kernel = residuals
    dx = jax.vjp(lambda x: _conv(x, kernel), x)[1](g)[0]
    dk = jax.lax.platform_dependent(
        x, kernel, g, cpu=_kernel_grad_by_matmul,
        default=lambda x, kernel, g: jax.vjp(lambda k: _conv(x, k), kernel)[1](g)[0])
    return dx, dk


conv2d_same.defvjp(_fwd, _bwd)
