"""jaxdet.train.metric_writing: metrics.jsonl rows, and no row kept twice after a resume."""

import json

from jaxdet.train import metric_writing


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_jsonl_writer_appends_one_row_per_call(tmp_path):
    writer = metric_writing.JsonlWriter(str(tmp_path / "m" / "metrics.jsonl"))
    writer.write_scalars(2, {"train/loss": 1.5})
    writer.write_scalars(4, {"eval/AP": 0.25})
    writer.close()
    assert metric_writing.read_jsonl(str(tmp_path / "m" / "metrics.jsonl")) == [
        {"step": 2, "train/loss": 1.5}, {"step": 4, "eval/AP": 0.25}]


def test_forget_rows_after_drops_what_a_resumed_run_writes_again(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = [{"step": 2, "train/loss": 1.0}, {"step": 4, "train/loss": 0.9},
            {"step": 4, "eval/AP": 0.2}, {"hparams": {"a": "1"}},
            {"step": 5, "train/loss": 0.8}, {"step": 6, "eval/AP": 0.3}]
    _write(path, rows)
    # killed after step 6, last checkpoint at 4, training goes on: rows after 4 come again
    assert metric_writing.forget_rows_after(str(path), 4, reevaluated=False) == 2
    assert metric_writing.read_jsonl(str(path)) == rows[:4]
    # a finished run (4 of 4 steps) rerun: its final evaluation at 4 comes again
    assert metric_writing.forget_rows_after(str(path), 4, reevaluated=True) == 1
    assert metric_writing.read_jsonl(str(path)) == rows[:2] + rows[3:4]
    assert metric_writing.forget_rows_after(str(tmp_path / "none.jsonl"), 4, True) == 0


def test_forget_rows_after_skips_a_line_cut_short_by_a_killed_run(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"step": 2, "train/loss": 1.0}) + "\n" + '{"step": 4, "tra')
    assert metric_writing.forget_rows_after(str(path), 2, reevaluated=False) == 1
    assert metric_writing.read_jsonl(str(path)) == [{"step": 2, "train/loss": 1.0}]


def read_events(workdir) -> list:
    """Every ``Event`` of the TensorBoard files in ``workdir`` (TFRecord framing: length, its
    CRC, the serialized event, its CRC), read without TensorFlow."""
    import glob
    import struct

    from tensorboardX.proto import event_pb2

    events = []
    for path in sorted(glob.glob(str(workdir / "events.out.tfevents.*"))):
        data = open(path, "rb").read()
        at = 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at:at + 8])
            event = event_pb2.Event()
            event.ParseFromString(data[at + 12:at + 12 + length])
            events.append(event)
            at += 12 + length + 4
    return events


def test_writer_puts_scalars_and_pictures_in_tensorboard_and_scalars_in_jsonl(tmp_path):
    import io

    import numpy as np
    import PIL.Image

    writer = metric_writing.create_writer(str(tmp_path))
    writer.write_scalars(3, {"train/loss": 1.5})
    picture = np.zeros((6, 10, 3), np.uint8)
    picture[:, :5, 0] = 255
    writer.write_images(3, {"eval/predictions": picture})
    writer.close()
    values = [(e.step, v.tag, v) for e in read_events(tmp_path) for v in e.summary.value]
    assert [(step, tag, v.simple_value) for step, tag, v in values
            if tag == "train/loss"] == [(3, "train/loss", 1.5)]
    [(step, image)] = [(step, v.image) for step, tag, v in values if tag == "eval/predictions"]
    decoded = np.asarray(PIL.Image.open(io.BytesIO(image.encoded_image_string)).convert("RGB"))
    assert step == 3 and np.array_equal(decoded, picture)
    assert metric_writing.read_jsonl(str(tmp_path / "metrics.jsonl")) == [
        {"step": 3, "train/loss": 1.5}]
