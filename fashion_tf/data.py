"""The tf.data input pipeline: TFRecord shards (fashion_tf.schema) -> batches of (images, multi-hot labels).

    make_dataset(data_cfg, split, training) -> tf.data.Dataset of (images, labels) [or (images, labels, ids)]

images: float32 [B, S, S, 3] in [0, 255] (the model does its own preprocessing); labels: float32 multi-hot [B, C];
ids: tf.string [B] (image/source_id).

Batch size: ``data_cfg.batch_size`` is the batch of ONE replica. Without an input_context that is the batch.
With one (``strategy.distribute_datasets_from_function``), the batch is
``input_context.get_per_replica_batch_size(data_cfg.batch_size * input_context.num_replicas_in_sync)``,
i.e. again data_cfg.batch_size; the global batch is batch_size * num_replicas_in_sync.

Training pipeline (training=True), in order:
  shard file names (seeded shuffle each epoch) -> per-pipeline shard (by file; by record when there are fewer
  files than input pipelines) -> repeat forever -> interleaved parallel TFRecord reads -> [cache of the encoded
  records] -> [balance: rejection filter] -> example shuffle buffer -> parallel parse + decode + augment ->
  batch (drop remainder) -> [mixup] -> prefetch.
  Decoding with "crop" samples a random-resized-crop window with stateless_sample_distorted_bounding_box and
  decodes only that window (decode_and_crop_jpeg), flips the uint8 window ("flip"), then resizes to S and
  applies rotate / color / randaugment on the float image. Non-JPEG bytes (PNG, ...) take a decode_image +
  slice path (tf.cond on the leading JPEG marker bytes, not on the format field).
Evaluation pipeline (training=False): one pass, deterministic order, no augmentation, remainder kept (with
  several replicas per pipeline: equal non-empty batches and a sample-weight item, see _equal_batches_for_replicas);
  decode (optionally a central crop, data_cfg.eval_crop_fraction) then resize to S: for images up to 2*S a
  side, exactly tf.io.decode_jpeg (or decode_image) + tf.image.resize.
Big JPEGs (data_cfg.jpeg_dct_scaling, default on): when the crop window (training) or the image (evaluation,
  from the record's height/width) keeps >= S pixels on its shorter side at 1/2, 1/4 or 1/8 scale, libjpeg
  decodes at that scale (IDCT scaling), which costs a fraction of a full decode and averages like an area
  filter. iMaterialist images are mostly far larger than 224-299 px, so this is where most decode time goes.

Randomness is stateless: every example gets its own seed [seed + k, position in the stream], so with a seed and
data_cfg.deterministic=True the training stream is reproducible, and parallel maps don't share a random state.
seed=None gives a different stream each run.

Label balancing (data_cfg.balance == "rejection"): each label l gets weight (N / count_l) ** balance_power
(N = examples in the split, counts from shard_info.json), an example gets the max weight over its labels (an
example without labels counts as the most frequent label), and the repeated stream keeps an example with
probability weight / max weight. Rare-label examples are always kept, common ones are thinned, so the share of
rare labels in what the model sees rises; with power 1 every label's examples are seen about equally often when
labels don't co-occur. It costs reading (not decoding) the rejected records; training only.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from fashion_tf import schema
from fashion_tf.config import AUGMENTATIONS, DataConfig, load_config
from fashion_tf.errors import UserError, run_cli
from fashion_tf.shard_folder import ShardFolder

MAX_CYCLE_LENGTH = 16
CROP_ASPECT_RATIO = (3.0 / 4.0, 4.0 / 3.0)
CROP_MIN_OBJECT_COVERED = 0.1
RANDAUGMENT_FILL = 128.0


def label_weights(counts: np.ndarray, power: float) -> np.ndarray:
    """Per-label sampling weight (N / count) ** power, relative to the most frequent label (weight 1); 0 if unseen."""
    counts = np.asarray(counts, dtype=np.float64)
    weights = np.zeros_like(counts)
    seen = counts > 0
    if seen.any():
        weights[seen] = (counts[seen].max() / counts[seen]) ** power
    return weights


# ---- decoding -----------------------------------------------------------------------------
def _tf():
    import tensorflow as tf

    return tf


def _is_jpeg(encoded):
    tf = _tf()
    return tf.equal(tf.strings.substr(encoded, 0, 3), b"\xff\xd8\xff")


def _decode_any(encoded):
    tf = _tf()
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


DCT_RATIOS = (1, 2, 4, 8)


def _dct_ratio_index(height, width, min_size: Optional[int]):
    """Index into DCT_RATIOS of the largest ratio that keeps min(height, width) / ratio >= min_size."""
    tf = _tf()
    if not min_size:
        return tf.constant(0)
    smaller = tf.minimum(height, width)
    return tf.reduce_sum(tf.cast(smaller >= tf.constant([2, 4, 8], tf.int32) * min_size, tf.int32))


def decode_jpeg_window(encoded, window, min_size: Optional[int] = None):
    """decode_and_crop_jpeg of window [y, x, h, w] (original pixels). With min_size, libjpeg decodes at 1/2, 1/4
    or 1/8 scale (IDCT scaling: much less work, and area-like averaging) as long as min_size pixels remain."""
    tf = _tf()
    window = tf.cast(window, tf.int32)
    branches = [
        lambda r=ratio: tf.io.decode_and_crop_jpeg(encoded, window // r, channels=3, ratio=r) for ratio in DCT_RATIOS
    ]
    if not min_size:
        return branches[0]()
    return tf.switch_case(_dct_ratio_index(window[2], window[3], min_size), branches)


def _crop_window(image_shape, crop_min_area: float, seed):
    """[y, x, h, w] of a random-resized-crop window for an image of shape [h, w, c]."""
    tf = _tf()
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        image_shape,
        bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]),
        seed=seed,
        min_object_covered=CROP_MIN_OBJECT_COVERED,
        aspect_ratio_range=CROP_ASPECT_RATIO,
        area_range=(crop_min_area, 1.0),
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    return tf.stack([begin[0], begin[1], size[0], size[1]])


def decode_random_crop(encoded, crop_min_area: float, seed, min_size: Optional[int] = None):
    """uint8 [h, w, 3] random-resized-crop window; for JPEG only the window is decoded (see decode_jpeg_window)."""
    tf = _tf()

    def jpeg():
        return decode_jpeg_window(encoded, _crop_window(tf.image.extract_jpeg_shape(encoded), crop_min_area, seed), min_size)

    def other():
        image = _decode_any(encoded)
        window = _crop_window(tf.shape(image), crop_min_area, seed)
        return tf.slice(image, [window[0], window[1], 0], [window[2], window[3], 3])

    return tf.cond(_is_jpeg(encoded), jpeg, other)


def decode_full(encoded, min_size: Optional[int] = None, height=None, width=None):
    """uint8 [h, w, 3] whole image with one decode_image op (JPEG, PNG, ...; for JPEG the same pixels as
    tf.io.decode_jpeg). With min_size, JPEGs whose recorded height and width are both >= 2 * min_size take the
    DCT-scaled path instead (see decode_jpeg_window); records without sizes (-1) never do."""
    tf = _tf()
    if not min_size or height is None or width is None:
        return _decode_any(encoded)

    def scaled_jpeg():
        shape = tf.image.extract_jpeg_shape(encoded)
        branches = [lambda: tf.io.decode_jpeg(encoded, channels=3)] + [
            lambda r=ratio: tf.io.decode_jpeg(encoded, channels=3, ratio=r) for ratio in DCT_RATIOS[1:]
        ]
        return tf.switch_case(_dct_ratio_index(shape[0], shape[1], min_size), branches)

    big = (tf.minimum(height, width) >= 2 * min_size) & _is_jpeg(encoded)
    return tf.cond(big, scaled_jpeg, lambda: _decode_any(encoded))


def decode_central_crop(encoded, fraction: float, min_size: Optional[int] = None):
    """uint8 central crop keeping `fraction` of each side; for JPEG only that window is decoded."""
    tf = _tf()

    def window(shape):
        height, width = shape[0], shape[1]
        crop_h = tf.maximum(1, tf.cast(tf.cast(height, tf.float32) * fraction, tf.int32))
        crop_w = tf.maximum(1, tf.cast(tf.cast(width, tf.float32) * fraction, tf.int32))
        return tf.stack([(height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w])

    def jpeg():
        return decode_jpeg_window(encoded, window(tf.image.extract_jpeg_shape(encoded)), min_size)

    def other():
        image = _decode_any(encoded)
        top, left, crop_h, crop_w = tf.unstack(window(tf.shape(image)))
        return tf.image.crop_to_bounding_box(image, top, left, crop_h, crop_w)

    return tf.cond(_is_jpeg(encoded), jpeg, other)


def random_flip(image, seed):
    """Mirror left-right with probability 1/2; only the chosen branch runs (cheap on the uint8 image)."""
    tf = _tf()
    return tf.cond(_uniform(seed) < 0.5, lambda: tf.reverse(image, [1]), lambda: image)


def resize(image, image_size: int):
    """Bilinear resize to [S, S, 3] float32; bilinear never leaves [0, 255]."""
    tf = _tf()
    image = tf.image.resize(image, [image_size, image_size], method="bilinear")
    image.set_shape([image_size, image_size, 3])
    return image


# ---- per-image augmentations (float32 [S, S, 3] in [0, 255], stateless seeds) ---------------
def _uniform(seed, low=0.0, high=1.0, shape=()):
    return _tf().random.stateless_uniform(shape, seed=seed, minval=low, maxval=high)


def _projective(image, transform, fill_mode: str = "REFLECT", fill_value: float = 0.0):
    """Apply one 8-parameter projective transform (output -> input mapping) to an [H, W, 3] image."""
    tf = _tf()
    shape = tf.shape(image)[:2]
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None],
        transforms=tf.reshape(tf.cast(transform, tf.float32), [1, 8]),
        output_shape=shape,
        fill_value=fill_value,
        interpolation="BILINEAR",
        fill_mode=fill_mode,
    )
    return out[0]


def _rotation_transform(image, radians):
    tf = _tf()
    height = tf.cast(tf.shape(image)[0], tf.float32) - 1.0
    width = tf.cast(tf.shape(image)[1], tf.float32) - 1.0
    cos, sin = tf.cos(radians), tf.sin(radians)
    x_offset = (width - (cos * width - sin * height)) / 2.0
    y_offset = (height - (sin * width + cos * height)) / 2.0
    return tf.stack([cos, -sin, x_offset, sin, cos, y_offset, 0.0, 0.0])


def rotate(image, degrees: float, seed, fill_mode: str = "REFLECT", fill_value: float = 0.0):
    """Rotate about the centre by a uniform angle in [-degrees, degrees] (one ImageProjectiveTransformV3)."""
    radians = _uniform(seed, -degrees, degrees) * (math.pi / 180.0)
    return _projective(image, _rotation_transform(image, radians), fill_mode, fill_value)


GRAY_WEIGHTS = (0.299, 0.587, 0.114)
RGB_TO_YIQ = ((0.299, 0.596, 0.211), (0.587, -0.274, -0.523), (0.114, -0.322, 0.312))  # row-vector form


def color_jitter(image, strength: float, seed):
    """Brightness, contrast and saturation factors in [1 - s, 1 + s] and a hue rotation of up to s/4 turn.

    Brightness, saturation (blend with grey) and hue (rotation of the chroma plane in YIQ space) are linear in
    RGB and keep grey grey, and contrast blends with the mean grey, so the whole jitter is one 3x3 colour
    matrix plus one offset per image: x @ (c * b * S @ H) + (1 - c) * b * mean_grey(x). Far cheaper than an
    RGB -> HSV -> RGB round trip (tf.image.adjust_hue) and the same at any value scale.
    """
    tf = _tf()
    seeds = tf.random.experimental.stateless_split(seed, 4)
    brightness = _uniform(seeds[0], 1.0 - strength, 1.0 + strength)
    contrast = _uniform(seeds[1], 1.0 - strength, 1.0 + strength)
    saturation = _uniform(seeds[2], 1.0 - strength, 1.0 + strength)
    angle = _uniform(seeds[3], -strength / 4.0, strength / 4.0) * (2.0 * math.pi)
    gray = tf.constant(GRAY_WEIGHTS, tf.float32)[:, None]
    saturate = saturation * tf.eye(3) + (1.0 - saturation) * tf.tile(gray, [1, 3])
    to_yiq = tf.constant(RGB_TO_YIQ, tf.float32)
    cos, sin = tf.cos(angle), tf.sin(angle)
    rotate_chroma = tf.stack([[1.0, 0.0, 0.0], tf.stack([0.0, cos, sin]), tf.stack([0.0, -sin, cos])])
    hue = to_yiq @ rotate_chroma @ tf.linalg.inv(to_yiq)
    matrix = (contrast * brightness) * (saturate @ hue)
    mean_grey = tf.reduce_mean(image, axis=[0, 1])[None, :] @ gray
    offset = (1.0 - contrast) * brightness * mean_grey[0, 0]
    shape = tf.shape(image)
    flat = tf.reshape(image, [-1, 3]) @ matrix + offset
    return tf.clip_by_value(tf.reshape(flat, shape), 0.0, 255.0)


def _blend(image, degenerate, factor):
    tf = _tf()
    return tf.clip_by_value(degenerate + factor * (image - degenerate), 0.0, 255.0)


def _grayscale(image):
    tf = _tf()
    return tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image))


def randaugment(image, num_ops: int, magnitude: float, seed):
    """A compact RandAugment: `num_ops` ops drawn uniformly per image, each at `magnitude` (0-10) with a random
    sign. tf.switch_case runs only the drawn op (keras.layers.RandAugment computes all 11 per op per batch)."""
    tf = _tf()
    level = float(min(max(magnitude, 0.0), 10.0)) / 10.0

    def signed(op_seed, value):
        sign = tf.where(_uniform(op_seed) < 0.5, -1.0, 1.0)
        return sign * value

    def affine(img, transform):
        return _projective(img, transform, fill_mode="CONSTANT", fill_value=RANDAUGMENT_FILL)

    def size(img):
        return tf.cast(tf.shape(img)[0], tf.float32), tf.cast(tf.shape(img)[1], tf.float32)

    def sharpen_source(img):
        kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
        kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
        return tf.nn.depthwise_conv2d(img[None], kernel, [1, 1, 1, 1], "SAME")[0]

    def auto_contrast(img, s):
        low = tf.reduce_min(img, axis=[0, 1], keepdims=True)
        high = tf.reduce_max(img, axis=[0, 1], keepdims=True)
        scale = tf.where(high > low, 255.0 / tf.maximum(high - low, 1e-3), 1.0)
        return tf.where(high > low, (img - low) * scale, img)

    def posterize(img, s):
        shift = 2.0 ** tf.round(4.0 * level)
        return tf.floor(img / shift) * shift

    ops = [
        lambda img, s: img,
        auto_contrast,
        lambda img, s: tf.where(img >= 255.0 * (1.0 - level), 255.0 - img, img),  # solarize
        posterize,
        lambda img, s: _blend(img, _grayscale(img), 1.0 + signed(s, 0.9 * level)),  # colour
        lambda img, s: _blend(img, tf.reduce_mean(_grayscale(img)) * tf.ones_like(img), 1.0 + signed(s, 0.9 * level)),
        lambda img, s: _blend(img, tf.zeros_like(img), 1.0 + signed(s, 0.9 * level)),  # brightness
        lambda img, s: _blend(img, sharpen_source(img), 1.0 + signed(s, 0.9 * level)),  # sharpness
        lambda img, s: affine(img, _rotation_transform(img, signed(s, 30.0 * level * math.pi / 180.0))),
        lambda img, s: affine(img, tf.stack([1.0, signed(s, 0.3 * level), 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])),  # shear x
        lambda img, s: affine(img, tf.stack([1.0, 0.0, 0.0, signed(s, 0.3 * level), 1.0, 0.0, 0.0, 0.0])),  # shear y
        lambda img, s: affine(img, tf.stack([1.0, 0.0, signed(s, 0.3 * level) * size(img)[1], 0.0, 1.0, 0.0, 0.0, 0.0])),
        lambda img, s: affine(img, tf.stack([1.0, 0.0, 0.0, 0.0, 1.0, signed(s, 0.3 * level) * size(img)[0], 0.0, 0.0])),
    ]
    seeds = tf.random.experimental.stateless_split(seed, 2 * max(num_ops, 1))
    shape = image.shape
    for i in range(num_ops):
        choice = tf.random.stateless_uniform([], seed=seeds[2 * i], minval=0, maxval=len(ops), dtype=tf.int32)
        op_seed = seeds[2 * i + 1]
        image = tf.switch_case(choice, [lambda op=op: op(image, op_seed) for op in ops])
        image.set_shape(shape)
    return tf.clip_by_value(image, 0.0, 255.0)


def mixup(images, labels, alpha: float, seed):
    """Mix each example with the batch reversed: lam ~ Beta(alpha, alpha) per example, labels mixed alike."""
    tf = _tf()
    seeds = tf.random.experimental.stateless_split(seed, 2)
    batch = tf.shape(images)[0]
    gamma_a = tf.random.stateless_gamma([batch], seed=seeds[0], alpha=alpha)
    gamma_b = tf.random.stateless_gamma([batch], seed=seeds[1], alpha=alpha)
    lam = gamma_a / tf.maximum(gamma_a + gamma_b, 1e-12)
    mixed_images = lam[:, None, None, None] * images + (1.0 - lam[:, None, None, None]) * tf.reverse(images, [0])
    mixed_labels = lam[:, None] * labels + (1.0 - lam[:, None]) * tf.reverse(labels, [0])
    return mixed_images, mixed_labels


# ---- pipeline -----------------------------------------------------------------------------
def _enumerate_with_seeds(dataset, seed: Optional[int], offset: int):
    """(dataset.enumerate(), index -> stateless seed [base + offset, index]); the consumer's own map builds the
    seed, so no extra per-element stage. seed=None draws the base at random (a different stream each call)."""
    tf = _tf()
    base = int(np.random.SeedSequence().generate_state(1)[0] % (2**31)) if seed is None else int(seed)

    def make_seed(index):
        return tf.stack([tf.constant(base + offset, tf.int64), index])

    return dataset.enumerate(), make_seed


def _read_records(files: list[str], data_cfg: DataConfig, training: bool, input_context, seed):
    """Serialized examples of this input pipeline: shuffled files, repeated forever when training."""
    tf = _tf()
    pipelines = input_context.num_input_pipelines if input_context is not None else 1
    pipeline_id = input_context.input_pipeline_id if input_context is not None else 0
    shard_by_record = pipelines > 1 and len(files) < pipelines
    file_ds = tf.data.Dataset.from_tensor_slices(files)
    my_files = len(files)
    if pipelines > 1 and not shard_by_record:
        file_ds = file_ds.shard(pipelines, pipeline_id)
        my_files = len(range(pipeline_id, len(files), pipelines))
    # Shuffling/repeating file names before the read would make a cache hold only one epoch's order and
    # would give the pipelines different record orders when sharding by record; both read files in order.
    shuffle_files = training and not data_cfg.cache and not shard_by_record
    if shuffle_files:
        file_ds = file_ds.shuffle(my_files, seed=seed, reshuffle_each_iteration=True).repeat()
    cycle_length = data_cfg.cycle_length or min(my_files, MAX_CYCLE_LENGTH)
    parallel = data_cfg.num_parallel_calls or tf.data.AUTOTUNE
    records = file_ds.interleave(
        tf.data.TFRecordDataset,
        cycle_length=max(1, min(cycle_length, my_files)),
        block_length=1,
        num_parallel_calls=parallel,
        deterministic=True if (shard_by_record or not training) else None,
    )
    if shard_by_record:
        records = records.shard(pipelines, pipeline_id)
    if data_cfg.cache:
        records = records.cache()
    if training and not shuffle_files:
        records = records.repeat()
    return records


def _balance_filter(records, data_cfg: DataConfig, split: str, num_labels: int, seed):
    """Keep each (repeated) record with probability max-label-weight / max weight (see the module docstring)."""
    tf = _tf()
    counts = ShardFolder(data_cfg.tfrecords).label_counts(split)
    weights = np.zeros(num_labels, dtype=np.float64)
    weights[: min(num_labels, len(counts))] = label_weights(counts, data_cfg.balance_power)[:num_labels]
    if not (weights > 0).any():
        return records
    max_weight = float(weights.max())
    # Unlabelled examples (and labels unseen in the counts) are kept as often as the most frequent label.
    floor = float(weights[weights > 0].min())
    keep_probability = tf.constant(np.maximum(weights, floor) / max_weight, dtype=tf.float32)

    def keep(serialized, element_seed):
        indices = schema.parse_example(serialized, [schema.LABEL])[schema.LABEL]
        indices = tf.boolean_mask(indices, (indices >= 0) & (indices < num_labels))
        probabilities = tf.concat([[floor / max_weight], tf.gather(keep_probability, indices)], axis=0)
        probability = tf.reduce_max(probabilities)
        return _uniform(element_seed) < probability

    numbered, make_seed = _enumerate_with_seeds(records, seed, 7919)
    return numbered.filter(lambda index, serialized: keep(serialized, make_seed(index))).map(lambda _, s: s)


def decode_for_eval(encoded, data_cfg: DataConfig, height=None, width=None):
    """Encoded image -> float32 [S, S, 3] in [0, 255] without augmentation: optional central crop, then resize.

    The one definition of evaluation/inference pixels: the eval pipeline and fashion_tf.predict both use it.
    """
    min_size = data_cfg.image_size if data_cfg.jpeg_dct_scaling else None
    if data_cfg.eval_crop_fraction < 1.0:
        image = decode_central_crop(encoded, data_cfg.eval_crop_fraction, min_size)
    else:
        image = decode_full(encoded, min_size, height, width)
    return resize(image, data_cfg.image_size)


def _example_fn(data_cfg: DataConfig, training: bool, num_labels: int, with_ids: bool, augment: Sequence[str]):
    """(serialized[, seed]) -> (image, labels[, id]) for one example: parse, decode, [flip the uint8 window],
    resize, per-image float augmentations. (Batching uint8 and casting per batch was measured slower.)"""
    tf = _tf()
    size = data_cfg.image_size
    augment = set(augment) if training else set()
    min_size = size if data_cfg.jpeg_dct_scaling else None
    features = [schema.ENCODED, schema.LABEL, schema.HEIGHT, schema.WIDTH] + ([schema.SOURCE_ID] if with_ids else [])

    def fn(serialized, seed=None):
        parsed = schema.parse_example(serialized, features)
        encoded = parsed[schema.ENCODED]
        if not training:
            image = decode_for_eval(encoded, data_cfg, parsed[schema.HEIGHT], parsed[schema.WIDTH])
        else:
            seeds = tf.random.experimental.stateless_split(seed, 5)
            if "crop" in augment:
                image = decode_random_crop(encoded, data_cfg.crop_min_area, seeds[0], min_size)
            else:
                image = decode_full(encoded, min_size, parsed[schema.HEIGHT], parsed[schema.WIDTH])
            if "flip" in augment:
                image = random_flip(image, seeds[1])
            image = resize(image, size)
            if "rotate" in augment and data_cfg.rotate_degrees > 0:
                image = rotate(image, data_cfg.rotate_degrees, seeds[2])
            if "color" in augment and data_cfg.color_jitter > 0:
                image = color_jitter(image, data_cfg.color_jitter, seeds[3])
            if "randaugment" in augment and data_cfg.randaugment_ops > 0:
                image = randaugment(image, data_cfg.randaugment_ops, data_cfg.randaugment_magnitude, seeds[4])
        labels = schema.multi_hot(parsed[schema.LABEL], num_labels)
        if with_ids:
            return image, labels, parsed[schema.SOURCE_ID]
        return image, labels

    return fn


def per_replica_batch_size(data_cfg: DataConfig, input_context=None) -> int:
    if input_context is None:
        return data_cfg.batch_size
    return input_context.get_per_replica_batch_size(data_cfg.batch_size * input_context.num_replicas_in_sync)


def _replicas_per_pipeline(input_context) -> int:
    if input_context is None:
        return 1
    return max(1, input_context.num_replicas_in_sync // max(1, input_context.num_input_pipelines))


def _equal_batches_for_replicas(ds, batch_size: int, replicas: int):
    """Evaluation batches for `replicas` replicas fed by one pipeline, none of them empty.

    The replicas take a pipeline's batches in turn, so a split whose last step has fewer batches than replicas
    would hand some replica an empty batch, which oneDNN's CPU convolution mishandles (TF 2.21 on AVX-512
    machines: "Incompatible shapes: [C] vs. [0,H,W,3]"). Each step's examples (up to batch_size * replicas) are
    padded with at most replicas - 1 copies of its first example and split into `replicas` equal batches;
    elements gain a last item, the sample weight: 1 for real examples, 0 for copies, so metrics are unchanged.
    """
    tf = _tf()

    def split(*step):
        count = tf.shape(step[0])[0]
        padded = (count + replicas - 1) // replicas * replicas
        weights = tf.concat([tf.ones([count], tf.float32), tf.zeros([padded - count], tf.float32)], 0)

        def split_over_replicas(tensor):
            return tf.reshape(tensor, [replicas, -1, *tensor.shape[1:]])  # the example shape is static

        padded_step = tuple(tf.concat([t, tf.repeat(t[:1], padded - count, axis=0)], 0) for t in step)
        return tuple(split_over_replicas(t) for t in padded_step + (weights,))

    return ds.batch(batch_size * replicas).map(split).unbatch()


def make_dataset(
    data_cfg: DataConfig,
    split: str,
    training: bool,
    num_labels: Optional[int] = None,
    input_context=None,
    with_ids: bool = False,
    seed: Optional[int] = None,
    augment: Optional[Sequence[str]] = None,
):
    """Batches of (images float32 [B,S,S,3] in [0,255], labels float32 [B,C] [, ids string [B]]).

    training=True: infinite, shuffled, augmented (data_cfg.augment, or `augment` when given), drop remainder.
    training=False: one pass, deterministic order, no augmentation, remainder kept; with several replicas per
    pipeline, (images, labels, sample_weights) in equal non-empty batches (_equal_batches_for_replicas).
    B = data_cfg.batch_size, the per-replica batch (see the module docstring for input_context).
    """
    folder = ShardFolder(data_cfg.tfrecords)
    files = folder.shard_files(split)  # bad folder/split: UserError before TensorFlow loads
    num_labels = folder.num_labels if num_labels is None else int(num_labels)
    tf = _tf()
    augment = list(data_cfg.augment if augment is None else augment)
    unknown = [name for name in augment if name not in AUGMENTATIONS]
    if unknown:
        raise UserError(f"data.augment: unknown augmentation {unknown[0]!r} (known: {', '.join(AUGMENTATIONS)})")
    parallel = data_cfg.num_parallel_calls or tf.data.AUTOTUNE

    records = _read_records(files, data_cfg, training, input_context, seed)
    if training and data_cfg.balance == "rejection":
        records = _balance_filter(records, data_cfg, split, num_labels, seed)
    if training:
        records = records.shuffle(data_cfg.shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    example_fn = _example_fn(data_cfg, training, num_labels, with_ids, augment)
    if training:
        numbered, make_seed = _enumerate_with_seeds(records, seed, 1)
        ds = numbered.map(lambda index, serialized: example_fn(serialized, make_seed(index)), num_parallel_calls=parallel)
    else:
        ds = records.map(example_fn, num_parallel_calls=parallel, deterministic=True)
    batch_size = per_replica_batch_size(data_cfg, input_context)
    replicas = _replicas_per_pipeline(input_context)
    if not training and replicas > 1:
        ds = _equal_batches_for_replicas(ds, batch_size, replicas)
    else:
        ds = ds.batch(batch_size, drop_remainder=training)
    if training and "mixup" in augment and data_cfg.mixup_alpha > 0:
        alpha = data_cfg.mixup_alpha
        numbered, make_seed = _enumerate_with_seeds(ds, seed, 2)

        def mix(index, batch):
            images, labels = mixup(batch[0], batch[1], alpha, make_seed(index))
            return (images, labels) + tuple(batch[2:])

        ds = numbered.map(mix, num_parallel_calls=parallel)
    ds = ds.prefetch(data_cfg.prefetch if data_cfg.prefetch is not None else tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = bool(data_cfg.deterministic) if training else True
    return ds.with_options(options)


# ---- benchmark CLI ------------------------------------------------------------------------
def measure_throughput(dataset, seconds: float, warmup_seconds: float = 5.0, warmup_batches: int = 3) -> dict:
    """Images per second (and CPU ms per image) of iterating `dataset` (first element's leading dim = batch)
    after a warm-up."""
    iterator = iter(dataset)
    start = time.perf_counter()
    for _ in range(warmup_batches):
        next(iterator)
    while time.perf_counter() - start < warmup_seconds:
        next(iterator)
    images, batches = 0, 0
    start, cpu_start = time.perf_counter(), time.process_time()
    while (elapsed := time.perf_counter() - start) < seconds:
        batch = next(iterator)
        images += int(batch[0].shape[0])
        batches += 1
    cpu = time.process_time() - cpu_start
    return {
        "images": images,
        "batches": batches,
        "seconds": elapsed,
        "images_per_s": images / elapsed,
        # CPU time of this process (all threads) per image: steadier than images/s when others share the cores.
        "cpu_ms_per_image": 1000.0 * cpu / max(images, 1),
    }


def _parse_augment(text: Optional[str]) -> Optional[list[str]]:
    if text is None:
        return None
    names = [name.strip() for name in text.split(",") if name.strip() and name.strip() != "none"]
    for name in names:
        if name not in AUGMENTATIONS:
            raise UserError(f"--augment: unknown augmentation {name!r} (known: {', '.join(AUGMENTATIONS)}, none)")
    return names


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fashion_tf.data",
        description="Input pipeline tools.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    bench = commands.add_parser(
        "benchmark",
        help="images/s of the training or evaluation pipeline",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    bench.add_argument("--data", required=True, help="TFRecord folder written by make_tfrecords")
    bench.add_argument("--split", default="train")
    bench.add_argument("--config", default=None, help="JSON config whose data section is used (defaults otherwise)")
    bench.add_argument("--image-size", type=int, default=None, help="default: the config's data.image_size")
    bench.add_argument("--batch-size", type=int, default=None, help="default: the config's data.batch_size")
    bench.add_argument("--pipeline", choices=("train", "eval"), default="train")
    bench.add_argument("--augment", default=None, help="comma list, or 'none'; default: the config's data.augment")
    bench.add_argument("--seconds", type=float, default=30.0, help="measured time, after the warm-up")
    bench.add_argument("--warmup", type=float, default=5.0, help="seconds of warm-up excluded from the figure")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of the figure

    config = load_config(args.config)
    data_cfg = config.data
    data_cfg.tfrecords = args.data
    if args.image_size is not None:
        data_cfg.image_size = args.image_size
    if args.batch_size is not None:
        data_cfg.batch_size = args.batch_size
    augment = _parse_augment(args.augment)
    if augment is None:
        augment = list(data_cfg.augment)
    training = args.pipeline == "train"
    dataset = make_dataset(data_cfg, args.split, training=training, augment=augment)
    if not training:
        dataset = dataset.repeat()  # one pass may be shorter than the measured time
    result = measure_throughput(dataset, args.seconds, args.warmup)
    shown = ",".join(augment) if training else "none"
    print(
        f"pipeline={args.pipeline} split={args.split} image_size={data_cfg.image_size} batch={data_cfg.batch_size} "
        f"augment={shown or 'none'}: {result['images_per_s']:.1f} images/s "
        f"({result['images']} images in {result['seconds']:.1f} s after {args.warmup:g} s warm-up; "
        f"{result['cpu_ms_per_image']:.2f} CPU ms/image)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
