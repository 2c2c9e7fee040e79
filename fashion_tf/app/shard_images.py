"""Images of a split by image id (`image/source_id`), read from TFRecord shards without decoding the split.

One pass over the split's shards reads each record's id and remembers where the record lies (file, offset,
length); after that, showing N images reads N records. The framing of a TFRecord file is
[length: uint64][crc of length: uint32][data][crc of data: uint32], little-endian; the records are
tf.train.Example protos in fashion_tf.schema's layout.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

from fashion_tf import schema
from fashion_tf.errors import UserError
from fashion_tf.shard_folder import ShardFolder

_HEADER = struct.Struct("<QI")
_FOOTER_BYTES = 4


def _example(data: bytes):
    import tensorflow as tf

    return tf.train.Example.FromString(data)


def _bytes_feature(example, name: str) -> bytes | None:
    values = example.features.feature[name].bytes_list.value
    return values[0] if values else None


@dataclass
class ShardIndex:
    folder: Path
    split: str
    where: dict[str, tuple[str, int, int]] = field(default_factory=dict)  # id -> (file, data offset, length)

    @classmethod
    def build(cls, folder: Path, split: str) -> "ShardIndex":
        """Index every record of `split` in the shard folder; UserError naming the folder or file when it is not there."""
        index = cls(Path(folder), split)
        for path in ShardFolder(folder).shard_files(split):
            index._scan(path)
        return index

    def _scan(self, path: str) -> None:
        size = Path(path).stat().st_size
        with open(path, "rb") as handle:
            offset = 0
            while offset < size:
                header = handle.read(_HEADER.size)
                if len(header) < _HEADER.size:
                    raise UserError(f"{path}: truncated record header at byte {offset}")
                length, _ = _HEADER.unpack(header)
                start = offset + _HEADER.size
                if start + length + _FOOTER_BYTES > size:
                    raise UserError(f"{path}: record at byte {offset} runs past the end of the file")
                image_id = _bytes_feature(_example(handle.read(length)), schema.SOURCE_ID)
                if image_id is not None:
                    self.where.setdefault(image_id.decode("utf-8", "replace"), (path, start, length))
                handle.seek(_FOOTER_BYTES, 1)
                offset = start + length + _FOOTER_BYTES

    def __len__(self) -> int:
        return len(self.where)

    def __contains__(self, image_id: str) -> bool:
        return image_id in self.where

    def encoded(self, image_id: str) -> bytes | None:
        """The image file stored for `image_id` (as downloaded: JPEG or PNG bytes), or None when it is not indexed."""
        if image_id not in self.where:
            return None
        path, start, length = self.where[image_id]
        with open(path, "rb") as handle:
            handle.seek(start)
            return _bytes_feature(_example(handle.read(length)), schema.ENCODED)
