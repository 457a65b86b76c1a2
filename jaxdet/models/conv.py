"""Drop-in Flax convolutions whose gradients XLA:CPU computes fast; the same parameters
(``kernel [kh, kw, Cin, F]``, ``bias [F]``), initial values and outputs as the layers they replace.

* :class:`SameConv`: ``flax.linen.Conv`` with stride 1 and SAME padding, computed by
  :func:`jaxdet.ops.conv.conv2d_same` (whose kernel gradient is one matmul on CPU);
* :class:`BlockConvTranspose`: ``flax.linen.ConvTranspose`` with kernel size = stride.
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
