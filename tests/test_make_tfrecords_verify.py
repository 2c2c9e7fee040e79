"""make_tfrecords.verify: --verify reads a shard folder back and names what breaks a promise of its metadata."""

from __future__ import annotations

import json

import pytest
from make_tfrecords_fixtures import make_download_folder, run, shard_info

from fashion_tf.labels import LabelMap
from fashion_tf.shard_folder import ShardFolder


@pytest.fixture
def shards(tmp_path):
    make_download_folder(tmp_path / "dl", n=30, failed=0)
    out = tmp_path / "out"
    assert run(["--input", tmp_path / "dl", "--output-dir", out, "--shard-size-mb", "0.002", "--no-tfds"]) == 0
    assert run(["--output-dir", out, "--verify"]) == 0
    return out


def test_verify_names_the_shard_with_a_flipped_byte(shards, capsys):
    victim = shards / shard_info(shards)["splits"]["train"]["shards"][1]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    capsys.readouterr()
    assert run(["--output-dir", shards, "--verify"]) == 1
    err = capsys.readouterr().err
    assert victim.name in err and err.count("\n") == 1


def test_verify_checks_each_shard_against_the_sha256_of_its_receipt(shards, capsys):
    folder = ShardFolder(shards)
    name = shard_info(shards)["splits"]["validation"]["shards"][0]
    receipt = json.loads(folder.receipt_path(name).read_text())
    folder.receipt_path(name).write_text(json.dumps(dict(receipt, sha256="0" * 64)))
    capsys.readouterr()
    assert run(["--output-dir", shards, "--verify"]) == 1
    assert capsys.readouterr().err == f"{name}: sha256 of the file differs from its receipt's\n"


def test_defect_verify_refuses_a_label_map_shorter_than_the_shards_labels(shards, capsys):
    """Issue #17: a shard folder whose label_map.json lists fewer labels than the shards use passed --verify."""
    folder = ShardFolder(shards)
    LabelMap.from_ids(["1", "2", "3"]).to_json(folder.label_map_path)  # the shards use 6 labels
    capsys.readouterr()
    assert run(["--output-dir", shards, "--verify"]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"error: {folder.label_map_path}: lists 3 labels") and captured.err.count("\n") == 1


def test_defect_verify_checks_every_records_label_indices_against_the_label_map(shards, capsys):
    """The same short label map with shard_info.json edited to agree: the records' label indices give it away."""
    folder = ShardFolder(shards)
    LabelMap.from_ids(["1", "2", "3"]).to_json(folder.label_map_path)
    info = shard_info(shards)
    info["num_labels"] = 3
    for split in info["splits"].values():
        split["label_counts"] = split["label_counts"][:3]
    folder.info_path.write_text(json.dumps(info))
    capsys.readouterr()
    assert run(["--output-dir", shards, "--verify"]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines and all(f"outside the 3 labels of {folder.label_map_path.name}" in line for line in lines)
