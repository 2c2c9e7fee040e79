"""make_tfrecords.plan: shard counts, the fingerprint, the plan file (resume, refuse, overwrite), shippable jobs."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from make_tfrecords_fixtures import make_download_folder, run

from fashion_tf.errors import UserError
from fashion_tf.labels import LabelMap
from fashion_tf.make_tfrecords.catalog import Catalog
from fashion_tf.make_tfrecords.plan import check_replaceable, fingerprint, job_of, plan_shards
from fashion_tf.shard_folder import ShardFolder, shard_names


def test_shard_counts_follow_size_and_parallel_readers():
    def shard_counts(n: int, image_kb: int, shard_mb: float = 128) -> dict:
        catalog = Catalog(sizes=[image_kb * 1024] * n)
        folds = np.zeros(n, dtype=np.int8)
        folds[: n // 10] = 1
        shards = plan_shards(catalog, folds, seed=0, shard_size_mb=shard_mb, min_shards=16)
        assert sorted(r for shard in shards for r in shard.rows) == list(range(n))  # every image once
        return {split: sum(shard.split == split for shard in shards) for split in ("train", "validation")}

    assert shard_counts(100_000, 6) == {"train": 16, "validation": 16}  # readers, not size, decide
    assert shard_counts(100_000, 200) == {"train": 138, "validation": 16}  # ~128 MB each
    assert shard_counts(7_000, 6) == {"train": 2, "validation": 1}
    assert shard_counts(30, 6, shard_mb=0.001) == {"train": 27, "validation": 3}  # at most one image each


def small_catalog(n: int = 1000) -> Catalog:
    catalog = Catalog()
    for i in range(n):
        catalog.add(f"{i:05d}", f"/data/images/{i:05d}.jpg", 5000 + i, np.asarray([i % 7, 7 + i % 3], dtype=np.int16))
    return catalog


def test_the_fingerprint_follows_options_label_map_inputs_and_images_but_not_the_name(tmp_path):
    catalog, label_map = small_catalog(20), LabelMap.from_ids([str(i) for i in range(10)])
    (tmp_path / "input.json").write_text("{}")
    options = {"seed": 0, "shard_size_mb": 128, "name": "a"}
    base = fingerprint(catalog, label_map, options, [tmp_path / "input.json"])
    assert fingerprint(catalog, label_map, dict(options, name="b"), [tmp_path / "input.json"]) == base
    assert fingerprint(catalog, label_map, dict(options, seed=1), [tmp_path / "input.json"]) != base
    assert fingerprint(catalog, LabelMap.from_ids([str(i) for i in range(11)]), options,
                       [tmp_path / "input.json"]) != base
    catalog.sizes[3] += 1  # an image replaced by another file
    assert fingerprint(catalog, label_map, options, [tmp_path / "input.json"]) != base
    catalog.sizes[3] -= 1
    (tmp_path / "input.json").write_text("{ }")
    assert fingerprint(catalog, label_map, options, [tmp_path / "input.json"]) != base


def test_a_job_carries_its_own_images_only_and_survives_pickling():
    catalog = small_catalog(1000)
    folds = np.zeros(len(catalog), dtype=np.int8)
    shards = plan_shards(catalog, folds, seed=0, shard_size_mb=0.5, min_shards=1)
    assert len(shards) == 11  # 5.5 MB of images in 0.5 MB shards
    job = job_of(shards[4], catalog)
    assert [catalog.ids.index(i) for i in job.image_ids] == shards[4].rows
    shipped = pickle.loads(pickle.dumps(job))
    assert shipped.name == job.name and shipped.paths == job.paths
    assert all(np.array_equal(a, b) for a, b in zip(shipped.labels, job.labels))
    assert len(pickle.dumps(job)) < len(pickle.dumps(catalog)) / 5  # an eleventh of the images, not the catalog


def test_shards_without_a_plan_are_not_replaced_unless_asked(tmp_path):
    folder = ShardFolder(tmp_path)
    folder.shard_path(shard_names("train", 1)[0]).write_bytes(b"someone's shard")
    with pytest.raises(UserError, match="shards without a plan; pass --overwrite"):
        check_replaceable(folder, overwrite=False)
    check_replaceable(folder, overwrite=True)


def test_changed_options_refuse_then_overwrite(tmp_path, capsys):
    make_download_folder(tmp_path / "dl", n=12, failed=0)
    out = tmp_path / "out"
    base = ["--input", tmp_path / "dl", "--output-dir", out, "--no-tfds"]
    assert run(base) == 0
    capsys.readouterr()
    assert run(base + ["--seed", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "--overwrite" in err and "\n" not in err
    assert run(base + ["--seed", "1", "--overwrite"]) == 0
    capsys.readouterr()
    assert run(base + ["--seed", "1"]) == 0
    assert capsys.readouterr().err.startswith("resuming: the plan in")
