"""TFRecord files without TensorFlow: each record is framed as

    uint64 length (little-endian) | uint32 masked crc32c(length) | data | uint32 masked crc32c(data)

(tensorflow/core/lib/io/record_writer.cc), so shard writers, Beam workers and checks of a shard's framing need
no TensorFlow; tf.data.TFRecordDataset, TFDS and Model Garden read the files as their own.
"""

from __future__ import annotations

import hashlib
import os
import struct
from typing import BinaryIO, Iterator

import google_crc32c

_MASK_DELTA = 0xA282EAD8
_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")


class CorruptRecord(ValueError):
    """A record whose framing or checksum is wrong: a truncated or damaged file."""


def masked_crc32c(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame(record: bytes) -> bytes:
    length = _LENGTH.pack(len(record))
    return length + _CRC.pack(masked_crc32c(length)) + record + _CRC.pack(masked_crc32c(record))


class RecordWriter:
    """Appends framed records to a new file (buffered); use as a context manager or call close(). It keeps the
    sha256 and the size of what it wrote, so a writer's receipt needs no second read of the file."""

    def __init__(self, path: str | os.PathLike, buffer_bytes: int = 1 << 20):
        self._file: BinaryIO = open(path, "wb", buffering=buffer_bytes)
        self._digest = hashlib.sha256()
        self.bytes_written = 0

    def write(self, record: bytes) -> None:
        framed = frame(record)
        self._file.write(framed)
        self._digest.update(framed)
        self.bytes_written += len(framed)

    def sha256(self) -> str:
        return self._digest.hexdigest()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "RecordWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_records(path: str | os.PathLike) -> Iterator[bytes]:
    """Every record of a TFRecord file, each checked against its checksums; CorruptRecord names the offset."""
    for _, data in records_with_offsets(path):
        yield data


def records_with_offsets(path: str | os.PathLike) -> Iterator[tuple[int, bytes]]:
    """(offset of the record's data in the file, data) of every record, checked as read_records does."""
    with open(path, "rb") as handle:
        offset = 0
        while header := handle.read(12):
            if len(header) < 12:
                raise CorruptRecord(f"truncated record header at byte {offset}")
            length_bytes, length_crc = header[:8], _CRC.unpack(header[8:])[0]
            if masked_crc32c(length_bytes) != length_crc:
                raise CorruptRecord(f"bad length checksum at byte {offset}")
            (length,) = _LENGTH.unpack(length_bytes)
            data, footer = handle.read(length), handle.read(4)
            if len(data) < length or len(footer) < 4:
                raise CorruptRecord(f"truncated record at byte {offset}")
            if masked_crc32c(data) != _CRC.unpack(footer)[0]:
                raise CorruptRecord(f"bad data checksum in the record at byte {offset}")
            yield offset + 12, data
            offset += 16 + length


def read_record_at(path: str | os.PathLike, offset: int, length: int) -> bytes:
    """The data of one record, from records_with_offsets' offset and its length."""
    with open(path, "rb") as handle:
        handle.seek(offset)
        return handle.read(length)
