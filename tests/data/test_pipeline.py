"""jaxdet.data.pipeline: global batches independent of the process count, resumable."""

import grain
import numpy as np

from jaxdet.data import pipeline


def _source(n):
    return [{"x": np.full((2,), i, np.float32)} for i in range(n)]


def _preprocess(example):
    return {"x": example["x"] * 10}


def _batches(it, count):
    return [next(it) for _ in range(count)]


def test_one_process_reads_the_seeded_shuffle_of_the_whole_source():
    source = _source(10)
    it = iter(pipeline.train_dataset(source, _preprocess, 4, seed=3, process_index=0,
                                      process_count=1))
    got = np.concatenate([b["index"] for b in _batches(it, 5)])  # 20 examples: two epochs
    expected = grain.MapDataset.range(10).seed(3).shuffle().repeat()
    np.testing.assert_array_equal(got, [expected[i] for i in range(20)])
    assert sorted(got[:10].tolist()) == list(range(10))  # an epoch is a permutation
    assert got[:10].tolist() != got[10:].tolist()  # reshuffled in the next epoch
    batch = _batches(iter(pipeline.train_dataset(source, _preprocess, 4, seed=3,
                                                 process_index=0, process_count=1)), 1)[0]
    np.testing.assert_array_equal(batch["x"][:, 0], batch["index"] * 10)
    np.testing.assert_array_equal(batch["mask"], np.ones(4, np.float32))


def test_processes_split_the_same_global_batches():
    source = _source(13)
    one = iter(pipeline.train_dataset(source, _preprocess, 6, seed=0, process_index=0,
                                      process_count=1))
    parts = [iter(pipeline.train_dataset(source, _preprocess, 2, seed=0, process_index=p,
                                         process_count=3)) for p in range(3)]
    for _ in range(5):
        global_batch = next(one)
        locals_ = [next(it) for it in parts]
        for key in ("index", "x", "mask"):
            np.testing.assert_array_equal(
                np.concatenate([b[key] for b in locals_]), global_batch[key])


def test_iterator_state_resumes_the_same_batches():
    source = _source(9)
    ds = pipeline.train_dataset(source, _preprocess, 2, seed=1, process_index=1,
                                process_count=2)
    it = iter(ds)
    _batches(it, 3)
    state = it.get_state()
    rest = _batches(it, 4)
    again = iter(ds)
    again.set_state(state)
    for a, b in zip(rest, _batches(again, 4), strict=True):
        np.testing.assert_array_equal(a["index"], b["index"])


def test_worker_processes_give_the_same_batches_and_resume():
    source = _source(11)
    kwargs = dict(seed=2, process_index=0, process_count=1)
    plain = _batches(iter(pipeline.train_dataset(source, _preprocess, 3, **kwargs)), 7)
    ds = pipeline.train_dataset(source, _preprocess, 3, num_workers=2, **kwargs)
    it = iter(ds)
    first = _batches(it, 3)
    state = it.get_state()
    rest = _batches(it, 4)
    again = iter(ds)
    again.set_state(state)
    resumed = _batches(again, 4)
    for it_ in (it, again):
        it_.close()
    for a, b in zip(plain, first + rest, strict=True):
        np.testing.assert_array_equal(a["index"], b["index"])
        np.testing.assert_array_equal(a["x"], b["x"])
    for a, b in zip(rest, resumed, strict=True):
        np.testing.assert_array_equal(a["index"], b["index"])
