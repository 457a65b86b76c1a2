"""Aspect-ratio buckets: nearest declared size, one bucket per global batch, seeded stream."""

from __future__ import annotations

import numpy as np
import pytest

from jaxdet.data import augment, buckets, pipeline

SIZES = ((8, 16), (16, 8), (12, 12))  # landscape, portrait, square


@pytest.mark.parametrize("hw, want", [((480, 640), 0), ((640, 480), 1), ((500, 500), 2),
                                      ((100, 400), 0), ((530, 500), 2), ((640, 560), 2)])
def test_nearest_size_by_log_aspect_ratio(hw, want):
    # |log(480 / 640) - log(800 / 1344)| = 0.23 < |log(0.75) - log(1)| = 0.29: landscape
    coco = ((800, 1344), (1344, 800), (1344, 1344))
    assert buckets.nearest_size(*hw, coco) == want


def test_first_size_wins_a_tie():
    assert buckets.nearest_size(10, 10, ((8, 16), (16, 8))) == 0


def _order(counts=(23, 9, 3), batch=4, seed=0):
    labels = np.repeat(np.arange(len(counts)), counts)
    labels = np.random.default_rng(1).permutation(labels)
    return labels, buckets.BucketedOrder(labels, len(counts), batch, seed)


def test_every_batch_holds_one_bucket_and_each_epoch_each_example_at_most_once():
    labels, order = _order()
    assert order.epoch_length == 20 + 8 + 0  # 23 -> 5 batches of 4, 9 -> 2, 3 -> none
    for epoch in range(3):
        located = [order.locate(epoch * order.epoch_length + p)
                   for p in range(order.epoch_length)]
        indices = [i for i, _ in located]
        assert len(set(indices)) == len(indices)
        for start in range(0, order.epoch_length, 4):
            batch = located[start:start + 4]
            assert len({b for _, b in batch}) == 1
            assert all(labels[i] == b for i, b in batch)
    first = [order.locate(p)[0] for p in range(28)]
    second = [order.locate(28 + p)[0] for p in range(28)]
    assert first != second  # reshuffled each epoch


def test_the_stream_is_a_function_of_seed_and_position():
    _, a = _order(seed=3)
    _, b = _order(seed=3)
    _, c = _order(seed=4)
    positions = [57, 3, 200, 4, 57]  # any order, as a resumed or sharded reader asks
    assert [a.locate(p) for p in positions] == [b.locate(p) for p in reversed(positions)][::-1]
    assert [a.locate(p) for p in range(40)] != [c.locate(p) for p in range(40)]


def test_no_bucket_filling_a_batch_is_refused():
    with pytest.raises(ValueError, match="no aspect-ratio bucket holds a global batch of 8"):
        buckets.BucketedOrder([0, 1, 1, 0], 2, 8, 0)


def test_image_sizes_read_once_into_the_cache_and_flip_doubled_reads_the_base(tmp_path):
    images = [{"image": np.zeros((h, w, 3), np.uint8)} for h, w in ((4, 6), (7, 3))]
    reads = []

    class Source(list):
        def __getitem__(self, i):
            reads.append(i)
            return super().__getitem__(i)

    cache = str(tmp_path / "sizes.npy")
    got = buckets.image_sizes(augment.FlipDoubled(Source(images)), cache)
    np.testing.assert_array_equal(got, [[4, 6], [7, 3], [4, 6], [7, 3]])
    assert reads == [0, 1]
    np.testing.assert_array_equal(buckets.image_sizes(Source(images), cache), [[4, 6], [7, 3]])
    assert reads == [0, 1]  # from the cache


def test_training_batches_are_padded_to_their_buckets_size():
    rng = np.random.default_rng(0)
    shapes = [(6, 12)] * 10 + [(12, 6)] * 6 + [(10, 10)] * 5
    source = [{"image": rng.integers(0, 255, (h, w, 3), dtype=np.uint8),
               "objects": {"bbox": np.zeros((0, 4), np.float32),
                           "label": np.zeros((0,), np.int64)}} for h, w in shapes]
    hw = buckets.image_sizes(source)
    order = buckets.BucketedOrder([buckets.nearest_size(h, w, SIZES) for h, w in hw],
                                  len(SIZES), 4, seed=0)
    transform = augment.GeometryTransform(SIZES, train=True, batch_size=4, order=order)
    train = augment.Augmented(source, transform)
    ds = pipeline.train_dataset(train, lambda ex: {"image": ex["image"]}, 2, seed=0,
                                process_index=0, process_count=2)
    it = iter(ds)
    for step in range(6):
        batch = next(it)
        bucket = order.locate(step * 4)[1]
        assert batch["image"].shape == (2,) + SIZES[bucket] + (3,)
        for i in batch["index"]:
            assert buckets.nearest_size(*shapes[i], SIZES) == bucket
