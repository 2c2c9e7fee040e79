"""make_tfrecords: real images (tiny, Pillow-made) -> real shards, read back with TF, TFDS and Model Garden's keys."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fashion_tf import schema
from fashion_tf.errors import run_cli
from fashion_tf.make_tfrecords import Catalog, main, plan_shards, stratified_assignment

REPO = Path(__file__).resolve().parents[1]
TOOL = REPO / "tools" / "make_tfrecords.py"
DATA = Path(os.environ.get("FASHION_PRODUCTS_DIR", REPO.parent / "shared/data/fashion-products"))


# ---------------------------------------------------------------------------- helpers


def image_bytes(seed: int, fmt: str = "JPEG", size: tuple[int, int] = (12, 8)) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def labels_for(i: int) -> list[str]:
    """Skewed multi-label set: label 1 common, 2..5 rarer, 6 on two images only."""
    labels = ["1"] if i % 2 == 0 else []
    labels += [str(2 + i % 4)] if i % 3 else []
    labels += ["6"] if i in (5, 17) else []
    return labels


def make_download_folder(root: Path, n: int = 40, failed: int = 2) -> dict[str, tuple[bytes, list[str]]]:
    """A download stage output: manifest.jsonl + images/, some PNGs, a re-tried id, failed rows."""
    (root / "images").mkdir(parents=True)
    expected, rows = {}, []
    for i in range(n):
        image_id = str(1000 + i)
        fmt, ext = ("PNG", "png") if i % 5 == 0 else ("JPEG", "jpg")
        data = image_bytes(i, fmt, size=(10 + i % 7, 6 + i % 5))
        (root / "images" / f"{image_id}.{ext}").write_bytes(data)
        labels = labels_for(i)
        if i == 3:  # first attempt failed, the retry succeeded: last row wins
            rows.append({"image_id": image_id, "status": "failed", "path": None, "labels": labels})
        rows.append({"image_id": image_id, "status": "ok", "path": f"images/{image_id}.{ext}", "labels": labels,
                     "width": 1, "height": 1, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)})
        expected[image_id] = (data, labels)
    for j in range(failed):
        rows.append({"image_id": f"f{j}", "status": "failed", "path": None, "labels": ["1"]})
    with open(root / "manifest.jsonl", "w") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    return expected


def read_split(out: Path, split: str) -> dict[str, dict]:
    import tensorflow as tf

    info = json.loads((out / "shard_info.json").read_text())
    records = {}
    for shard in info["splits"][split]["shards"]:
        for raw in tf.data.TFRecordDataset(str(out / shard)):
            parsed = {k: v.numpy() for k, v in schema.parse_example(raw).items()}
            records[parsed[schema.SOURCE_ID].decode()] = parsed
    return records


def parsed_records(shard: Path) -> list:
    """Examples as protos (equal when their features are, whatever the map order of their bytes)."""
    import tensorflow as tf

    return [tf.train.Example.FromString(raw) for raw in tf.compat.v1.io.tf_record_iterator(str(shard))]


def run(argv: list[str], capsys=None) -> int:
    return run_cli(main, [str(a) for a in argv])


@pytest.fixture(scope="module")
def download_run(tmp_path_factory):
    """One full run on a download folder, shared by the tests that only read its output."""
    root = tmp_path_factory.mktemp("download")
    expected = make_download_folder(root / "dl")
    out = root / "out"
    code = run(["--input", root / "dl", "--output-dir", out, "--val-fraction", "0.25", "--workers", "2",
                "--shard-size-mb", "0.0005", "--min-shards", "1"])
    assert code == 0
    return expected, out


# ---------------------------------------------------------------------------- round trip and metadata


def test_round_trip_keeps_bytes_labels_and_header_sizes(download_run):
    expected, out = download_run
    label_map = json.loads((out / "label_map.json").read_text())
    ids = [entry["id"] for entry in label_map["labels"]]
    records = {**read_split(out, "train"), **read_split(out, "validation")}
    assert set(records) == set(expected)  # failed rows left out, the retried id kept once
    for image_id, (data, labels) in expected.items():
        record = records[image_id]
        assert record[schema.ENCODED] == data
        assert sorted(ids[i] for i in record[schema.LABEL]) == sorted(labels)
        assert record[schema.SHA256].decode() == hashlib.sha256(data).hexdigest()
        image = Image.open(io.BytesIO(data))
        assert (record[schema.WIDTH], record[schema.HEIGHT]) == image.size
        assert record[schema.FORMAT].decode() == {"JPEG": "jpeg", "PNG": "png"}[image.format]


def test_dataset_info_shape_and_counts(download_run):
    expected, out = download_run
    info = json.loads((out / "shard_info.json").read_text())
    assert set(info) == {"name", "num_labels", "created_by", "splits", "groups", "stratification", "skipped"}
    assert info["created_by"] == "fashion_tf.make_tfrecords" and info["num_labels"] == 6
    assert set(info["splits"]) == {"train", "validation"}
    total = 0
    for split, data in info["splits"].items():
        assert len(data["shards"]) == len(data["shard_lengths"]) > 1
        n = len(data["shards"])
        assert data["shards"] == [f"{split}-{i:05d}-of-{n:05d}.tfrecord" for i in range(n)]
        assert sum(data["shard_lengths"]) == data["num_examples"]
        assert data["num_bytes"] == sum((out / s).stat().st_size for s in data["shards"])
        records = read_split(out, split)
        assert len(records) == data["num_examples"]
        counts = np.zeros(6, dtype=int)
        for record in records.values():
            counts[record[schema.LABEL]] += 1
        assert counts.tolist() == data["label_counts"]
        total += data["num_examples"]
    assert total == len(expected)
    assert info["skipped"]["by_reason"] == {"download_failed": 2}
    assert info["groups"] == {"all": {"labels": [0, 1, 2, 3, 4, 5], "exclusive": False}}
    per_label = info["stratification"]["label_fraction"]["validation"]["per_label"]
    assert len(per_label) == 6 and all(0 < f < 1 for f in per_label)  # every label in both splits


def test_tfds_builder_loads_the_shards(download_run):
    import tensorflow_datasets as tfds

    expected, out = download_run
    builder = tfds.builder_from_directory(str(out))
    flat = tfds.core.utils.flatten_nest_dict(builder.info.features.get_serialized_info())
    assert set(flat) == set(schema.FEATURE_NAMES)  # nested FeaturesDict == our flat keys
    info = json.loads((out / "shard_info.json").read_text())
    assert builder.info.splits["train"].num_examples == info["splits"]["train"]["num_examples"]
    seen = 0
    for example in tfds.as_numpy(builder.as_dataset(split="train")):
        image = example["image"]
        image_id = image["source_id"].decode()
        data, labels = expected[image_id]
        assert image["encoded"].shape == (image["height"], image["width"], 3)  # decoded by tfds.features.Image
        assert np.array_equal(image["encoded"], np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))) or \
            image["format"] == b"jpeg"  # JPEG decoders may differ by a level; PNG must match exactly
        assert len(image["class"]["label"]) == len(labels)
        seen += 1
    assert seen == info["splits"]["train"]["num_examples"]


def test_model_garden_classification_decoder_keys_parse_the_shards(download_run):
    """keys_to_features exactly as official/vision/dataloaders/classification_input.py Decoder(is_multilabel=True)."""
    import tensorflow as tf

    expected, out = download_run
    keys_to_features = {
        "image/encoded": tf.io.FixedLenFeature((), tf.string, default_value=""),
        "image/class/label": tf.io.VarLenFeature(dtype=tf.int64),
    }
    ids = [e["id"] for e in json.loads((out / "label_map.json").read_text())["labels"]]
    info = json.loads((out / "shard_info.json").read_text())
    for shard in info["splits"]["validation"]["shards"]:
        for raw in tf.data.TFRecordDataset(str(out / shard)):
            decoded = tf.io.parse_single_example(raw, keys_to_features)
            label = tf.sparse.to_dense(decoded["image/class/label"]).numpy()
            image_id = tf.io.parse_single_example(raw, schema.feature_spec())[schema.SOURCE_ID].numpy().decode()
            data, labels = expected[image_id]
            assert decoded["image/encoded"].numpy() == data
            assert sorted(ids[i] for i in label) == sorted(labels)
            tf.io.decode_image(decoded["image/encoded"], channels=3)  # its Parser decodes this way


# ---------------------------------------------------------------------------- stratification


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


def test_shard_counts_follow_size_and_parallel_readers():
    def shard_counts(n: int, image_kb: int, shard_mb: float = 128) -> dict:
        catalog = Catalog(sizes=[image_kb * 1024] * n)
        folds = np.zeros(n, dtype=np.int8)
        folds[: n // 10] = 1
        jobs = plan_shards(catalog, folds, seed=0, shard_size_mb=shard_mb, min_shards=16)
        assert sorted(r for job in jobs for r in job.rows) == list(range(n))  # every image once
        return {split: sum(job.split == split for job in jobs) for split in ("train", "validation")}

    assert shard_counts(100_000, 6) == {"train": 16, "validation": 16}  # readers, not size, decide
    assert shard_counts(100_000, 200) == {"train": 138, "validation": 16}  # ~128 MB each
    assert shard_counts(7_000, 6) == {"train": 2, "validation": 1}
    assert shard_counts(30, 6, shard_mb=0.001) == {"train": 27, "validation": 3}  # at most one image each


def test_split_from_file_and_test_fraction(tmp_path):
    make_download_folder(tmp_path / "dl", n=30, failed=0)
    (tmp_path / "val.txt").write_text("1001\n1002\n9999\n")
    out = tmp_path / "out"
    assert run(["--input", tmp_path / "dl", "--output-dir", out, "--split-from", tmp_path / "val.txt",
                "--no-tfds"]) == 0
    assert set(read_split(out, "validation")) == {"1001", "1002"}
    info = json.loads((out / "shard_info.json").read_text())
    assert info["stratification"]["method"] == "split_from" and info["stratification"]["matched"] == 2
    out3 = tmp_path / "out3"
    assert run(["--input", tmp_path / "dl", "--output-dir", out3, "--val-fraction", "0.2", "--test-fraction",
                "0.2", "--no-tfds"]) == 0
    splits = json.loads((out3 / "shard_info.json").read_text())["splits"]
    assert set(splits) == {"train", "validation", "test"}
    assert sum(s["num_examples"] for s in splits.values()) == 30


def test_split_and_shards_do_not_depend_on_the_manifest_row_order(tmp_path):
    # The downloader writes manifest rows in the order downloads finish, which differs from run to run.
    make_download_folder(tmp_path / "dl", n=60, failed=0)
    rows = (tmp_path / "dl" / "manifest.jsonl").read_text().splitlines()
    shutil.copytree(tmp_path / "dl", tmp_path / "dl2")
    # another order of the images; a stable sort keeps the retried image's failed row before its ok row
    rows.sort(key=lambda row: hashlib.md5(json.loads(row)["image_id"].encode()).hexdigest())
    (tmp_path / "dl2" / "manifest.jsonl").write_text("\n".join(rows) + "\n")
    outs = [tmp_path / "out", tmp_path / "out2"]
    for folder, out in zip((tmp_path / "dl", tmp_path / "dl2"), outs):
        assert run(["--input", folder, "--output-dir", out, "--val-fraction", "0.25", "--no-tfds"]) == 0
    validation = [set(read_split(out, "validation")) for out in outs]
    assert validation[0] == validation[1] and 12 <= len(validation[0]) <= 18
    shards = [json.loads((out / "shard_info.json").read_text())["splits"]["train"]["shards"] for out in outs]
    assert shards[0] == shards[1]
    import tensorflow as tf

    for name in shards[0]:  # the same images in the same order in every shard
        first, second = ([r.numpy() for r in tf.data.TFRecordDataset(str(out / name))] for out in outs)
        assert first == second


# ---------------------------------------------------------------------------- input kinds


def write_images(folder: Path, ids: list[str]) -> dict[str, bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for k, image_id in enumerate(ids):
        out[image_id] = image_bytes(k)
        (folder / f"{image_id}.jpg").write_bytes(out[image_id])
    return out


@pytest.mark.parametrize("shape", ["fashion", "furniture"])
def test_imaterialist_json_with_images_folder_and_a_missing_image(tmp_path, shape):
    ids = [str(i) for i in range(1, 13)]
    images = write_images(tmp_path / "imgs", ids[:-1])  # the last image was never downloaded
    id_key, label_key = ("imageId", "labelId") if shape == "fashion" else ("image_id", "label_id")
    convert = str if shape == "fashion" else int
    doc = {
        "images": [{"url": f"http://x/{i}.jpg", id_key: convert(i)} for i in ids],
        "annotations": [{label_key: [convert(x) for x in labels_for(int(i))], id_key: convert(i)} for i in ids],
    }
    (tmp_path / "train.json").write_text(json.dumps(doc))
    out = tmp_path / "out"
    assert run(["--input", tmp_path / "train.json", "--images", tmp_path / "imgs", "--output-dir", out,
                "--val-fraction", "0", "--no-tfds"]) == 0
    records = read_split(out, "train")
    assert set(records) == set(ids[:-1])
    assert all(records[i][schema.ENCODED] == images[i] for i in records)
    info = json.loads((out / "shard_info.json").read_text())
    assert info["skipped"]["by_reason"] == {"missing_file": 1}
    assert info["skipped"]["examples"]["missing_file"][0].startswith("12")


def test_attribute_csv_groups_become_label_groups(tmp_path):
    ids = [str(100 + i) for i in range(10)]
    write_images(tmp_path / "images", ids)
    with open(tmp_path / "styles.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "gender", "articleType", "baseColour", "year", "productDisplayName"])
        for k, image_id in enumerate(ids):
            writer.writerow([image_id, ["Men", "Women"][k % 2], ["Tshirts", "Shirts", "Jeans"][k % 3],
                             "" if k == 4 else ["Blue", "Red"][k % 2], 2012, f"Item {k}"])
    out = tmp_path / "out"
    assert run(["--input", tmp_path / "styles.csv", "--output-dir", out, "--val-fraction", "0",
                "--groups", "gender,articleType", "--no-tfds"]) == 0
    label_map = json.loads((out / "label_map.json").read_text())["labels"]
    assert [(e["group"], e["name"]) for e in label_map] == [
        ("gender", "Men"), ("gender", "Women"), ("articleType", "Jeans"), ("articleType", "Shirts"),
        ("articleType", "Tshirts")]
    info = json.loads((out / "shard_info.json").read_text())
    assert info["groups"] == {"gender": {"labels": [0, 1], "exclusive": True},
                              "articleType": {"labels": [2, 3, 4], "exclusive": True}}
    record = read_split(out, "train")["102"]
    assert sorted(record[schema.LABEL].tolist()) == [0, 2]  # Men, Jeans
    default = tmp_path / "default"  # default groups: all but id/year/productDisplayName; empty cell -> no label
    assert run(["--input", tmp_path / "styles.csv", "--output-dir", default, "--val-fraction", "0",
                "--no-tfds"]) == 0
    groups = json.loads((default / "shard_info.json").read_text())["groups"]
    assert list(groups) == ["gender", "articleType", "baseColour"]
    assert len(read_split(default, "train")["104"][schema.LABEL]) == 2


def test_class_per_folder_tree_is_single_label(tmp_path):
    import tensorflow as tf

    for k, name in enumerate(["cat", "dog", "dog", "fox", "fox", "fox"]):
        folder = tmp_path / "tree" / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"img{k}.png").write_bytes(image_bytes(k, "PNG"))
    (tmp_path / "tree" / "fox" / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    assert run(["--input", tmp_path / "tree", "--output-dir", out, "--val-fraction", "0", "--no-tfds"]) == 0
    info = json.loads((out / "shard_info.json").read_text())
    assert info["groups"] == {"class": {"labels": [0, 1, 2], "exclusive": True}}
    assert info["splits"]["train"]["label_counts"] == [1, 2, 3]
    single_label_keys = {  # Model Garden's single-label Decoder
        "image/encoded": tf.io.FixedLenFeature((), tf.string, default_value=""),
        "image/class/label": tf.io.FixedLenFeature((), tf.int64, default_value=-1),
    }
    for raw in tf.data.TFRecordDataset(str(out / info["splits"]["train"]["shards"][0])):
        assert 0 <= tf.io.parse_single_example(raw, single_label_keys)["image/class/label"].numpy() <= 2


@pytest.mark.skipif(not (DATA / "styles.csv").is_file(), reason="fashion-products data set not present")
def test_fashion_products_styles_csv_matches_its_train_json(tmp_path):
    """styles.csv + the shipped label_map.csv gives the same labels as the data set's train.json."""
    lines = (DATA / "styles.csv").read_text(encoding="utf-8").splitlines()
    (tmp_path / "styles.csv").write_text("\n".join(lines[:201]) + "\n")
    out = tmp_path / "out"
    assert run(["--input", tmp_path / "styles.csv", "--images", DATA / "images", "--label-map",
                DATA / "label_map.csv", "--groups", "gender,masterCategory,subCategory,articleType,baseColour,"
                "season,usage", "--output-dir", out, "--no-tfds", "--verify"]) == 0
    train_json = json.loads((DATA / "train.json").read_text())
    truth = {a["imageId"]: sorted(a["labelId"], key=int) for a in train_json["annotations"]}
    ids = [e["id"] for e in json.loads((out / "label_map.json").read_text())["labels"]]
    records = {**read_split(out, "train"), **read_split(out, "validation")}
    assert len(records) == 200
    for image_id, record in records.items():
        assert sorted((ids[i] for i in record[schema.LABEL]), key=int) == truth[image_id]
        assert record[schema.ENCODED] == (DATA / "images" / f"{image_id}.jpg").read_bytes()


# ---------------------------------------------------------------------------- resume, verify


def test_resume_after_sigkill_keeps_complete_shards_and_matches_a_clean_run(tmp_path):
    make_download_folder(tmp_path / "dl", n=240, failed=0)
    out = tmp_path / "out"
    argv = [sys.executable, str(TOOL), "--input", str(tmp_path / "dl"), "--output-dir", str(out),
            "--shard-size-mb", "0.002", "--workers", "1", "--no-tfds"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    receipts = out / ".make_tfrecords" / "shards"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if receipts.is_dir() and len(list(receipts.iterdir())) >= 3:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    plan = json.loads((out / ".make_tfrecords" / "plan.json").read_text())
    names = [s["name"] for s in plan["shards"]]
    complete = [n for n in names if (out / n).exists()]
    assert 0 < len(complete) < len(names), "the run was not killed mid-write; make the test input bigger"
    for name, shard in zip(names, plan["shards"]):  # whatever has a final name is a whole shard
        if (out / name).exists():
            assert len(parsed_records(out / name)) == len(shard["rows"])
    kept = {n: (out / n).stat().st_mtime_ns for n in complete if (receipts / f"{n}.json").exists()}
    assert run(["--input", tmp_path / "dl", "--output-dir", out, "--shard-size-mb", "0.002", "--no-tfds",
                "--verify"]) == 0
    assert {n: (out / n).stat().st_mtime_ns for n in kept} == kept  # not rewritten
    assert not list(out.glob(".*.tmp"))
    clean = tmp_path / "clean"
    assert run(["--input", tmp_path / "dl", "--output-dir", clean, "--shard-size-mb", "0.002", "--no-tfds"]) == 0
    for name in names:  # same records in the same order (bytes may differ: protobuf map order is per process)
        assert parsed_records(out / name) == parsed_records(clean / name)


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


def test_verify_names_the_shard_with_a_flipped_byte(tmp_path, capsys):
    make_download_folder(tmp_path / "dl", n=30, failed=0)
    out = tmp_path / "out"
    assert run(["--input", tmp_path / "dl", "--output-dir", out, "--shard-size-mb", "0.002", "--no-tfds"]) == 0
    assert run(["--output-dir", out, "--verify"]) == 0
    info = json.loads((out / "shard_info.json").read_text())
    victim = out / info["splits"]["train"]["shards"][1]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    capsys.readouterr()
    assert run(["--output-dir", out, "--verify"]) == 1
    err = capsys.readouterr().err
    assert victim.name in err and err.count("\n") == 1


# ---------------------------------------------------------------------------- bad input


def one_line_error(capsys, argv: list) -> str:
    capsys.readouterr()
    assert run(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in captured.err
    return err


def test_unknown_label_id_names_the_id_and_the_image(tmp_path, capsys):
    make_download_folder(tmp_path / "dl", n=8, failed=0)
    (tmp_path / "map.csv").write_text("labelId,taskId,labelName,taskName\n1,1,a,t\n2,1,b,t\n3,1,c,t\n")
    err = one_line_error(capsys, ["--input", tmp_path / "dl", "--label-map", tmp_path / "map.csv",
                                  "--output-dir", tmp_path / "out"])
    assert "'4'" in err and "image 1002" in err  # labels_for(2) = ["1", "4"]


def test_missing_and_empty_inputs_fail_in_one_line(tmp_path, capsys):
    assert "no such file" in one_line_error(capsys, ["--input", tmp_path / "nope.json", "--output-dir", tmp_path / "o"])
    (tmp_path / "empty.json").write_text("")
    assert "empty" in one_line_error(capsys, ["--input", tmp_path / "empty.json", "--output-dir", tmp_path / "o"])
    (tmp_path / "dl").mkdir()
    (tmp_path / "dl" / "manifest.jsonl").write_text("")
    assert "no rows" in one_line_error(capsys, ["--input", tmp_path / "dl", "--output-dir", tmp_path / "o"])
    (tmp_path / "emptydir").mkdir()
    one_line_error(capsys, ["--input", tmp_path / "emptydir", "--output-dir", tmp_path / "o"])
    one_line_error(capsys, ["--output-dir", tmp_path / "o"])  # neither --input nor --verify
    one_line_error(capsys, ["--output-dir", tmp_path / "emptydir", "--verify"])  # nothing to verify


def test_unreadable_image_is_skipped_not_fatal(tmp_path):
    make_download_folder(tmp_path / "dl", n=10, failed=0)
    (tmp_path / "dl" / "images" / "1001.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    out = tmp_path / "out"
    assert run(["--input", tmp_path / "dl", "--output-dir", out, "--val-fraction", "0", "--no-tfds"]) == 0
    info = json.loads((out / "shard_info.json").read_text())
    assert info["splits"]["train"]["num_examples"] == 9
    assert info["skipped"]["by_reason"] == {"unreadable_image": 1}


def test_max_size_downscales_only_big_images_and_other_formats_become_png(tmp_path):
    folder = tmp_path / "tree" / "a"
    folder.mkdir(parents=True)
    small = image_bytes(1, "JPEG", size=(12, 8))
    (folder / "small.jpg").write_bytes(small)
    (folder / "wide.jpg").write_bytes(image_bytes(2, "JPEG", size=(40, 20)))
    (folder / "tall.png").write_bytes(image_bytes(3, "PNG", size=(20, 40)))
    (folder / "anim.gif").write_bytes(image_bytes(4, "GIF", size=(10, 10)))
    out = tmp_path / "out"
    assert run(["--input", tmp_path / "tree", "--output-dir", out, "--val-fraction", "0", "--max-size", "16",
                "--no-tfds"]) == 0
    records = read_split(out, "train")
    assert records["a/small"][schema.ENCODED] == small  # under the limit: bytes as they were
    for image_id, fmt, size in [("a/wide", "jpeg", (16, 8)), ("a/tall", "png", (8, 16)), ("a/anim", "png", (10, 10))]:
        record = records[image_id]
        image = Image.open(io.BytesIO(record[schema.ENCODED]))
        assert (record[schema.FORMAT].decode(), image.format.lower(), image.size) == (fmt, fmt, size)
        assert (record[schema.WIDTH], record[schema.HEIGHT]) == size
        assert record[schema.SHA256].decode() == hashlib.sha256(record[schema.ENCODED]).hexdigest()


def test_cli_help_shows_defaults():
    result = subprocess.run([sys.executable, str(TOOL), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "--shard-size-mb" in result.stdout and "(default: 128.0)" in result.stdout


def test_a_decompression_bomb_is_skipped_not_written(tmp_path):
    from conftest import png_bomb

    make_download_folder(tmp_path / "dl", n=12, failed=0)
    (tmp_path / "dl" / "images" / "1003.png").write_bytes(png_bomb())  # replaces one listed image
    manifest = tmp_path / "dl" / "manifest.jsonl"
    manifest.write_text(manifest.read_text().replace("images/1003.jpg", "images/1003.png"))
    out = tmp_path / "out"
    assert run(["--input", tmp_path / "dl", "--output-dir", out, "--val-fraction", "0", "--verify"]) == 0
    info = json.loads((out / "shard_info.json").read_text())
    assert info["skipped"]["by_reason"] == {"too_many_pixels": 1}
    assert "1003" not in read_split(out, "train") and len(read_split(out, "train")) == 11
