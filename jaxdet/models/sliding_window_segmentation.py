"""Sliding-window segmentation baseline: classify each pixel from the crop centred on it."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxdet.core import ConfigError
from jaxdet.models import upsampling
from jaxdet.models.conv_blocks import ConvNormMixin, choose, he_init, scale_input

PATCH_PADDING_MODES = ("reflect", "zero")


class PatchCNN(ConvNormMixin):
    """Crop classifier, ``[N, P, P, 3]`` (scaled to [-1, 1]) -> float32 ``[N, num_classes]``.

    ``patch_stages`` x (3x3 conv+norm+relu, 2x2 max-pool) with ``patch_width * 2**s`` channels,
    then flatten -> dense(4 * patch_width) -> relu -> dense(num_classes).
    """

    num_classes: int = 5
    patch_width: int = 16
    patch_stages: int = 2

    @nn.compact
    def __call__(self, crops: jax.Array, *, train: bool) -> jax.Array:
        x = crops
        for stage in range(self.patch_stages):
            x = self.block(self.patch_width * 2**stage)(x, train=train)
            x, _ = upsampling.max_pool_with_argmax(x, 2, 2)
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(4 * self.patch_width, kernel_init=he_init)(x))
        return nn.Dense(self.num_classes, dtype=jnp.float32)(x).astype(jnp.float32)


def crop_centres(size: int, stride: int) -> np.ndarray:
    """Pixel rows (or columns) classified at ``stride``: ``i * stride + stride // 2``."""
    return np.arange(size // stride) * stride + stride // 2


class CropChunk(nn.Module):
    """Scan body: gather one chunk of crops and classify them with the shared PatchCNN."""

    cnn: PatchCNN
    patch_size: int
    train: bool

    @nn.compact
    def __call__(self, carry: None, padded: jax.Array, idx: jax.Array) -> tuple[None, jax.Array]:
        # idx: int32 [K, 3] = (image, top row, left column) of each crop in `padded`.
        offs = jnp.arange(self.patch_size)
        rows = idx[:, 1, None, None] + offs[None, :, None]
        cols = idx[:, 2, None, None] + offs[None, None, :]
        crops = padded[idx[:, 0, None, None], rows, cols]  # [K, P, P, 3]
        return carry, self.cnn(crops, train=self.train)


class SlidingWindowClassifier(ConvNormMixin):
    """Classify the centre pixel of a crop, crop by crop (``model.name="sliding_window"``).

    At stride ``s`` (``train_stride`` when training, else ``eval_stride``) the output is float32
    ``[B, H // s, W // s, num_classes]``; output ``(i, j)`` classifies pixel
    ``(i * s + s // 2, j * s + s // 2)`` from the ``patch_size`` crop centred there (image padded
    by ``patch_size // 2``, reflect or zero). H, W must be multiples of ``s``. Every crop goes
    through :class:`PatchCNN`, no computation shared. Training feeds all crops at once (BatchNorm
    statistics over all); evaluation of more crops than ``crop_chunk`` scans chunks of that size
    (identical results).
    """

    num_classes: int = 5
    patch_size: int = 17
    patch_width: int = 16
    patch_stages: int = 2
    patch_padding: str = "reflect"
    train_stride: int = 8
    eval_stride: int = 4
    crop_chunk: int = 16384

    @nn.compact
    def __call__(self, images: jax.Array, *, train: bool) -> jax.Array:
        p = self.patch_size
        if p % 2 != 1:
            raise ConfigError(f"model.patch_size must be odd, got {p}")
        mode = choose("patch_padding", self.patch_padding, PATCH_PADDING_MODES)
        s = self.train_stride if train else self.eval_stride
        b, h, w, _ = images.shape
        if h % s or w % s:
            raise ValueError(f"image size {(h, w)} must be a multiple of the stride {s}")
        x = scale_input(images)
        pad = ((0, 0), (p // 2, p // 2), (p // 2, p // 2), (0, 0))
        padded = jnp.pad(x, pad, mode="reflect" if mode == "reflect" else "constant")
        # Centre (y, x) in the image is crop top-left (y, x) in `padded`.
        ys, xs = crop_centres(h, s), crop_centres(w, s)
        grid = np.stack(np.meshgrid(np.arange(b), ys, xs, indexing="ij"), axis=-1)
        idx = grid.reshape(-1, 3).astype(np.int32)
        n = idx.shape[0]
        cnn = PatchCNN(
            num_classes=self.num_classes,
            patch_width=self.patch_width,
            patch_stages=self.patch_stages,
            norm=self.norm,
            bn_momentum=self.bn_momentum,
            gn_groups=self.gn_groups,
            bn_axis_name=self.bn_axis_name,
            parent=None,
        )
        if train or n <= self.crop_chunk:
            # All crops in one call (in training: BatchNorm statistics over the whole batch).
            _, logits = CropChunk(cnn=cnn, patch_size=p, train=train, name="crops")(
                None, padded, jnp.asarray(idx)
            )
            return logits.reshape(b, h // s, w // s, self.num_classes)
        # Evaluation of many crops: variables are read-only, so scan over chunks (same
        # variable tree as the direct call: params and batch_stats are broadcast).
        chunk = self.crop_chunk
        num_chunks = -(-n // chunk)
        idx = np.concatenate([idx, np.zeros((num_chunks * chunk - n, 3), np.int32)])
        scan = nn.scan(
            CropChunk,
            variable_broadcast=True,
            split_rngs={"params": False},
            in_axes=(nn.broadcast, 0),
            out_axes=0,
        )
        _, logits = scan(cnn=cnn, patch_size=p, train=False, name="crops")(
            None, padded, jnp.asarray(idx.reshape(num_chunks, chunk, 3))
        )
        logits = logits.reshape(num_chunks * chunk, self.num_classes)[:n]
        return logits.reshape(b, h // s, w // s, self.num_classes)
