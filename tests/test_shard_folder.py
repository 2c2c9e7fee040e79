"""fashion_tf.shard_folder: names, metadata reading, the label-count check, receipts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fashion_tf.errors import UserError
from fashion_tf.labels import LabelMap
from fashion_tf.shard_folder import ShardFolder, shard_names

NUM_LABELS = 5


def write_metadata(root: Path, num_labels: int = NUM_LABELS, mapped_labels: int = NUM_LABELS) -> ShardFolder:
    folder = ShardFolder(root)
    root.mkdir(parents=True, exist_ok=True)
    splits = {}
    for split, count, shards in (("train", 60, 4), ("validation", 13, 1)):
        names = shard_names(split, shards)
        for name in names:
            folder.shard_path(name).write_bytes(b"")
        splits[split] = {"num_examples": count, "shards": names, "shard_lengths": [count // shards] * shards,
                         "label_counts": list(range(1, num_labels + 1))}
    info = {"num_labels": num_labels, "splits": splits,
            "groups": {"pair": {"labels": [0, 1], "exclusive": True}, "rest": {"labels": [2, 3, 4], "exclusive": False}}}
    folder.info_path.write_text(json.dumps(info))
    LabelMap.from_ids([str(k + 1) for k in range(mapped_labels)]).to_json(folder.label_map_path)
    return folder


def test_metadata_of_a_folder(tmp_path):
    folder = write_metadata(tmp_path / "shards")
    assert folder.num_labels == NUM_LABELS and len(folder.label_map) == NUM_LABELS
    assert folder.num_examples("train") == 60
    assert folder.shard_files("train") == [str(tmp_path / "shards" / f"train-{s:05d}-of-00004.tfrecord") for s in range(4)]
    np.testing.assert_array_equal(folder.label_counts("validation"), [1, 2, 3, 4, 5])
    assert folder.single_choice_groups() == {"pair": [0, 1]}
    assert folder.splits() == ["train", "validation"]


def test_bad_folder_and_split_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="TFRecord folder not found"):
        ShardFolder(tmp_path / "nope").num_examples("train")
    with pytest.raises(UserError, match="shard_info.json: not found"):
        ShardFolder(tmp_path).num_examples("train")
    folder = write_metadata(tmp_path / "shards")
    with pytest.raises(UserError, match="no split 'test'.*train, validation"):
        folder.shard_files("test")
    folder.shard_path(shard_names("train", 4)[2]).unlink()
    with pytest.raises(UserError, match="train-00002-of-00004.tfrecord: shard listed in shard_info.json not found"):
        ShardFolder(folder.root).shard_files("train")


def test_a_label_map_shorter_than_the_shards_labels_is_refused(tmp_path):
    """Defect: a label map listing fewer labels than the shards use trained silently on the first labels only."""
    folder = write_metadata(tmp_path / "shards", num_labels=NUM_LABELS, mapped_labels=3)
    with pytest.raises(UserError, match="label_map.json: lists 3 labels but shard_info.json says the shards use 5"):
        folder.num_labels
    with pytest.raises(UserError, match="lists 3 labels"):
        ShardFolder(folder.root).num_examples("train")


def test_label_counts_of_another_length_are_refused(tmp_path):
    folder = write_metadata(tmp_path / "shards")
    info = json.loads(folder.info_path.read_text())
    info["splits"]["validation"]["label_counts"] = [1, 2]
    folder.info_path.write_text(json.dumps(info))
    with pytest.raises(UserError, match="splits.validation.label_counts has 2 labels, not 5"):
        ShardFolder(folder.root).num_labels


def test_a_receipt_counts_only_for_the_file_it_describes(tmp_path):
    folder = ShardFolder(tmp_path)
    name = shard_names("train", 1)[0]
    folder.shard_path(name).write_bytes(b"x" * 100)
    folder.receipt_path(name).parent.mkdir(parents=True)
    folder.receipt_path(name).write_text(json.dumps({"name": name, "num_bytes": 100}))
    assert folder.read_receipt(name)["num_bytes"] == 100
    folder.shard_path(name).write_bytes(b"x" * 60)  # truncated after it was complete
    assert folder.read_receipt(name) is None
    folder.shard_path(name).unlink()
    assert folder.read_receipt(name) is None


def test_one_writer_at_a_time_and_the_lock_outlives_an_overwrite(tmp_path):
    folder = ShardFolder(tmp_path / "shards")
    lock = folder.lock_for_writing()
    with pytest.raises(UserError, match=f"{folder.root}: another make_tfrecords run is writing this folder \\(pid "):
        folder.lock_for_writing()
    folder.plan_path.parent.mkdir(parents=True)
    folder.plan_path.write_text("{}")
    folder.remove_outputs()  # what --overwrite does: the lock file is not an output
    assert not folder.state_dir.exists() and folder.outputs() == []
    with pytest.raises(UserError, match="another make_tfrecords run"):
        folder.lock_for_writing()
    lock.release()
    folder.lock_for_writing().release()
