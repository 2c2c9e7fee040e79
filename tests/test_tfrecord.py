"""fashion_tf.tfrecord: TensorFlow reads what we write and we read what TensorFlow writes, checksums checked."""

from __future__ import annotations

import numpy as np
import pytest

from fashion_tf.tfrecord import CorruptRecord, RecordWriter, read_records


def records(seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [b"", b"x"] + [rng.bytes(int(n)) for n in rng.integers(0, 200_000, 30)]


def test_tensorflow_reads_our_files_and_we_read_its(tmp_path):
    tf = pytest.importorskip("tensorflow")
    ours = tmp_path / "ours.tfrecord"
    with RecordWriter(ours) as writer:
        for record in records():
            writer.write(record)
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(ours))] == records()
    theirs = tmp_path / "theirs.tfrecord"
    with tf.io.TFRecordWriter(str(theirs)) as writer:
        for record in records(1):
            writer.write(record)
    assert list(read_records(theirs)) == records(1)
    assert theirs.read_bytes() != ours.read_bytes() and (tmp_path / "ours.tfrecord").stat().st_size > 0


def test_damage_is_reported_with_its_offset(tmp_path):
    path = tmp_path / "a.tfrecord"
    with RecordWriter(path) as writer:
        for record in (b"first", b"second record", b"third"):
            writer.write(record)
    data = bytearray(path.read_bytes())
    flipped = bytearray(data)
    flipped[21 + 16 + 3] ^= 1  # a byte of the second record's data
    path.write_bytes(bytes(flipped))
    with pytest.raises(CorruptRecord, match="bad data checksum in the record at byte 21"):
        list(read_records(path))
    path.write_bytes(bytes(data[:-3]))
    with pytest.raises(CorruptRecord, match="truncated record at byte 50"):
        list(read_records(path))
