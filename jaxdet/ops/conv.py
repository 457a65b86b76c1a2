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


def _transpose_combine(matrix: tuple[tuple[int, ...], ...],
                       grads: list[jax.Array]) -> list[jax.Array]:
    """The transpose of :func:`_combine`: ``[sum_i matrix[i][k] * grads[i] for k]``."""
    return _combine(tuple(zip(*matrix, strict=True)), grads)


def _tile_counts(h: int, w: int) -> tuple[int, int]:
    return (h + 1) // 2, (w + 1) // 2


def _input_tiles(x: jax.Array) -> jax.Array:
    """``[N, H, W, C]`` -> ``[16, N * th * tw, C]``: ``B^T d B`` of every 4x4 input tile ``d``
    (stride 2, padding 1), tile position ``(i, j)`` at ``4 i + j``. (Strided slices, which
    XLA fuses into one loop; their autodiff transpose, 16 interior-padded full-size maps, is
    replaced by :func:`_input_tiles_transpose`.)
    """
    n, h, w, c = x.shape
    th, tw = _tile_counts(h, w)
    xp = jnp.pad(x, ((0, 0), (1, 2 * th + 1 - h), (1, 2 * tw + 1 - w), (0, 0)))
    rows = jnp.stack(_combine(_BT, [xp[:, r:r + 2 * th:2] for r in range(4)]))
    tiles = _combine(_BT, [rows[:, :, :, s:s + 2 * tw:2] for s in range(4)])
    return jnp.stack(tiles, axis=1).reshape(16, n * th * tw, c)


def _input_tiles_transpose(d_tiles: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """The transpose of :func:`_input_tiles`: ``[16, N * th * tw, C]`` -> ``[N, H, W, C]``
    (overlapping tiles add up). Row ``r`` of tile ``t`` is padded row ``2 t + r``: in the view
    ``[N, th + 1, 2, tw + 1, 2, C]`` of 2x2 blocks, block ``t + r // 2``, sub-row ``r % 2``, so
    each gradient lands by a one-block unit-stride shift."""
    n, h, w, c = shape
    th, tw = _tile_counts(h, w)
    d = d_tiles.reshape(4, 4, n, th, tw, c)

    def place(parts, axis):
        # parts[s]: gradient of the slice at block offset s // 2, sub-index s % 2 of ``axis``.
        def shifted(v, lo):
            pad = [(0, 0)] * v.ndim
            pad[axis] = (lo, 1 - lo)
            return jnp.pad(v, pad)
        return jnp.stack([shifted(parts[b], 0) + shifted(parts[b + 2], 1) for b in range(2)],
                         axis=axis + 1)

    d_rows = []
    for i in range(4):
        d_cols = _transpose_combine(_BT, [d[i, j] for j in range(4)])  # [N, th, tw, C] each
        d_rows.append(place(d_cols, 2))  # [N, th, tw + 1, 2, C]
    d_blocks = place(_transpose_combine(_BT, d_rows), 1)  # [N, th + 1, 2, tw + 1, 2, C]
    d_xp = d_blocks.reshape(n, 2 * th + 2, 2 * tw + 2, c)
    return d_xp[:, 1:1 + h, 1:1 + w]


def _output_from_tiles(m: jax.Array, n: int, h: int, w: int) -> jax.Array:
    """``A^T M A`` of ``[16, N * th * tw, C]`` tile products -> the ``[N, H, W, C]`` output."""
    th, tw = _tile_counts(h, w)
    m = m.reshape(4, 4, n, th, tw, -1)
    out_cols = _combine(_AT, [m[:, j] for j in range(4)])  # q -> [4 (i), N, th, tw, C]
    y = [_combine(_AT, [col[i] for i in range(4)]) for col in out_cols]  # y[q][p]
    y = jnp.stack([jnp.stack([y[q][p] for q in range(2)], axis=3) for p in range(2)], axis=2)
    return y.reshape(n, 2 * th, 2 * tw, -1)[:, :h, :w]


def _output_from_tiles_transpose(g: jax.Array) -> jax.Array:
    """The transpose of :func:`_output_from_tiles`: ``[N, H, W, C]`` -> ``[16, N * th * tw, C]``."""
    n, h, w, c = g.shape
    th, tw = _tile_counts(h, w)
    g = jnp.pad(g, ((0, 0), (0, 2 * th - h), (0, 2 * tw - w), (0, 0)))
    g = g.reshape(n, th, 2, tw, 2, c)
    d_out_cols = [jnp.stack(_transpose_combine(_AT, [g[:, :, p, :, q] for p in range(2)]))
                  for q in range(2)]  # q -> [4 (i), N, th, tw, C]
    d_m = _transpose_combine(_AT, d_out_cols)  # j -> [4 (i), N, th, tw, C]
    return jnp.stack(d_m, axis=1).reshape(16, n * th * tw, c)


def _kernel_tiles(kernel: jax.Array) -> jax.Array:
    """``[3, 3, Cin, Cout]`` -> ``G g G^T`` as ``[16, Cin, Cout]``."""
    return jnp.einsum("ia,abco,jb->ijco", _G, kernel, _G).reshape(16, *kernel.shape[2:])


def _tile_matmul(a: jax.Array, b: jax.Array, contract: tuple[int, int]) -> jax.Array:
    return jax.lax.dot_general(a, b, (((contract[0],), (contract[1],)), ((0,), (0,))),
                               preferred_element_type=jnp.float32)


@jax.custom_vjp
def winograd_conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """``[N, H, W, Cin]`` float32, ``kernel [3, 3, Cin, Cout]`` -> ``[N, H, W, Cout]``: the 3x3
    stride-1 SAME convolution (padding 1) by Winograd F(2x2, 3x3) on 2x2 output tiles (odd
    ``H`` / ``W`` are padded and cropped). Gradients: the transposed transforms around two
    batched matmuls (``dV = dM U^T``, ``dU = V^T dM``), the tiles recomputed from ``x``."""
    n, h, w, _ = x.shape
    m = _tile_matmul(_input_tiles(x), _kernel_tiles(kernel), (2, 1))
    return _output_from_tiles(m, n, h, w).astype(x.dtype)


def _winograd_fwd(x, kernel):
    return winograd_conv3x3(x, kernel), (x, kernel)


def _winograd_bwd(residuals, g):
    x, kernel = residuals
    d_m = _output_from_tiles_transpose(g.astype(jnp.float32))
    d_v = _tile_matmul(d_m, _kernel_tiles(kernel), (2, 2))  # [16, T, Cin]
    d_u = _tile_matmul(_input_tiles(x), d_m, (1, 1))  # [16, Cin, Cout]
    d_kernel = jnp.einsum("ia,ijco,jb->abco", _G, d_u.reshape(4, 4, *d_u.shape[1:]), _G)
    return (_input_tiles_transpose(d_v, x.shape).astype(x.dtype),
            d_kernel.astype(kernel.dtype))


winograd_conv3x3.defvjp(_winograd_fwd, _winograd_bwd)


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
