"""Drop-in Flax convolutions whose gradients XLA:CPU computes fast; the same parameters
(``kernel [kh, kw, Cin, F]``, ``bias [F]``), initial values and outputs as the layers they replace.

* :class:`SameConv`: ``flax.linen.Conv`` with stride 1 and SAME padding, computed by
  :func:`jaxdet.ops.conv.conv2d_same` (whose kernel gradient is one matmul on CPU);
* :class:`BlockConvTranspose`: ``flax.linen.ConvTranspose`` with kernel size = stride;
* :class:`SubPixelConvTranspose`: ``flax.linen.ConvTranspose`` 4x4, stride 2, padding 2.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdet.ops.conv import conv2d_same

Initializer = Callable[..., jax.Array]


class SameConv(nn.Module):
    """Call: ``[N, H, W, Cin]`` -> ``[N, H, W, features]`` in ``dtype`` (None: the promoted
    dtype of the input and float32 parameters, as ``nn.Conv``)."""

    features: int
    kernel_size: tuple[int, int]
    use_bias: bool = True
    dtype: Any = None
    kernel_init: Initializer = nn.linear.default_kernel_init
    bias_init: Initializer = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kh, kw = self.kernel_size
        kernel = self.param("kernel", self.kernel_init, (kh, kw, x.shape[-1], self.features))
        bias = self.param("bias", self.bias_init, (self.features,)) if self.use_bias else None
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        y = conv2d_same(x, kernel)
        return y if bias is None else y + bias


class BlockConvTranspose(nn.Module):
    """Flax ``ConvTranspose(features, (s, s), strides=(s, s), padding="VALID")`` (kernel size =
    stride, so output blocks do not overlap): same ``kernel [s, s, Cin, features]`` / ``bias``
    and output, computed as one matmul to ``s * s * features`` channels plus depth-to-space
    (XLA:CPU runs the transpose conv's weight gradient as a slow dilated convolution).

    Call: ``[N, H, W, Cin]`` -> ``[N, sH, sW, features]`` in ``dtype``.
    """

    features: int
    stride: int = 2
    dtype: Any = jnp.float32
    kernel_init: Initializer = nn.linear.default_kernel_init

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        s, f = self.stride, self.features
        n, h, w, cin = x.shape
        kernel = self.param("kernel", self.kernel_init, (s, s, cin, f))
        bias = self.param("bias", nn.initializers.zeros_init(), (f,))
        # Output pixel (s*i + a, s*j + b) reads input pixel (i, j) through kernel[s-1-a, s-1-b].
        blocks = kernel[::-1, ::-1].transpose(2, 0, 1, 3).reshape(cin, s * s * f)
        y = x.astype(self.dtype).reshape(n * h * w, cin) @ blocks.astype(self.dtype)
        y = y.reshape(n, h, w, s, s, f).transpose(0, 1, 3, 2, 4, 5)
        return y.reshape(n, s * h, s * w, f) + bias.astype(self.dtype)


class SubPixelConvTranspose(nn.Module):
    """Flax ``ConvTranspose(features, (4, 4), strides=(2, 2), padding=((2, 2), (2, 2)))``: same
    ``kernel [4, 4, Cin, features]`` / ``bias`` and output, computed as a stride-1 3x3 conv to
    ``4 * features`` plus depth-to-space (faster on XLA:CPU).

    Call: ``[N, H, W, Cin]`` -> ``[N, 2H, 2W, features]`` in ``dtype``.
    """

    features: int
    dtype: Any = jnp.float32
    kernel_init: Initializer = nn.linear.default_kernel_init

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cin = x.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (4, 4, cin, self.features))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        # taps[a][d]: kernel row read by output phase a at input offset d - 1 (4 = a zero row).
        taps = jnp.asarray([[0, 2, 4], [4, 1, 3]])
        padded = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))  # [5, 5, Cin, F]
        # [3 (dy), 3 (dx), Cin, 2 (a), 2 (b), F] -> [3, 3, Cin, 4F] with channel (a, b, f).
        sub = padded[taps.T[:, None, :, None], taps.T[None, :, None, :]]  # [3, 3, 2, 2, Cin, F]
        sub = jnp.moveaxis(sub, 4, 2).reshape(3, 3, cin, 4 * self.features)
        y = jax.lax.conv_general_dilated(
            x.astype(self.dtype), sub.astype(self.dtype), (1, 1), "SAME",
            dimension_numbers=("NHWC", "HWIO", "NHWC"))
        n, h, w, _ = y.shape
        y = y.reshape(n, h, w, 2, 2, self.features).transpose(0, 1, 3, 2, 4, 5)
        return y.reshape(n, 2 * h, 2 * w, self.features) + bias.astype(self.dtype)
