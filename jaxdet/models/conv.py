"""``SameConv``: ``flax.linen.Conv`` with stride 1 and SAME padding, the same parameters
(``kernel [kh, kw, Cin, F]``, ``bias [F]``) and outputs, computed by
:func:`jaxdet.ops.conv.conv2d_same` (whose kernel gradient is one matmul on CPU)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax

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
