"""Encoded image bytes -> pixels: whole-image and window decodes, DCT-scaled JPEG decoding, the resize, and
`decode_for_eval`, the one definition of evaluation and inference pixels (the eval pipeline and predict use it).

JPEG or not is read from the bytes (the leading marker), not from the record's format field; non-JPEG images
(PNG, GIF, BMP) take one decode_image op.

Big JPEGs (data.jpeg_dct_scaling, on by default): when the window (training crop) or the image (evaluation,
sized from the record's height/width) keeps >= S pixels on its shorter side at 1/2, 1/4 or 1/8 scale, libjpeg
decodes at that scale (IDCT scaling), which costs a fraction of a full decode and averages like an area filter.
iMaterialist images are mostly far larger than 224-299 px, so this is where most decode time goes.

TensorFlow is imported inside the functions: importing this module does not load it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional

if TYPE_CHECKING:
    from fashion_tf.config import DataConfig

DCT_RATIOS = (1, 2, 4, 8)


def _tf():
    import tensorflow as tf

    return tf


def dct_min_size(data_cfg: DataConfig) -> Optional[int]:
    """The side a DCT-scaled decode must keep (the output size), or None when data.jpeg_dct_scaling is off."""
    return data_cfg.image_size if data_cfg.jpeg_dct_scaling else None


def is_jpeg(encoded):
    tf = _tf()
    return tf.equal(tf.strings.substr(encoded, 0, 3), b"\xff\xd8\xff")


def decode_any(encoded):
    """uint8 [h, w, 3] of any format decode_image reads (first frame of a GIF)."""
    tf = _tf()
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


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


def decode_window(encoded, choose_window: Callable, min_size: Optional[int] = None):
    """uint8 [h, w, 3] window [y, x, h, w] = choose_window(image shape [H, W, C]); for JPEG only the window is
    decoded (read from the header's shape, see decode_jpeg_window), other formats are decoded whole and sliced."""
    tf = _tf()

    def jpeg():
        return decode_jpeg_window(encoded, choose_window(tf.image.extract_jpeg_shape(encoded)), min_size)

    def other():
        image = decode_any(encoded)
        window = choose_window(tf.shape(image))
        return tf.slice(image, [window[0], window[1], 0], [window[2], window[3], 3])

    return tf.cond(is_jpeg(encoded), jpeg, other)


def decode_full(encoded, min_size: Optional[int] = None, height=None, width=None):
    """uint8 [h, w, 3] whole image with one decode_image op (JPEG, PNG, ...; for JPEG the same pixels as
    tf.io.decode_jpeg). With min_size, JPEGs whose recorded height and width are both >= 2 * min_size take the
    DCT-scaled path instead (see decode_jpeg_window); records without sizes (-1) never do."""
    tf = _tf()
    if not min_size or height is None or width is None:
        return decode_any(encoded)

    def scaled_jpeg():
        shape = tf.image.extract_jpeg_shape(encoded)
        branches = [lambda: tf.io.decode_jpeg(encoded, channels=3)] + [
            lambda r=ratio: tf.io.decode_jpeg(encoded, channels=3, ratio=r) for ratio in DCT_RATIOS[1:]
        ]
        return tf.switch_case(_dct_ratio_index(shape[0], shape[1], min_size), branches)

    big = (tf.minimum(height, width) >= 2 * min_size) & is_jpeg(encoded)
    return tf.cond(big, scaled_jpeg, lambda: decode_any(encoded))


def central_window(image_shape, fraction: float):
    """[y, x, h, w] of the centred window keeping `fraction` of each side (at least 1 pixel)."""
    tf = _tf()
    height, width = image_shape[0], image_shape[1]
    crop_h = tf.maximum(1, tf.cast(tf.cast(height, tf.float32) * fraction, tf.int32))
    crop_w = tf.maximum(1, tf.cast(tf.cast(width, tf.float32) * fraction, tf.int32))
    return tf.stack([(height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w])


def decode_central_crop(encoded, fraction: float, min_size: Optional[int] = None):
    """uint8 central crop keeping `fraction` of each side; for JPEG only that window is decoded."""
    return decode_window(encoded, lambda shape: central_window(shape, fraction), min_size)


def resize(image, image_size: int):
    """Bilinear resize to [S, S, 3] float32; bilinear never leaves [0, 255]."""
    tf = _tf()
    image = tf.image.resize(image, [image_size, image_size], method="bilinear")
    image.set_shape([image_size, image_size, 3])
    return image


def decode_for_eval(encoded, data_cfg: DataConfig, height=None, width=None):
    """Encoded image -> float32 [S, S, 3] in [0, 255] without augmentation: optional central crop
    (data.eval_crop_fraction), then resize. For images up to 2*S a side, exactly decode + tf.image.resize.

    The one definition of evaluation/inference pixels: the eval pipeline and fashion_tf.predict both use it.
    """
    min_size = dct_min_size(data_cfg)
    if data_cfg.eval_crop_fraction < 1.0:
        image = decode_central_crop(encoded, data_cfg.eval_crop_fraction, min_size)
    else:
        image = decode_full(encoded, min_size, height, width)
    return resize(image, data_cfg.image_size)
