"""Small real shard folders for the fashion_tf.data tests, written with schema.serialize_example.

Not a test module: tests/test_data_*.py import it (pytest puts tests/ on sys.path).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import tensorflow as tf

from fashion_tf import schema
from fashion_tf.config import DataConfig
from fashion_tf.labels import LabelMap
from fashion_tf.shard_folder import ShardFolder, shard_names

NUM_LABELS = 5
IMAGE_SIZE = 32
HEIGHT, WIDTH = 48, 40
N_TRAIN = 60
N_VAL = 13


def labels_of(i: int) -> list[int]:
    if i == 7:
        return []  # an image without labels
    return sorted({i % 4} | ({4} if i % 5 == 0 else set()))


def image_of(i: int) -> np.ndarray:
    """A distinct, non-symmetric picture per example (so flips and crops change it)."""
    rng = np.random.default_rng(i)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    base = np.stack([xx * 255 // WIDTH, yy * 255 // HEIGHT, np.full_like(xx, (i * 37) % 256)], axis=-1)
    noise = rng.integers(0, 40, size=base.shape)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def encode(image: np.ndarray, fmt: str) -> bytes:
    if fmt == "png":
        return tf.io.encode_png(image).numpy()
    return tf.io.encode_jpeg(image, quality=95).numpy()


def write_shards(folder: Path, split: str, labels: list[list[int]], num_shards: int, fmt: str = "jpeg") -> dict:
    """Write the split's shards, round-robin; return its shard_info.json entry."""
    folder.mkdir(parents=True, exist_ok=True)
    names = shard_names(split, num_shards)
    writers = [tf.io.TFRecordWriter(str(folder / name)) for name in names]
    lengths = [0] * num_shards
    counts = np.zeros(NUM_LABELS, dtype=np.int64)
    total_bytes = 0
    for i, label_indices in enumerate(labels):
        encoded = encode(image_of(i), fmt)
        record = schema.serialize_example(
            encoded, fmt, HEIGHT, WIDTH, label_indices, f"img-{i:03d}", hashlib.sha256(encoded).hexdigest()
        )
        writers[i % num_shards].write(record)
        lengths[i % num_shards] += 1
        counts[label_indices] += 1
        total_bytes += len(record)
    for writer in writers:
        writer.close()
    return {
        "num_examples": len(labels),
        "num_bytes": total_bytes,
        "shards": names,
        "shard_lengths": lengths,
        "label_counts": counts.tolist(),
    }


def write_folder(folder: Path, splits: dict[str, dict], mapped_labels: int = NUM_LABELS) -> Path:
    """shard_info.json (NUM_LABELS labels) and a label_map.json of `mapped_labels` labels beside the shards."""
    shard_folder = ShardFolder(folder)
    info = {"num_labels": NUM_LABELS, "splits": splits, "groups": {"all": list(range(NUM_LABELS))}}
    shard_folder.info_path.write_text(json.dumps(info))
    LabelMap.from_ids([str(k + 1) for k in range(mapped_labels)]).to_json(shard_folder.label_map_path)
    return folder


def write_standard_folder(folder: Path) -> Path:
    """train: N_TRAIN JPEG records in 4 shards; validation: N_VAL in 1 shard."""
    train = write_shards(folder, "train", [labels_of(i) for i in range(N_TRAIN)], num_shards=4)
    validation = write_shards(folder, "validation", [labels_of(i) for i in range(N_VAL)], num_shards=1)
    return write_folder(folder, {"train": train, "validation": validation})


def write_png_folder(folder: Path) -> Path:
    """train: 12 PNG records in 2 shards."""
    return write_folder(folder, {"train": write_shards(folder, "train", [labels_of(i) for i in range(12)], 2, "png")})


def config(folder: Path, **changes) -> DataConfig:
    values = dict(tfrecords=str(folder), image_size=IMAGE_SIZE, batch_size=8, shuffle_buffer=64)
    values.update(changes)
    return DataConfig(**values)


def expected_labels(image_id: bytes) -> np.ndarray:
    row = np.zeros(NUM_LABELS, dtype=np.float32)
    row[labels_of(int(image_id.decode().split("-")[1]))] = 1.0
    return row


def all_ids(count: int) -> list[bytes]:
    return [f"img-{i:03d}".encode() for i in range(count)]


def collect(dataset, batches: int | None = None):
    """(images [N, S, S, 3], labels [N, C], ids) of the first `batches` batches (all when None)."""
    images, labels, ids = [], [], []
    for step, batch in enumerate(dataset):
        if batches is not None and step >= batches:
            break
        images.append(batch[0].numpy())
        labels.append(batch[1].numpy())
        if len(batch) > 2:
            ids.extend(batch[2].numpy().tolist())
    return np.concatenate(images), np.concatenate(labels), ids


def fingerprint(dataset, batches: int) -> dict:
    """sha256 of every element of the first `batches` batches (dtype, shape and bytes: bit-identity), and a
    random projection of the images (float64) that moves with any real change but not with float noise."""
    digest = hashlib.sha256()
    projections = []
    for batch in dataset.take(batches):
        for tensor in batch:
            value = tensor.numpy()
            digest.update(f"{value.dtype}{value.shape}".encode())
            digest.update(b"".join(value.ravel().tolist()) if value.dtype == object else value.tobytes())
        images = batch[0].numpy().astype(np.float64).ravel()
        weights = np.random.default_rng(0).standard_normal(images.size)
        projections.append(float(images @ weights))
    return {"sha256": digest.hexdigest(), "projections": projections}
