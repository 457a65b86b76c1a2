"""Stride-1 SAME convolution, fast on CPU: Winograd F(2x2, 3x3) for wide 3x3 kernels, and a
kernel gradient that is one matmul for the rest.

XLA:CPU runs a convolution directly (about 9 multiply-adds per output and input channel for a
3x3 kernel) and computes its kernel gradient as a convolution over the batch and spatial axes,
several times slower per FLOP than the forward pass. :func:`conv2d_same` has the semantics of
``lax.conv_general_dilated`` (stride 1, SAME padding) everywhere; on CPU

- float32 3x3 kernels with at least :data:`WINOGRAD_MIN_CHANNELS` input and output channels on
  maps of at least :data:`WINOGRAD_MIN_PIXELS` pixels go through :func:`winograd_conv3x3`
  (2.25x fewer multiplies; forward and both gradients are batched matmuls over the 16
  transformed tile positions; results equal the direct convolution to float32 rounding,
  relative error ~1e-6);
- other kernels keep the convolution's forward pass and input gradient, with the kernel
  gradient ``patches^T @ grad`` over the ``kh * kw`` shifted copies of the padded input.

Other platforms keep the convolution and its own gradients.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["conv2d_same", "winograd_conv3x3", "WINOGRAD_MIN_CHANNELS", "WINOGRAD_MIN_PIXELS"]

_DIMS = ("NHWC", "HWIO", "NHWC")

WINOGRAD_MIN_CHANNELS = 128
"""Input and output channels from which :func:`conv2d_same` uses Winograd on CPU (narrower
convolutions are bound by the tile transforms' memory traffic, not by multiplies)."""

WINOGRAD_MIN_PIXELS = 144
"""``H * W`` from which :func:`conv2d_same` uses Winograd on CPU (smaller maps cost little either
way, and each Winograd convolution adds ~100 operations to the program XLA compiles)."""

# Winograd F(2x2, 3x3) (Lavin & Gray 2016): Y = A^T [(G g G^T) * (B^T d B)] A per 4x4 tile d.
_BT = ((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1))
_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float32)
_AT = ((1, 1, 1, 0), (0, 1, -1, -1))


def _combine(matrix: tuple[tuple[int, ...], ...], parts: list[jax.Array]) -> list[jax.Array]:
    """``[sum_k matrix[i][k] * parts[k] for i]`` for a matrix of 0 / +1 / -1 (adds only)."""
    out = []
    for row in matrix:
        acc = None
        for c, part in zip(row, parts, strict=True):
            if c:
                acc = (part if c > 0 else -part) if acc is None else (
                    acc + part if c > 0 else acc - part)
        out.append(acc)
    return out


def winograd_conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """``[N, H, W, Cin]`` float32, ``kernel [3, 3, Cin, Cout]`` -> ``[N, H, W, Cout]``: the 3x3
    stride-1 SAME convolution (padding 1) by Winograd F(2x2, 3x3) on 2x2 output tiles (odd
    ``H`` / ``W`` are padded and cropped)."""
    n, h, w, cin = x.shape
    cout = kernel.shape[-1]
    th, tw = (h + 1) // 2, (w + 1) // 2
    xp = jnp.pad(x, ((0, 0), (1, 2 * th + 1 - h), (1, 2 * tw + 1 - w), (0, 0)))
    # B^T d B: rows of each 4x4 input tile first, then columns.
    rows = jnp.stack(_combine(_BT, [xp[:, i:i + 2 * th:2] for i in range(4)]))
    cols = _combine(_BT, [rows[:, :, :, j:j + 2 * tw:2] for j in range(4)])
    v = jnp.stack(cols, axis=1).reshape(16, n * th * tw, cin)  # tile position (i, j) = 4i + j
    u = jnp.einsum("ia,abco,jb->ijco", _G, kernel, _G).reshape(16, cin, cout)
    m = jax.lax.dot_general(v, u, (((2,), (1,)), ((0,), (0,))),
                            preferred_element_type=jnp.float32)
    m = m.reshape(4, 4, n, th, tw, cout)
    # A^T M A: columns, then rows -> the 2x2 outputs of each tile.
    out_cols = _combine(_AT, [m[:, j] for j in range(4)])  # q -> [4 (i), N, th, tw, Cout]
    y = [_combine(_AT, [c[i] for i in range(4)]) for c in out_cols]  # y[q][p]
    y = jnp.stack([jnp.stack([y[q][p] for q in range(2)], axis=3) for p in range(2)], axis=2)
    return y.reshape(n, 2 * th, 2 * tw, cout)[:, :h, :w].astype(x.dtype)


def _conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=_DIMS)


def _use_winograd(x: jax.Array, kernel: jax.Array) -> bool:
    kh, kw, cin, cout = kernel.shape
    return ((kh, kw) == (3, 3) and x.dtype == jnp.float32 and kernel.dtype == jnp.float32
            and min(cin, cout) >= WINOGRAD_MIN_CHANNELS
            and x.shape[-3] * x.shape[-2] >= WINOGRAD_MIN_PIXELS)


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
    return _forward(x, kernel)


def _forward(x, kernel):
    if _use_winograd(x, kernel):
        return jax.lax.platform_dependent(x, kernel, cpu=winograd_conv3x3, default=_conv)
    return _conv(x, kernel)


def _fwd(x, kernel):
    return _forward(x, kernel), (x, kernel)


def _bwd_cpu(x, kernel, g):
    if _use_winograd(x, kernel):
        return jax.vjp(winograd_conv3x3, x, kernel)[1](g)
    dx = jax.vjp(lambda x: _conv(x, kernel), x)[1](g)[0]
    return dx, _kernel_grad_by_matmul(x, kernel, g)


def _bwd(residuals, g):
    x, kernel = residuals
    return jax.lax.platform_dependent(
        x, kernel, g, cpu=_bwd_cpu,
        default=lambda x, kernel, g: jax.vjp(_conv, x, kernel)[1](g))


conv2d_same.defvjp(_fwd, _bwd)
