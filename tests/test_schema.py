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


def tensorflow_serialized(encoded, image_format, height, width, labels, source_id, sha256) -> bytes:
    """The same example filled into a tf.train.Example proto, as the writer did before (the reference)."""
    example = tf.train.Example()
    feature = example.features.feature
    feature[schema.ENCODED].bytes_list.value.append(encoded)
    feature[schema.FORMAT].bytes_list.value.append(image_format.encode())
    feature[schema.HEIGHT].int64_list.value.append(height)
    feature[schema.WIDTH].int64_list.value.append(width)
    feature[schema.LABEL].int64_list.value.extend(labels)
    feature[schema.SOURCE_ID].bytes_list.value.append(source_id.encode())
    feature[schema.SHA256].bytes_list.value.append(sha256.encode())
    return example.SerializeToString(deterministic=True)


def test_serialized_bytes_equal_tensorflows_deterministic_serialization():
    rng = np.random.default_rng(0)
    cases = [(b"", "png", 0, 0, [], "", ""), (b"\x00" * 300, "jpeg", 1, 1, [0], "0", "0" * 64),
             (rng.bytes(70_000), "jpeg", 5000, 2**40, [227, 3, 127, 128, 16384], "id-é-1", "ab" * 32)]
    cases += [(rng.bytes(int(rng.integers(0, 3000))), "jpeg", int(rng.integers(1, 1 << 20)), int(rng.integers(1, 300)),
               rng.integers(0, 300, int(rng.integers(0, 12))).tolist(), str(rng.integers(1 << 40)), "f" * 64)
              for _ in range(200)]
    for case in cases:
        assert schema.serialize_example(*case) == tensorflow_serialized(*case), case[1:]
