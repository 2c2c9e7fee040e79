"""make_tfrecords.metadata: shard_info.json's content, and shards that TF, TFDS and Model Garden's decoder read."""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pytest
from make_tfrecords_fixtures import make_download_folder, read_split, run, shard_info
from PIL import Image

from fashion_tf import schema
from fashion_tf.labels import LabelMap
from fashion_tf.make_tfrecords.catalog import Catalog
from fashion_tf.make_tfrecords.metadata import group_info
from fashion_tf.shard_folder import ShardFolder, shard_names


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


def label_ids(out) -> list[str]:
    return [entry["id"] for entry in json.loads(ShardFolder(out).label_map_path.read_text())["labels"]]


def test_round_trip_keeps_bytes_labels_and_header_sizes(download_run):
    expected, out = download_run
    ids = label_ids(out)
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
    info = shard_info(out)
    assert set(info) == {"name", "num_labels", "created_by", "splits", "groups", "stratification", "skipped"}
    assert info["created_by"] == "fashion_tf.make_tfrecords" and info["num_labels"] == 6
    assert set(info["splits"]) == {"train", "validation"}
    total = 0
    for split, data in info["splits"].items():
        assert len(data["shards"]) == len(data["shard_lengths"]) > 1
        assert data["shards"] == shard_names(split, len(data["shards"]))
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
    info = shard_info(out)
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
    ids = label_ids(out)
    for shard in shard_info(out)["splits"]["validation"]["shards"]:
        for raw in tf.data.TFRecordDataset(str(out / shard)):
            decoded = tf.io.parse_single_example(raw, keys_to_features)
            label = tf.sparse.to_dense(decoded["image/class/label"]).numpy()
            image_id = tf.io.parse_single_example(raw, schema.feature_spec())[schema.SOURCE_ID].numpy().decode()
            data, labels = expected[image_id]
            assert decoded["image/encoded"].numpy() == data
            assert sorted(ids[i] for i in label) == sorted(labels)
            tf.io.decode_image(decoded["image/encoded"], channels=3)  # its Parser decodes this way


def test_a_group_is_single_choice_when_no_image_has_two_of_its_labels():
    label_map = LabelMap(("1", "2", "3", "4", "5"), ("a", "b", "c", "d", "e"), ("g", "g", "h", "h", "i"))
    catalog = Catalog(labels=[np.asarray(x, dtype=np.int16) for x in ([0, 2], [1, 2, 3], [], [4], [0, 3])])
    assert group_info(label_map, catalog) == {"g": {"labels": [0, 1], "exclusive": True},
                                              "h": {"labels": [2, 3], "exclusive": False},
                                              "i": {"labels": [4], "exclusive": True}}
    assert all(group["exclusive"] for group in group_info(label_map, Catalog()).values())
