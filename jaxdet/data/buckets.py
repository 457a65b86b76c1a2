"""Aspect-ratio buckets: training batches whose images share the declared padded size that
follows their orientation (e.g. 800 x 1344 for landscape and 1344 x 800 for portrait images)
instead of one square that holds both.

:func:`nearest_size` gives an image ``(height, width)`` the declared size of the closest aspect
ratio (in log ratio; the first on ties). :class:`BucketedOrder` is the training stream: each
epoch a seeded permutation of the examples is split by bucket, every bucket cut into global
batches (a bucket's last partial batch of an epoch is left out of that epoch) and the batches
shuffled; :meth:`BucketedOrder.locate` is a function of ``(seed, position)`` alone, so a resumed
or multi-process run reads the same stream. :func:`image_sizes` reads each example's image size
once (kept in a cache file when one is given).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxdet.data.augment import FlipDoubled


def nearest_size(height: int, width: int, sizes: Sequence[Sequence[int]]) -> int:
    """Index into ``sizes`` (``(height, width)`` pairs) of the aspect ratio closest to
    ``height / width`` in log ratio, the first on ties."""
    ratio = math.log(height / width)
    gaps = [abs(ratio - math.log(h / w)) for h, w in sizes]
    return int(np.argmin(gaps))


def image_sizes(source: Sequence[Mapping[str, Any]], cache_file: str = "") -> np.ndarray:
    """``[N, 2]`` int32 ``(height, width)`` of every example's ``image`` (decoded once; a
    :class:`~jaxdet.data.augment.FlipDoubled` source reads its base once). With ``cache_file``,
    read from there when it holds ``N`` rows, else computed and written there.
    """
    if isinstance(source, FlipDoubled):
        return np.tile(image_sizes(source.source, cache_file), (2, 1))
    n = len(source)
    if cache_file and os.path.exists(cache_file):
        cached = np.load(cache_file)
        if cached.shape == (n, 2):
            return cached
    start = time.perf_counter()
    sizes = np.asarray([np.shape(source[i]["image"])[:2] for i in range(n)], np.int32)
    logging.info("read the sizes of %d images in %.1f s", n, time.perf_counter() - start)
    if cache_file:
        tmp = cache_file + ".tmp.npy"
        np.save(tmp, sizes)
        os.replace(tmp, cache_file)
    return sizes


class BucketedOrder:
    """The training stream over examples whose bucket is ``buckets[i]`` (``[N]`` ints in
    ``[0, num_buckets)``), in global batches of ``global_batch`` that each hold one bucket.

    Every epoch holds ``sum_b floor(n_b / global_batch) * global_batch`` positions (``n_b`` the
    bucket's examples); ValueError when that is 0 (no bucket fills one batch).
    """

    def __init__(self, buckets: Sequence[int], num_buckets: int, global_batch: int, seed: int):
        self.buckets = np.asarray(buckets, np.int64)
        self.num_buckets, self.global_batch, self.seed = num_buckets, global_batch, seed
        counts = np.bincount(self.buckets, minlength=num_buckets)
        self.epoch_length = int(np.sum(counts // global_batch) * global_batch)
        if self.epoch_length == 0:
            raise ValueError(f"no aspect-ratio bucket holds a global batch of {global_batch} "
                             f"examples (bucket sizes {counts.tolist()})")
        self._cached: tuple[int, np.ndarray, np.ndarray] | None = None

    def _epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """``(indices [epoch_length], bucket of each batch [epoch_length // global_batch])``."""
        cached = self._cached  # one read: reader threads may replace it meanwhile
        if cached is None or cached[0] != epoch:
            rng = np.random.default_rng((self.seed, epoch))
            perm = rng.permutation(len(self.buckets))
            g = self.global_batch
            batches, labels = [], []
            for b in range(self.num_buckets):
                members = perm[self.buckets[perm] == b]
                full = len(members) // g * g
                batches += list(members[:full].reshape(-1, g))
                labels += [b] * (full // g)
            order = rng.permutation(len(batches))
            cached = (epoch, np.concatenate([batches[i] for i in order]),
                      np.asarray(labels)[order])
            self._cached = cached
        return cached[1], cached[2]

    def locate(self, position: int) -> tuple[int, int]:
        """``(example index, bucket)`` at global stream ``position``."""
        epoch, offset = divmod(int(position), self.epoch_length)
        indices, labels = self._epoch(epoch)
        return int(indices[offset]), int(labels[offset // self.global_batch])
