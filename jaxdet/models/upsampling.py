"""Parameter-free down/upsampling ops for dense prediction, on NHWC arrays.

Pure functions with static shapes (``jit``, ``vmap``, ``grad``); arrays ``[B, H, W, C]``, any
float dtype. Max-pooling uses VALID windows: ``H_out = (H - window) // stride + 1``. Its
*switches* (int32) are the flat row-major index within the window, ``dy * window + dx``: output
``(i, j)`` came from ``(i * stride + switch // window, j * stride + switch % window)``; ties go
to the first maximum (NumPy's ``argmax``). :func:`max_unpool` puts values back at their
switches, zeros elsewhere, summing where overlapping windows (``stride < window``) remember the
same position.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def _check_nhwc(x: jax.Array, name: str) -> None:
    if x.ndim != 4:
        raise ValueError(f"{name} must be NHWC (4-D), got shape {x.shape}")


def _window_views(x: jax.Array, window: int, stride: int) -> list[jax.Array]:
    """The ``window**2`` strided views of ``x`` (row-major slot order), each ``[B, Ho, Wo, C]``
    (kept separate, not stacked on a minor axis, for XLA:CPU speed).
    """
    _, h, w, _ = x.shape
    ho, wo = (h - window) // stride + 1, (w - window) // stride + 1
    views = []
    for dy in range(window):  # static loop over window offsets, not over pixels
        for dx in range(window):
            rows = slice(dy, dy + stride * (ho - 1) + 1, stride)
            cols = slice(dx, dx + stride * (wo - 1) + 1, stride)
            views.append(x[:, rows, cols])
    return views


def _check_pool_args(x: jax.Array, window: int, stride: int) -> None:
    _check_nhwc(x, "x")
    if x.shape[1] < window or x.shape[2] < window:
        raise ValueError(f"input {x.shape[1:3]} is smaller than the pooling window {window}")
    if stride < 1 or stride > window:
        raise ValueError(f"stride must be in [1, window={window}], got {stride}")


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _pool(x: jax.Array, window: int, stride: int) -> tuple[jax.Array, jax.Array]:
    views = _window_views(x, window, stride)
    pooled = functools.reduce(jnp.maximum, views)
    switches = jnp.full(pooled.shape, len(views) - 1, jnp.int32)
    for k in reversed(range(len(views) - 1)):  # so that the first maximum wins
        switches = jnp.where(views[k] == pooled, jnp.int32(k), switches)
    return pooled, switches


def _pool_fwd(x, window, stride):
    pooled, switches = _pool(x, window, stride)
    return (pooled, switches), (switches, x.shape[1:3])


def _pool_bwd(window, stride, res, cotangents):
    switches, hw = res
    # The gradient of max-pooling routes each output's cotangent to its argmax: an unpool.
    return (max_unpool(cotangents[0], switches, hw, window=window, stride=stride),)


_pool.defvjp(_pool_fwd, _pool_bwd)


def max_pool_with_argmax(
    x: jax.Array, window: int = 2, stride: int = 2
) -> tuple[jax.Array, jax.Array]:
    """Max-pool with VALID windows, returning the switches.

    ``x``: ``[B, H, W, C]`` with ``H, W >= window``; ``1 <= stride <= window`` (else ValueError).
    Returns ``(pooled, switches)``: ``[B, Ho, Wo, C]`` in ``x``'s dtype and int32 ``[B, Ho, Wo,
    C]``. The gradient goes to exactly the switch position (also with ties): ``max_unpool`` of the
    cotangent.
    """
    _check_pool_args(x, window, stride)
    return _pool(x, window, stride)


def max_unpool(
    x: jax.Array, switches: jax.Array, output_shape: Sequence[int], window: int = 2, stride: int = 2
) -> jax.Array:
    """Inverse of :func:`max_pool_with_argmax`: values back at their switch positions.

    ``x`` and ``switches``: ``[B, Ho, Wo, C]`` (the matching pooling's switches); ``output_shape``:
    the pooled map's ``(H, W)`` (or ``(B, H, W, C)``), needed because VALID pooling floors odd
    sizes; ``window``, ``stride``: the pooling's. Returns ``[B, H, W, C]`` in ``x``'s dtype, zero
    except at the remembered positions (summed where several remember one). ValueError on
    inconsistent shapes.
    """
    _check_nhwc(x, "x")
    if switches.shape != x.shape:
        raise ValueError(f"switches shape {switches.shape} != values shape {x.shape}")
    b, ho, wo, c = x.shape
    if len(output_shape) == 4:
        if (output_shape[0], output_shape[3]) != (b, c):
            raise ValueError(f"output_shape {tuple(output_shape)} does not match values {x.shape}")
        output_shape = output_shape[1:3]
    h, w = (int(s) for s in output_shape)
    if (h - window) // stride + 1 != ho or (w - window) // stride + 1 != wo:
        raise ValueError(
            f"output_shape {(h, w)} does not pool to {(ho, wo)} with window={window}, "
            f"stride={stride}"
        )
    zero = jnp.zeros((), x.dtype)
    placed = [jnp.where(switches == k, x, zero) for k in range(window * window)]
    if window == stride:
        # Non-overlapping windows: interleave the slots (stack on axes left of C, reshape).
        rows = [
            jnp.stack(placed[dy * window : (dy + 1) * window], axis=3).reshape(
                b, ho, wo * window, c
            )
            for dy in range(window)
        ]
        out = jnp.stack(rows, axis=2).reshape(b, ho * window, wo * window, c)
        return jnp.pad(out, ((0, 0), (0, h - ho * window), (0, w - wo * window), (0, 0)))
    out = jnp.zeros((b, h, w, c), x.dtype)
    for k in range(window * window):  # static loop over window slots
        dy, dx = divmod(k, window)
        hi_y = h - dy - stride * (ho - 1) - 1
        hi_x = w - dx - stride * (wo - 1) - 1
        cfg = ((0, 0, 0), (dy, hi_y, stride - 1), (dx, hi_x, stride - 1), (0, 0, 0))
        out = out + jax.lax.pad(placed[k], zero, cfg)
    return out


def bed_of_nails_upsample(x: jax.Array, factor: int = 2) -> jax.Array:
    """``[B, H, W, C] -> [B, H*f, W*f, C]``: each value at the top-left of its ``f x f``
    block, zeros elsewhere.
    """
    _check_nhwc(x, "x")
    zero = jnp.zeros((), x.dtype)
    cfg = ((0, 0, 0), (0, factor - 1, factor - 1), (0, factor - 1, factor - 1), (0, 0, 0))
    return jax.lax.pad(x, zero, cfg)


def nearest_upsample(x: jax.Array, factor: int = 2) -> jax.Array:
    """Nearest-neighbour upsampling: ``[B, H, W, C] -> [B, H*f, W*f, C]`` (block copies)."""
    _check_nhwc(x, "x")
    b, h, w, c = x.shape
    x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, factor, w, factor, c))
    return x.reshape(b, h * factor, w * factor, c)


def bilinear_upsample(x: jax.Array, factor: int = 2) -> jax.Array:
    """Bilinear ``[B, H, W, C] -> [B, H*f, W*f, C]``, half-pixel centres (``jax.image.resize``)."""
    _check_nhwc(x, "x")
    b, h, w, c = x.shape
    return jax.image.resize(x, (b, h * factor, w * factor, c), method="bilinear")


def transpose_conv(x: jax.Array, kernel: jax.Array, stride: int = 2) -> jax.Array:
    """Transpose convolution, ``[B, H, W, Cin] -> [B, H*stride, W*stride, Cout]``.

    ``kernel``: ``[k, k, Cin, Cout]`` with scatter semantics: each input value weights a copy of
    the filter placed ``stride`` pixels apart, overlaps summed. The exact transpose of ``nn.Conv``
    with the same kernel (``jax.lax.conv_transpose(..., "SAME", transpose_kernel=True)``); for
    ``k == stride`` computed as a matrix product plus depth-to-space.
    """
    _check_nhwc(x, "x")
    k, k2, cin, cout = kernel.shape
    if k != k2 or cin != x.shape[-1]:
        raise ValueError(f"kernel {kernel.shape} must be [k, k, {x.shape[-1]}, Cout]")
    if k == stride:
        b, h, w, _ = x.shape
        y = jnp.einsum("bhwc,uvco->bhuwvo", x, kernel.astype(x.dtype))
        return y.reshape(b, h * k, w * k, cout)
    # lax's transpose_kernel=True takes the forward conv's kernel: [k, k, Cout, Cin] (HWIO).
    return jax.lax.conv_transpose(
        x,
        jnp.swapaxes(kernel, 2, 3).astype(x.dtype),
        (stride, stride),
        "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        transpose_kernel=True,
    )


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(v, int | np.integer):
        return int(v), int(v)
    a, b = v
    return int(a), int(b)


def conv_matrix(
    kernel: np.ndarray | jax.Array,
    input_size: int | Sequence[int],
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
) -> np.ndarray:
    """Dense matrix ``M`` of a single-channel convolution (cross-correlation, as ``nn.Conv``).

    1-D kernel ``k`` (length ``K``), input length ``N``, zero padding ``p`` per side: ``y = M @ x``,
    ``M[i, j] = k[j - (i * stride - p)]`` where that index is in ``[0, K)``, else 0; ``M`` is
    ``[(N + 2p - K) // stride + 1, N]``. A 2-D kernel ``[Kh, Kw]`` flattens maps row-major (``M``
    ``[Ho * Wo, H * W]``). The transpose convolution is ``y = M.T @ x``. Returns float64 NumPy (a
    test/teaching helper, not for ``jit``).
    """
    k = np.asarray(kernel, dtype=np.float64)
    if k.ndim == 1:
        k2 = k[None, :]
        (n,) = (input_size,) if isinstance(input_size, int | np.integer) else tuple(input_size)
        size, strides, pads = (1, int(n)), (1, int(_pair(stride)[0])), (0, _pair(padding)[0])
    elif k.ndim == 2:
        k2 = k
        size, strides, pads = _pair(input_size), _pair(stride), _pair(padding)
    else:
        raise ValueError(f"kernel must be 1-D or 2-D, got shape {k.shape}")
    (kh, kw), (h, w), (sh, sw), (ph, pw) = k2.shape, size, strides, pads
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"kernel {k.shape} does not fit input {size} with padding {pads}")
    m = np.zeros((ho, wo, h, w))
    for i in range(ho):
        for j in range(wo):
            for a in range(kh):
                for b in range(kw):
                    y, x = i * sh - ph + a, j * sw - pw + b
                    if 0 <= y < h and 0 <= x < w:
                        m[i, j, y, x] += k2[a, b]
    return m.reshape(ho * wo, h * w)
