import hashlib

import numpy as np
import tensorflow as tf

from fashion_tf import schema


def test_serialized_example_parses_back_identically():
    jpeg = tf.io.encode_jpeg(tf.zeros((4, 6, 3), tf.uint8)).numpy()
    digest = hashlib.sha256(jpeg).hexdigest()
    record = schema.serialize_example(jpeg, "jpeg", 4, 6, [3, 0, 7], "img-1", digest)
    parsed = schema.parse_example(tf.constant(record))
    assert parsed[schema.ENCODED].numpy() == jpeg
    assert parsed[schema.FORMAT].numpy() == b"jpeg"
    assert (parsed[schema.HEIGHT].numpy(), parsed[schema.WIDTH].numpy()) == (4, 6)
    assert parsed[schema.LABEL].numpy().tolist() == [3, 0, 7]
    assert parsed[schema.SOURCE_ID].numpy() == b"img-1"
    assert parsed[schema.SHA256].numpy().decode() == digest


def test_empty_label_list_is_allowed_and_gives_zero_multi_hot():
    record = schema.serialize_example(b"x", "jpeg", 1, 1, [], "a", "0")
    labels = schema.parse_example(tf.constant(record))[schema.LABEL]
    assert labels.shape == (0,)
    assert schema.multi_hot(labels, 5).numpy().tolist() == [0, 0, 0, 0, 0]


def test_multi_hot_marks_each_label_once():
    vector = schema.multi_hot(tf.constant([4, 1, 1], tf.int64), 6).numpy()
    assert vector.dtype == np.float32
    assert vector.tolist() == [0, 1, 0, 0, 1, 0]


def test_feature_names_match_model_garden_classification_decoder():
    # official/vision/dataloaders/classification_input.py reads these keys.
    assert schema.ENCODED == "image/encoded"
    assert schema.LABEL == "image/class/label"
    record = schema.serialize_example(b"x", "jpeg", 1, 1, [2], "a", "0")
    model_garden_keys = {
        "image/encoded": tf.io.FixedLenFeature((), tf.string, default_value=""),
        "image/class/label": tf.io.VarLenFeature(tf.int64),
    }
    parsed = tf.io.parse_single_example(record, model_garden_keys)
    assert tf.sparse.to_dense(parsed["image/class/label"]).numpy().tolist() == [2]
