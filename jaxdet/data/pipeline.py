"""Input pipeline: per-process shards of a random-access source, batched for the device mesh.

Training: a grain ``MapDataset``, shuffled per epoch from a seed, infinite, checkpointable
(``{"next_index": k}``), the same global batches for any number of processes. Evaluation:
every example once, padded to whole global batches. Each batch also holds ``index`` ``[b]``
int32 (global example index, -1 for padding) and ``mask`` ``[b]`` float32 (0 for padding).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import grain
import jax
import numpy as np
from absl import flags
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxdet.core import AXIS_NAME, ConfigError

Example = dict[str, np.ndarray]
Preprocess = Callable[[Mapping[str, Any]], Example]


def per_process_batch_size(global_batch_size: int, mesh: Mesh,
                           name: str = "config.batch_size") -> int:
    """Per-process batch of ``global_batch_size`` (ConfigError naming ``name`` unless a positive
    multiple of the devices)."""
    num_devices = mesh.devices.size
    if global_batch_size < 1 or global_batch_size % num_devices:
        raise ConfigError(
            f"{name}={global_batch_size} must be a positive multiple of the number of devices "
            f"({num_devices})"
        )
    return global_batch_size // jax.process_count()


def _with_index(preprocess: Preprocess) -> Callable[[int, Mapping[str, Any]], Example]:
    def fn(index: int, example: Mapping[str, Any]) -> Example:
        out = dict(preprocess(example))
        out["index"] = np.int32(index)
        out["mask"] = np.float32(1.0)
        return out

    return fn


def train_dataset(
    source: Sequence[Mapping[str, Any]],
    preprocess: Preprocess,
    batch_size: int,
    seed: int,
    process_index: int | None = None,
    process_count: int | None = None,
    num_threads: int = 2,
    num_workers: int = 0,
) -> grain.IterDataset:
    """Infinite shuffled batches: this process's rows of each global batch.

    One seeded order (reshuffled every epoch) is cut into global batches of ``batch_size *
    process_count``; process ``p`` reads rows ``[p * batch_size, (p + 1) * batch_size)`` of each.
    A source with ``draw(index, position)`` (:class:`jaxdet.data.augment.Augmented`) is read
    through it with the global stream position; one with an ``order``
    (:class:`jaxdet.data.buckets.BucketedOrder`) takes its examples in that order instead.

    Args:
      source: random-access examples. preprocess: raw example -> dict of fixed-shape arrays.
      batch_size: examples per batch for this process. seed: shuffle seed.
      process_index, process_count: default JAX's. num_threads: reader threads.
      num_workers: > 0: batches made in that many worker processes (grain's ``mp_prefetch``;
        the same batches in the same order; ``source`` and ``preprocess`` must pickle).

    Returns a grain ``IterDataset`` whose iterator has ``get_state()`` / ``set_state()``
    (``{"next_index": k}`` without workers; grain's per-worker states with them).
    """
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    order = grain.MapDataset.range(len(source)).seed(seed).shuffle().repeat()
    global_batch = batch_size * process_count
    offset = process_index * batch_size

    draw = getattr(source, "draw", None)  # augmenting sources: draw(index, position)
    bucketed = getattr(source, "order", None)  # a buckets.BucketedOrder: batches by bucket

    def example(j: int) -> Example:  # j-th example of this process -> its global position
        position = (j // batch_size) * global_batch + offset + j % batch_size
        index = int(order[position]) if bucketed is None else bucketed.locate(position)[0]
        return with_index(index, source[index] if draw is None else draw(index, position))

    with_index = _with_index(preprocess)
    ds = grain.MapDataset.range(0, len(order)).map(example)
    ds = ds.batch(batch_size, drop_remainder=True)
    out = ds.to_iter_dataset(
        grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=2 * batch_size)
    )
    if num_workers > 0:
        if not flags.FLAGS.is_parsed():  # grain's workers read absl flags (defaults suffice)
            flags.FLAGS.mark_as_parsed()
        out = out.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
    return out


def num_eval_batches(num_examples: int, global_batch_size: int) -> int:
    """Global batches needed to cover ``num_examples`` once (the last one padded)."""
    return -(-num_examples // global_batch_size)


def eval_batches(
    source: Sequence[Mapping[str, Any]],
    preprocess: Preprocess,
    global_batch_size: int,
    process_index: int | None = None,
    process_count: int | None = None,
    limit: int | None = None,
) -> Iterator[Example]:
    """Each example exactly once, in order, in padded per-process batches: process ``p`` of ``P``
    reads ``p, p + P, ...``; all processes yield :func:`num_eval_batches` batches. ``limit``:
    only the first ``limit`` examples.
    """
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    total = len(source) if limit is None else min(limit, len(source))
    local_batch = global_batch_size // process_count
    mine = list(range(process_index, total, process_count))
    padded_len = num_eval_batches(total, global_batch_size) * local_batch
    template: Example | None = None
    for start in range(0, padded_len, local_batch):
        rows = []
        for idx in range(start, start + local_batch):
            if idx < len(mine):
                ex = dict(preprocess(source[mine[idx]]))
                ex["index"] = np.int32(mine[idx])
                ex["mask"] = np.float32(1.0)
                template = template or ex
            else:
                ex = None
            rows.append(ex)
        if template is None:  # this process has no real example at all
            template = dict(preprocess(source[0]), index=np.int32(0), mask=np.float32(0))
        filled = [
            r
            if r is not None
            else {k: np.zeros_like(v) for k, v in template.items()} | {"index": np.int32(-1)}
            for r in rows
        ]
        yield {k: np.stack([r[k] for r in filled]) for k in template}


def to_global_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Per-process NumPy batches -> global arrays split over the mesh's data axis."""
    sharding = NamedSharding(mesh, PartitionSpec(AXIS_NAME))
    return {
        k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
        for k, v in local_batch.items()
    }
