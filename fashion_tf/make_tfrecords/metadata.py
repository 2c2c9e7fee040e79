"""What finalize() writes beside the shards: shard_info.json's content (counts per split, label and group) and
the TFDS metadata that lets tfds.builder_from_directory load the folder."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from fashion_tf import schema
from fashion_tf.labels import LabelMap
from fashion_tf.make_tfrecords.catalog import Catalog
from fashion_tf.make_tfrecords.plan import CREATED_BY, ShardJob
from fashion_tf.make_tfrecords.skipped import Skipped
from fashion_tf.fileio import write_json_atomic
from fashion_tf.shard_folder import SHARD_SUFFIX, TFDS_FILES, TFDS_SHARD_TEMPLATE


def split_label_counts(jobs: Sequence[ShardJob], receipts: Mapping[str, dict], num_labels: int) -> dict[str, np.ndarray]:
    """Images per label index in each split, from the shards' receipts."""
    counts: dict[str, np.ndarray] = {}
    for job in jobs:
        split = counts.setdefault(job.split, np.zeros(num_labels, dtype=np.int64))
        split += np.asarray(receipts[job.name]["label_counts"], dtype=np.int64)
    return counts


def dataset_info(
    name: str, label_map: LabelMap, jobs: Sequence[ShardJob], receipts: Mapping[str, dict], groups: dict,
    stratification: dict, skipped: Skipped,
) -> dict:
    """The content of shard_info.json."""
    splits: dict[str, dict] = {}
    for job in jobs:
        receipt = receipts[job.name]
        split = splits.setdefault(job.split, {"num_examples": 0, "num_bytes": 0, "shards": [], "shard_lengths": []})
        split["num_examples"] += receipt["length"]
        split["num_bytes"] += receipt["num_bytes"]
        split["shards"].append(job.name)
        split["shard_lengths"].append(receipt["length"])
    for split, counts in split_label_counts(jobs, receipts, len(label_map)).items():
        splits[split]["label_counts"] = counts.tolist()
    return {
        "name": name,
        "num_labels": len(label_map),
        "created_by": CREATED_BY,
        "splits": splits,
        "groups": groups,
        "stratification": stratification,
        "skipped": skipped.to_dict(),
    }


def group_info(label_map: LabelMap, catalog: Catalog) -> dict:
    """Label indices of each group and whether it is single-choice (no image has two of its labels)."""
    group_names = label_map.group_names()
    group_of = np.asarray([group_names.index(g) for g in label_map.groups], dtype=np.int64)
    rows, labels = catalog.label_pairs()
    # labels per (image, group), then the most any image has in each group
    image_groups, per_image_group = np.unique(rows * len(group_names) + group_of[labels], return_counts=True)
    max_per_group = np.zeros(len(group_names), dtype=np.int64)
    np.maximum.at(max_per_group, image_groups % len(group_names), per_image_group)
    return {
        group: {"labels": label_map.group_members(group).tolist(), "exclusive": bool(max_per_group[g] <= 1)}
        for g, group in enumerate(group_names)
    }


def write_tfds_metadata(out: Path, name: str, num_labels: int, info: dict) -> Path:
    """TFDS metadata beside the shards (dataset_info.json, features.json), so that tfds.builder_from_directory(OUT)
    loads them: the documents TFDS's write_metadata writes, made here without TensorFlow (tested with TFDS)."""
    splits = [{"filepathTemplate": TFDS_SHARD_TEMPLATE, "name": split, "numBytes": str(data["num_bytes"]),
               "shardLengths": [str(length) for length in data["shard_lengths"]]}
              for split, data in info["splits"].items()]
    dataset_info_document = {
        "description": f"{name}: multi-label image classification shards written by {CREATED_BY}",
        "fileFormat": SHARD_SUFFIX.lstrip("."),
        "name": name,
        "splits": splits,
        "version": "1.0.0",
    }
    info_file, features_file = (Path(out) / file for file in TFDS_FILES)
    write_json_atomic(features_file, schema.tfds_features_document(num_labels))
    write_json_atomic(info_file, dataset_info_document)
    return out
