"""make_tfrecords.inputs: each input kind read into images + label map, end to end through real shards."""

from __future__ import annotations

import csv
import json

import pytest
from make_tfrecords_fixtures import (
    DATA, image_bytes, labels_for, make_download_folder, read_split, run, shard_info, write_images,
)

from fashion_tf import schema
from fashion_tf.errors import UserError
from fashion_tf.make_tfrecords.inputs import (
    ATTRIBUTE_CSV, CLASS_FOLDERS, IMATERIALIST, MANIFEST, detect_input_kind, load_input,
)
from fashion_tf.manifest import images_dir, manifest_path
from fashion_tf.shard_folder import ShardFolder


def test_input_kinds_are_detected(tmp_path):
    make_download_folder(tmp_path / "dl", n=2, failed=0)
    (tmp_path / "tree" / "cat").mkdir(parents=True)
    (tmp_path / "train.json").write_text('{"images": []}')
    (tmp_path / "sources.csv").write_text("id,url,labels\n1,http://x/1.jpg,3\n")
    (tmp_path / "styles.csv").write_text("id,gender\n1,Men\n")
    assert detect_input_kind(tmp_path / "dl") == MANIFEST
    assert detect_input_kind(manifest_path(tmp_path / "dl")) == MANIFEST
    assert detect_input_kind(tmp_path / "tree") == CLASS_FOLDERS
    assert detect_input_kind(tmp_path / "train.json") == IMATERIALIST
    assert detect_input_kind(tmp_path / "sources.csv") == IMATERIALIST
    assert detect_input_kind(tmp_path / "styles.csv") == ATTRIBUTE_CSV
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=f"neither a {manifest_path(tmp_path).name} nor class subfolders"):
        detect_input_kind(tmp_path / "empty")


def tear_a_manifest_line(folder, image_id: str) -> None:
    """What a download killed mid-write leaves, after its resumed run sealed the line and wrote the row again:
    a torn prefix of the image's row, then the whole row later."""
    manifest = manifest_path(folder)
    lines = manifest.read_text().splitlines(keepends=True)
    whole = next(line for line in lines if json.loads(line)["image_id"] == image_id and '"ok"' in line)
    lines.remove(whole)
    manifest.write_text("".join(lines[:3]) + whole[: len(whole) // 2] + "\n" + "".join(lines[3:]) + whole)


def test_a_torn_manifest_line_is_skipped_and_counted(tmp_path):
    make_download_folder(tmp_path / "dl", n=8, failed=0)
    tear_a_manifest_line(tmp_path / "dl", "1005")
    loaded = load_input(tmp_path / "dl")
    assert sorted(r.image_id for r in loaded.records) == [str(1000 + i) for i in range(8)]
    assert loaded.pre_skipped.counts == {"torn_manifest_line": 1}


def test_defect_a_torn_manifest_line_no_longer_refuses_the_download_folder(tmp_path, capsys):
    """Issue #17: a download killed mid-write of a manifest line resumes fine, but make_tfrecords refused the
    folder ("line N: not valid JSON"). The torn line is skipped and counted; every image is written."""
    expected = make_download_folder(tmp_path / "dl", n=20, failed=0)
    tear_a_manifest_line(tmp_path / "dl", "1005")
    out = tmp_path / "out"
    assert run(["--input", tmp_path / "dl", "--output-dir", out, "--val-fraction", "0", "--no-tfds"]) == 0
    assert "torn_manifest_line 1" in capsys.readouterr().out
    assert set(read_split(out, "train")) == set(expected)
    assert shard_info(out)["skipped"]["by_reason"] == {"torn_manifest_line": 1}


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
    info = shard_info(out)
    assert info["skipped"]["by_reason"] == {"missing_file": 1}
    assert info["skipped"]["examples"]["missing_file"][0].startswith("12")


def test_attribute_csv_groups_become_label_groups(tmp_path):
    ids = [str(100 + i) for i in range(10)]
    write_images(images_dir(tmp_path), ids)
    with open(tmp_path / "styles.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "gender", "articleType", "baseColour", "year", "productDisplayName"])
        for k, image_id in enumerate(ids):
            writer.writerow([image_id, ["Men", "Women"][k % 2], ["Tshirts", "Shirts", "Jeans"][k % 3],
                             "" if k == 4 else ["Blue", "Red"][k % 2], 2012, f"Item {k}"])
    out = tmp_path / "out"
    assert run(["--input", tmp_path / "styles.csv", "--output-dir", out, "--val-fraction", "0",
                "--groups", "gender,articleType", "--no-tfds"]) == 0
    label_map = json.loads(ShardFolder(out).label_map_path.read_text())["labels"]
    assert [(e["group"], e["name"]) for e in label_map] == [
        ("gender", "Men"), ("gender", "Women"), ("articleType", "Jeans"), ("articleType", "Shirts"),
        ("articleType", "Tshirts")]
    info = shard_info(out)
    assert info["groups"] == {"gender": {"labels": [0, 1], "exclusive": True},
                              "articleType": {"labels": [2, 3, 4], "exclusive": True}}
    record = read_split(out, "train")["102"]
    assert sorted(record[schema.LABEL].tolist()) == [0, 2]  # Men, Jeans
    default = tmp_path / "default"  # default groups: all but id/year/productDisplayName; empty cell -> no label
    assert run(["--input", tmp_path / "styles.csv", "--output-dir", default, "--val-fraction", "0",
                "--no-tfds"]) == 0
    assert list(shard_info(default)["groups"]) == ["gender", "articleType", "baseColour"]
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
    info = shard_info(out)
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
    ids = [e["id"] for e in json.loads(ShardFolder(out).label_map_path.read_text())["labels"]]
    records = {**read_split(out, "train"), **read_split(out, "validation")}
    assert len(records) == 200
    for image_id, record in records.items():
        assert sorted((ids[i] for i in record[schema.LABEL]), key=int) == truth[image_id]
        assert record[schema.ENCODED] == (DATA / "images" / f"{image_id}.jpg").read_bytes()
