"""Training augmentations: one ordered table, `AUGMENTATIONS`, the only list of their names.

Each row is a tiny op with its stage, the DataConfig fields it reads and the field that switches it off at 0.
The config validates data.augment against the table (`check_names`) and the pipeline applies the named ops in
table order, stage by stage:

    decode  (encoded bytes -> uint8 [h, w, 3])  replaces the whole-image decode; "crop" decodes only its window
    window  (uint8 [h, w, 3], before the resize) cheap on the small uint8 crop: "flip"
    -- resize to float32 [S, S, 3] in [0, 255] --
    pixels  (float32 [S, S, 3])                  "rotate", "color", "randaugment"
    batch   ((images, labels, ...) of a batch)   "mixup"

Every op takes a stateless seed (fashion_tf.data.seeds): the per-example ops get seeds[i] of the example seed
split once, i = the op's row among the per-example rows; the batch op gets the batch seed. A new per-example row
therefore changes every training stream: re-record REFERENCE in tests/test_data_pipeline.py when adding one.
TensorFlow is imported inside the functions: config.py imports this module without it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional, Sequence

from fashion_tf.data.decode import dct_min_size, decode_full, decode_window, resize
from fashion_tf.data.seeds import split, uniform
from fashion_tf.errors import UserError

if TYPE_CHECKING:
    from fashion_tf.config import DataConfig

DECODE, WINDOW, PIXELS, BATCH = "decode", "window", "pixels", "batch"


@dataclass(frozen=True)
class Augmentation:
    name: str
    stage: str
    apply: Callable  # (input of the stage, data_cfg, seed) -> output of the stage
    params: tuple[str, ...] = ()  # the DataConfig fields it reads
    enabled_by: Optional[str] = None  # a field of params that turns the op off when it is 0

    def is_active(self, data_cfg: DataConfig) -> bool:
        return self.enabled_by is None or getattr(data_cfg, self.enabled_by) > 0


AUGMENTATIONS = (
    Augmentation("crop", DECODE, lambda encoded, cfg, seed: decode_random_crop(encoded, cfg, seed), ("crop_min_area",)),
    Augmentation("flip", WINDOW, lambda image, cfg, seed: random_flip(image, seed)),
    Augmentation("rotate", PIXELS, lambda image, cfg, seed: rotate(image, cfg.rotate_degrees, seed),
                 ("rotate_degrees",), enabled_by="rotate_degrees"),
    Augmentation("color", PIXELS, lambda image, cfg, seed: color_jitter(image, cfg.color_jitter, seed),
                 ("color_jitter",), enabled_by="color_jitter"),
    Augmentation("randaugment", PIXELS,
                 lambda image, cfg, seed: randaugment(image, cfg.randaugment_ops, cfg.randaugment_magnitude, seed),
                 ("randaugment_ops", "randaugment_magnitude"), enabled_by="randaugment_ops"),
    Augmentation("mixup", BATCH, lambda batch, cfg, seed: mixup(batch[0], batch[1], cfg.mixup_alpha, seed) + batch[2:],
                 ("mixup_alpha",), enabled_by="mixup_alpha"),
)
NAMES = tuple(op.name for op in AUGMENTATIONS)
PER_EXAMPLE = tuple(op for op in AUGMENTATIONS if op.stage != BATCH)  # their row here = their seed slot
PER_BATCH = tuple(op for op in AUGMENTATIONS if op.stage == BATCH)


def check_names(names: Sequence[str], where: str) -> None:
    """UserError `where: unknown augmentation 'x' (known: ...)` for a name not in the table."""
    for name in names:
        if name not in NAMES:
            raise UserError(f"{where}: unknown augmentation {name!r} (known: {', '.join(NAMES)})")


def active(names: Sequence[str], data_cfg: DataConfig) -> tuple[Augmentation, ...]:
    """The named ops that data_cfg leaves on, in table order."""
    return tuple(op for op in AUGMENTATIONS if op.name in names and op.is_active(data_cfg))


def augment_example(encoded, height, width, data_cfg: DataConfig, ops: Sequence[Augmentation], seed):
    """Training pixels of one example, float32 [S, S, 3] in [0, 255]: the decode op (or the whole image),
    window ops on the uint8 image, resize, pixel ops. (Batching uint8 and casting per batch was measured slower.)"""
    seeds = split(seed, len(PER_EXAMPLE))

    def run(stage, image):
        for op in ops:
            if op.stage == stage:
                image = op.apply(image, data_cfg, seeds[PER_EXAMPLE.index(op)])
        return image

    if any(op.stage == DECODE for op in ops):
        image = run(DECODE, encoded)
    else:
        image = decode_full(encoded, dct_min_size(data_cfg), height, width)
    image = resize(run(WINDOW, image), data_cfg.image_size)
    return run(PIXELS, image)


def augment_batch(batch: tuple, data_cfg: DataConfig, ops: Sequence[Augmentation], seed) -> tuple:
    """A batch (images, labels[, ...]) after the batch ops; a lone batch op takes the batch seed itself."""
    seeds = [seed] if len(PER_BATCH) == 1 else split(seed, len(PER_BATCH))
    for op in ops:
        if op.stage == BATCH:
            batch = op.apply(batch, data_cfg, seeds[PER_BATCH.index(op)])
    return batch


# ---- decode: random-resized crop ---------------------------------------------------------------
CROP_ASPECT_RATIO = (3.0 / 4.0, 4.0 / 3.0)
CROP_MIN_OBJECT_COVERED = 0.1


def random_crop_window(image_shape, crop_min_area: float, seed):
    """[y, x, h, w] of a random-resized-crop window for an image of shape [h, w, c]."""
    import tensorflow as tf

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


def decode_random_crop(encoded, data_cfg: DataConfig, seed):
    """uint8 random-resized-crop window (area >= data.crop_min_area); for JPEG only the window is decoded."""
    window = lambda shape: random_crop_window(shape, data_cfg.crop_min_area, seed)  # noqa: E731
    return decode_window(encoded, window, dct_min_size(data_cfg))


# ---- window: uint8 [h, w, 3] ------------------------------------------------------------------
def random_flip(image, seed):
    """Mirror left-right with probability 1/2; only the chosen branch runs (cheap on the uint8 image)."""
    import tensorflow as tf

    return tf.cond(uniform(seed) < 0.5, lambda: tf.reverse(image, [1]), lambda: image)


# ---- pixels: float32 [S, S, 3] in [0, 255] -------------------------------------------------------
RANDAUGMENT_FILL = 128.0
GRAY_WEIGHTS = (0.299, 0.587, 0.114)
RGB_TO_YIQ = ((0.299, 0.596, 0.211), (0.587, -0.274, -0.523), (0.114, -0.322, 0.312))  # row-vector form


def _projective(image, transform, fill_mode: str = "REFLECT", fill_value: float = 0.0):
    """Apply one 8-parameter projective transform (output -> input mapping) to an [H, W, 3] image."""
    import tensorflow as tf

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
    import tensorflow as tf

    height = tf.cast(tf.shape(image)[0], tf.float32) - 1.0
    width = tf.cast(tf.shape(image)[1], tf.float32) - 1.0
    cos, sin = tf.cos(radians), tf.sin(radians)
    x_offset = (width - (cos * width - sin * height)) / 2.0
    y_offset = (height - (sin * width + cos * height)) / 2.0
    return tf.stack([cos, -sin, x_offset, sin, cos, y_offset, 0.0, 0.0])


def rotate(image, degrees: float, seed, fill_mode: str = "REFLECT", fill_value: float = 0.0):
    """Rotate about the centre by a uniform angle in [-degrees, degrees] (one ImageProjectiveTransformV3)."""
    radians = uniform(seed, -degrees, degrees) * (math.pi / 180.0)
    return _projective(image, _rotation_transform(image, radians), fill_mode, fill_value)


def color_jitter(image, strength: float, seed):
    """Brightness, contrast and saturation factors in [1 - s, 1 + s] and a hue rotation of up to s/4 turn.

    Brightness, saturation (blend with grey) and hue (rotation of the chroma plane in YIQ space) are linear in
    RGB and keep grey grey, and contrast blends with the mean grey, so the whole jitter is one 3x3 colour
    matrix plus one offset per image: x @ (c * b * S @ H) + (1 - c) * b * mean_grey(x). Far cheaper than an
    RGB -> HSV -> RGB round trip (tf.image.adjust_hue) and the same at any value scale.
    """
    import tensorflow as tf

    seeds = split(seed, 4)
    brightness = uniform(seeds[0], 1.0 - strength, 1.0 + strength)
    contrast = uniform(seeds[1], 1.0 - strength, 1.0 + strength)
    saturation = uniform(seeds[2], 1.0 - strength, 1.0 + strength)
    angle = uniform(seeds[3], -strength / 4.0, strength / 4.0) * (2.0 * math.pi)
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
    import tensorflow as tf

    return tf.clip_by_value(degenerate + factor * (image - degenerate), 0.0, 255.0)


def _grayscale(image):
    import tensorflow as tf

    return tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image))


def randaugment(image, num_ops: int, magnitude: float, seed):
    """A compact RandAugment: `num_ops` ops drawn uniformly per image, each at `magnitude` (0-10) with a random
    sign. tf.switch_case runs only the drawn op (keras.layers.RandAugment computes all 11 per op per batch)."""
    import tensorflow as tf

    level = float(min(max(magnitude, 0.0), 10.0)) / 10.0

    def signed(op_seed, value):
        sign = tf.where(uniform(op_seed) < 0.5, -1.0, 1.0)
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
    seeds = split(seed, 2 * max(num_ops, 1))
    shape = image.shape
    for i in range(num_ops):
        choice = tf.random.stateless_uniform([], seed=seeds[2 * i], minval=0, maxval=len(ops), dtype=tf.int32)
        op_seed = seeds[2 * i + 1]
        image = tf.switch_case(choice, [lambda op=op: op(image, op_seed) for op in ops])
        image.set_shape(shape)
    return tf.clip_by_value(image, 0.0, 255.0)


# ---- batch: (images [B, S, S, 3], labels [B, C], ...) ----------------------------------------------
def mixup(images, labels, alpha: float, seed):
    """Mix each example with the batch reversed: lam ~ Beta(alpha, alpha) per example, labels mixed alike."""
    import tensorflow as tf

    seeds = split(seed, 2)
    batch = tf.shape(images)[0]
    gamma_a = tf.random.stateless_gamma([batch], seed=seeds[0], alpha=alpha)
    gamma_b = tf.random.stateless_gamma([batch], seed=seeds[1], alpha=alpha)
    lam = gamma_a / tf.maximum(gamma_a + gamma_b, 1e-12)
    mixed_images = lam[:, None, None, None] * images + (1.0 - lam[:, None, None, None]) * tf.reverse(images, [0])
    mixed_labels = lam[:, None] * labels + (1.0 - lam[:, None]) * tf.reverse(labels, [0])
    return mixed_images, mixed_labels
