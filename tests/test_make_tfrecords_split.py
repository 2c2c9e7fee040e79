"""make_tfrecords.split: iterative stratification, --split-from, and splits independent of the input's row order."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
from make_tfrecords_fixtures import make_download_folder, read_split, run, shard_info

from fashion_tf.errors import UserError
from fashion_tf.make_tfrecords.catalog import Catalog
from fashion_tf.make_tfrecords.split import read_split_ids, split_from_ids, stratified_assignment
from fashion_tf.manifest import manifest_path


def test_stratification_on_a_skewed_label_set_is_balanced_and_seeded():
    rng = np.random.default_rng(1)
    n, c = 3000, 40
    frequencies = 0.5 / np.arange(1, c + 1) ** 1.3  # Zipf-like: 50% ... 0.4%
    matrix = (rng.random((n, c)) < frequencies).astype(np.uint8)
    matrix[:, -3:] = 0
    matrix[[10, 20], -3] = 1  # two examples
    matrix[[30, 40, 50], -2] = 1  # three examples
    matrix[60, -1] = 1  # a single example: cannot be in both splits
    folds = stratified_assignment(matrix, [0.9, 0.1], seed=0)
    assert np.array_equal(folds, stratified_assignment(matrix, [0.9, 0.1], seed=0))
    assert not np.array_equal(folds, stratified_assignment(matrix, [0.9, 0.1], seed=1))
    val = matrix[folds == 1].sum(axis=0)
    totals = matrix.sum(axis=0)
    assert abs((folds == 1).mean() - 0.1) < 0.01
    assert np.all(val[totals >= 2] >= 1) and np.all((totals - val)[totals >= 2] >= 1)  # both splits
    common = totals >= 50
    assert np.all(np.abs(val[common] / totals[common] - 0.1) < 0.03)
    # a plain random split of the same size is visibly worse on the rare labels
    random_val = matrix[rng.permutation(n)[: int((folds == 1).sum())]].sum(axis=0)
    assert np.abs(val / np.maximum(totals, 1) - 0.1)[totals >= 5].mean() < \
        np.abs(random_val / np.maximum(totals, 1) - 0.1)[totals >= 5].mean()


def test_split_ids_from_a_text_file_or_a_challenge_json(tmp_path):
    (tmp_path / "ids.csv").write_text("id\n7\n 8 ,x\n\n")
    assert read_split_ids(tmp_path / "ids.csv") == {"7", "8"}
    (tmp_path / "validation.json").write_text(json.dumps({"images": [{"imageId": "3", "url": "http://x/3.jpg"}]}))
    assert read_split_ids(tmp_path / "validation.json") == {"3"}
    (tmp_path / "none.txt").write_text("id\n")
    with pytest.raises(UserError, match="none.txt: --split-from lists no image ids"):
        read_split_ids(tmp_path / "none.txt")
    catalog = Catalog(ids=["1", "7", "9"])
    folds, method = split_from_ids(catalog, {"7", "8"}, tmp_path / "ids.csv")
    assert folds.tolist() == [0, 1, 0] and method == {"method": "split_from", "listed": 2, "matched": 1}
    with pytest.raises(UserError, match="ids.csv: --split-from: none of its 1 ids is among the input images"):
        split_from_ids(catalog, {"8"}, tmp_path / "ids.csv")


def test_split_from_file_and_test_fraction(tmp_path):
    make_download_folder(tmp_path / "dl", n=30, failed=0)
    (tmp_path / "val.txt").write_text("1001\n1002\n9999\n")
    out = tmp_path / "out"
    assert run(["--input", tmp_path / "dl", "--output-dir", out, "--split-from", tmp_path / "val.txt",
                "--no-tfds"]) == 0
    assert set(read_split(out, "validation")) == {"1001", "1002"}
    info = shard_info(out)
    assert info["stratification"]["method"] == "split_from" and info["stratification"]["matched"] == 2
    out3 = tmp_path / "out3"
    assert run(["--input", tmp_path / "dl", "--output-dir", out3, "--val-fraction", "0.2", "--test-fraction",
                "0.2", "--no-tfds"]) == 0
    splits = shard_info(out3)["splits"]
    assert set(splits) == {"train", "validation", "test"}
    assert sum(s["num_examples"] for s in splits.values()) == 30


def test_split_and_shards_do_not_depend_on_the_manifest_row_order(tmp_path):
    # The downloader writes manifest rows in the order downloads finish, which differs from run to run.
    make_download_folder(tmp_path / "dl", n=60, failed=0)
    rows = manifest_path(tmp_path / "dl").read_text().splitlines()
    shutil.copytree(tmp_path / "dl", tmp_path / "dl2")
    # another order of the images; a stable sort keeps the retried image's failed row before its ok row
    rows.sort(key=lambda row: hashlib.md5(json.loads(row)["image_id"].encode()).hexdigest())
    manifest_path(tmp_path / "dl2").write_text("\n".join(rows) + "\n")
    outs = [tmp_path / "out", tmp_path / "out2"]
    for folder, out in zip((tmp_path / "dl", tmp_path / "dl2"), outs):
        assert run(["--input", folder, "--output-dir", out, "--val-fraction", "0.25", "--no-tfds"]) == 0
    validation = [set(read_split(out, "validation")) for out in outs]
    assert validation[0] == validation[1] and 12 <= len(validation[0]) <= 18
    shards = [shard_info(out)["splits"]["train"]["shards"] for out in outs]
    assert shards[0] == shards[1]
    import tensorflow as tf

    for name in shards[0]:  # the same images in the same order in every shard
        first, second = ([r.numpy() for r in tf.data.TFRecordDataset(str(out / name))] for out in outs)
        assert first == second
