"""The one definition of the TFRecord feature schema; the shard writer and the input pipeline both use it.

Feature names follow TF Model Garden's classification decoder
(official/vision/dataloaders/classification_input.py), so its readers consume our shards unchanged.
TensorFlow is imported lazily: the names are usable without it.
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
    """One serialized tf.train.Example with every feature of the schema."""
    import tensorflow as tf

    # Filling the proto's fields in place is ~3x faster than building tf.train.Feature objects and
    # copying them in, and this runs once per image when writing shards.
    example = tf.train.Example()
    feature = example.features.feature
    feature[ENCODED].bytes_list.value.append(encoded)
    feature[FORMAT].bytes_list.value.append(image_format.encode())
    feature[HEIGHT].int64_list.value.append(int(height))
    feature[WIDTH].int64_list.value.append(int(width))
    feature[LABEL].int64_list.value.extend(int(i) for i in label_indices)
    feature[SOURCE_ID].bytes_list.value.append(str(source_id).encode())
    feature[SHA256].bytes_list.value.append(sha256.encode())
    # deterministic: the same example gives the same bytes in every process (map order otherwise varies).
    return example.SerializeToString(deterministic=True)


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


def tfds_features(num_labels: int):
    """The same schema as a tensorflow_datasets FeaturesDict.

    TFDS flattens nested dicts with "/" when it (de)serializes, so {"image": {"class": {"label": ...}}}
    reads the key "image/class/label": shards written by serialize_example load with TFDS unchanged.
    """
    import tensorflow as tf
    import tensorflow_datasets as tfds

    features = tfds.features
    # num_classes, not names: label names repeat across groups (a colour and a usage may share a name).
    class_label = features.ClassLabel(num_classes=num_labels)
    return features.FeaturesDict(
        {
            "image": {
                "encoded": features.Image(shape=(None, None, 3)),
                "format": features.Text(),
                "height": features.Tensor(shape=(), dtype=tf.int64),
                "width": features.Tensor(shape=(), dtype=tf.int64),
                "class": {"label": features.Sequence(class_label)},
                "source_id": features.Text(),
                "key": {"sha256": features.Text()},
            }
        }
    )
