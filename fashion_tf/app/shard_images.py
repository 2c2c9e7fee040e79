"""Images of a split by image id (`image/source_id`), read from TFRecord shards without decoding the split.

One pass over the split's shards reads each record's id and remembers where the record lies (file, offset,
length; fashion_tf.tfrecord); after that, showing N images reads N records. The records are tf.train.Example
protos in fashion_tf.schema's layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fashion_tf import schema
from fashion_tf.errors import UserError
from fashion_tf.shard_folder import ShardFolder
from fashion_tf.tfrecord import CorruptRecord, read_record_at, records_with_offsets


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
        try:
            for start, data in records_with_offsets(path):
                image_id = _bytes_feature(_example(data), schema.SOURCE_ID)
                if image_id is not None:
                    self.where.setdefault(image_id.decode("utf-8", "replace"), (path, start, len(data)))
        except CorruptRecord as err:
            raise UserError(f"{path}: {err}") from None

    def __len__(self) -> int:
        return len(self.where)

    def __contains__(self, image_id: str) -> bool:
        return image_id in self.where

    def encoded(self, image_id: str) -> bytes | None:
        """The image file stored for `image_id` (as downloaded: JPEG or PNG bytes), or None when it is not indexed."""
        if image_id not in self.where:
            return None
        path, start, length = self.where[image_id]
        return _bytes_feature(_example(read_record_at(path, start, length)), schema.ENCODED)
