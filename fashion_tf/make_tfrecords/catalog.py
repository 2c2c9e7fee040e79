"""The catalog: every usable image's id, file, size and label indices, in image-id order (no image bytes)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from fashion_tf.errors import UserError
from fashion_tf.make_tfrecords.inputs import LoadedInput
from fashion_tf.make_tfrecords.skipped import Skipped


@dataclass
class Catalog:
    """Compact per-image metadata: no image bytes (~200 bytes per image)."""

    ids: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)  # 0-based indices, int16/int32

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, image_id: str, path: str, size: int, label_indices: np.ndarray) -> None:
        self.ids.append(image_id)
        self.paths.append(path)
        self.sizes.append(size)
        self.labels.append(label_indices)

    def in_id_order(self) -> "Catalog":
        """The same rows sorted by image id, so the split and the shard plan do not depend on the input's row
        order: a download manifest lists images in the order their downloads finished."""
        order = sorted(range(len(self.ids)), key=self.ids.__getitem__)
        return Catalog([self.ids[i] for i in order], [self.paths[i] for i in order],
                       [self.sizes[i] for i in order], [self.labels[i] for i in order])

    def label_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(row, label index) of every label of every image, as two int64 arrays."""
        lengths = np.fromiter((len(x) for x in self.labels), dtype=np.int64, count=len(self.labels))
        rows = np.repeat(np.arange(len(self.labels), dtype=np.int64), lengths)
        labels = np.concatenate(self.labels).astype(np.int64) if lengths.sum() else np.zeros(0, dtype=np.int64)
        return rows, labels


def build_catalog(loaded: LoadedInput, source_name: str) -> tuple[Catalog, Skipped]:
    """Resolve labels to indices and stat every image file (missing files are skipped, not fatal); rows in
    image-id order."""
    catalog, skipped = Catalog(), Skipped()
    skipped.merge(loaded.pre_skipped)
    index_dtype = np.int16 if len(loaded.label_map) < 2**15 else np.int32
    seen: set[str] = set()
    known: dict[tuple, np.ndarray] = {}  # label id tuples repeat a lot: resolve each one once (shared, read-only)
    for record in loaded.records:
        indices = known.get(record.label_ids)
        if indices is None:
            try:
                indices = known[record.label_ids] = loaded.label_map.indices(record.label_ids).astype(index_dtype)
            except UserError as err:
                raise UserError(f"{source_name}: image {record.image_id}: {err}") from None
        if record.image_id in seen:
            skipped.add("duplicate_id", record.image_id)
            continue
        seen.add(record.image_id)
        if record.path is None:
            skipped.add("missing_file", record.image_id, "no image file")
            continue
        try:
            size = os.stat(record.path).st_size
        except OSError as err:
            skipped.add("missing_file", record.image_id, f"{record.path} ({err.strerror})")
            continue
        catalog.add(record.image_id, record.path, size, indices)
    return catalog.in_id_order(), skipped
