"""The one definition of the TFRecord feature schema; the shard writer and the input pipeline both use it.

Feature names follow TF Model Garden's classification decoder
(official/vision/dataloaders/classification_input.py), so its readers consume our shards unchanged.
Writing needs no TensorFlow; parsing imports it lazily.
"""

from __future__ import annotations

from typing import Sequence

ENCODED = "image/encoded"
FORMAT = "image/format"
HEIGHT = "image/height"
WIDTH = "image/width"
LABEL = "image/class/label"
SOURCE_ID = "image/source_id"
SHA256 = "image/key/sha256"

FEATURE_NAMES = (ENCODED, FORMAT, HEIGHT, WIDTH, LABEL, SOURCE_ID, SHA256)


def serialize_example(
    encoded: bytes,
    image_format: str,
    height: int,
    width: int,
    label_indices: Sequence[int],
    source_id: str,
    sha256: str,
) -> bytes:
    """One serialized tf.train.Example with every feature of the schema, without TensorFlow.

    The protobuf wire format written directly, byte for byte what
    `tf.train.Example(...).SerializeToString(deterministic=True)` gives (the map entries in key order; tested):
    Example.features(1) > Features.feature(1) map entries {key(1), Feature(2)}, Feature.bytes_list(1) /
    int64_list(3) > value(1), the int64 values packed. The image bytes are copied once, into the result; shard
    writers (local threads, Beam workers) need no TensorFlow.
    """
    # Map entries in key order: class/label, encoded, format, height, key/sha256, source_id, width.
    image = _encoded_entry_head(len(encoded))
    entries = [
        _entry(LABEL, _int64_feature(label_indices)), image, encoded,
        _entry(FORMAT, _bytes_feature(image_format.encode())), _entry(HEIGHT, _int64_feature((height,))),
        _entry(SHA256, _bytes_feature(sha256.encode())), _entry(SOURCE_ID, _bytes_feature(str(source_id).encode())),
        _entry(WIDTH, _int64_feature((width,))),
    ]
    total = sum(map(len, entries))
    return b"".join([b"\x0a", _varint(total), *entries])


def _entry(key: str, feature: bytes) -> bytes:
    """One map entry {key(1), Feature(2)} as a Features.feature(1) field."""
    body = _KEY_FIELDS[key] + b"\x12" + _varint(len(feature)) + feature
    return b"\x0a" + _varint(len(body)) + body


def _encoded_entry_head(length: int) -> bytes:
    """The image/encoded entry up to its value, so the image bytes are copied only once, into the result."""
    value_field = 1 + _varint_length(length) + length  # BytesList.value(1)
    feature = 1 + _varint_length(value_field) + value_field  # Feature.bytes_list(1)
    key_field = _KEY_FIELDS[ENCODED]
    body = len(key_field) + 1 + _varint_length(feature) + feature
    return (b"\x0a" + _varint(body) + key_field + b"\x12" + _varint(feature) + b"\x0a" + _varint(value_field)
            + b"\x0a" + _varint(length))


def _varint(value: int) -> bytes:
    if 0 <= value < _TABLE_SIZE:
        return _VARINTS[value]
    return _encode_varint(value)


def _encode_varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # a negative int64 takes ten bytes, as in protobuf
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _varint_length(value: int) -> int:
    return max(1, (value.bit_length() + 6) // 7)


def _bytes_feature(value: bytes) -> bytes:
    """Feature.bytes_list(1) > BytesList.value(1)."""
    inner = b"\x0a" + _varint(len(value)) + value
    return b"\x0a" + _varint(len(inner)) + inner


def _int64_feature(values: Sequence[int]) -> bytes:
    """Feature.int64_list(3) > Int64List.value(1), packed."""
    values = [int(v) for v in values]
    packed = bytes(values) if values and 0 <= min(values) and max(values) < 0x80 else b"".join(map(_varint, values))
    inner = b"\x0a" + _varint(len(packed)) + packed if packed else b""
    return b"\x1a" + _varint(len(inner)) + inner


_TABLE_SIZE = 1 << 14  # every length of a small field and most image dimensions: two bytes at most
_VARINTS = [_encode_varint(value) for value in range(_TABLE_SIZE)]
_KEY_FIELDS = {key: b"\x0a" + _varint(len(key.encode())) + key.encode() for key in FEATURE_NAMES}


def feature_spec() -> dict:
    """tf.io parsing spec; labels are variable length (an image may have none)."""
    import tensorflow as tf

    return {
        ENCODED: tf.io.FixedLenFeature((), tf.string),
        FORMAT: tf.io.FixedLenFeature((), tf.string, default_value="jpeg"),
        HEIGHT: tf.io.FixedLenFeature((), tf.int64, default_value=-1),
        WIDTH: tf.io.FixedLenFeature((), tf.int64, default_value=-1),
        LABEL: tf.io.VarLenFeature(tf.int64),
        SOURCE_ID: tf.io.FixedLenFeature((), tf.string, default_value=""),
        SHA256: tf.io.FixedLenFeature((), tf.string, default_value=""),
    }


def parse_example(serialized, features: Sequence[str] = FEATURE_NAMES) -> dict:
    """Parse one serialized example (a scalar string tensor); labels come back as a dense int64 vector."""
    import tensorflow as tf

    spec = {name: value for name, value in feature_spec().items() if name in features}
    parsed = tf.io.parse_single_example(serialized, spec)
    if LABEL in parsed:
        parsed[LABEL] = tf.sparse.to_dense(parsed[LABEL])
    return parsed


def multi_hot(label_indices, num_labels: int):
    """Float32 multi-hot vector of length num_labels from a vector of 0-based label indices."""
    import tensorflow as tf

    label_indices = tf.cast(label_indices, tf.int32)
    # reduce_sum (not reduce_max) so an image with no labels gives zeros, not -inf.
    return tf.minimum(tf.reduce_sum(tf.one_hot(label_indices, num_labels, dtype=tf.float32), axis=0), 1.0)


def tfds_features_document(num_labels: int) -> dict:
    """The schema as TFDS's features.json (a FeaturesDict), written without TensorFlow or TFDS.

    TFDS flattens nested dicts with "/" when it (de)serializes, so {"image": {"class": {"label": ...}}} reads the
    key "image/class/label": shards written by serialize_example load with tfds.builder_from_directory (tested).
    num_classes, not names, for the labels: label names repeat across groups (a colour and a usage may share one).
    """
    def feature(kind: str, module: str, body: dict) -> dict:
        return {"pythonClassName": f"tensorflow_datasets.core.features.{module}.{kind}", **body}

    def features_dict(features: dict) -> dict:
        return feature("FeaturesDict", "features_dict", {"featuresDict": {"features": features}})

    def text() -> dict:
        return feature("Text", "text_feature", {"text": {}})

    def int64() -> dict:
        return feature("Tensor", "tensor_feature", {"tensor": {"dtype": "int64", "encoding": "none", "shape": {}}})

    label = feature("ClassLabel", "class_label_feature", {"classLabel": {"numClasses": str(num_labels)}})
    return features_dict({"image": features_dict({
        "encoded": feature("Image", "image_feature", {"image": {"dtype": "uint8",
                                                                  "shape": {"dimensions": ["-1", "-1", "3"]}}}),
        "format": text(),
        "height": int64(),
        "width": int64(),
        "class": features_dict({"label": feature("Sequence", "sequence_feature",
                                                 {"sequence": {"feature": label, "length": "-1"}})}),
        "source_id": text(),
        "key": features_dict({"sha256": text()}),
    })})
