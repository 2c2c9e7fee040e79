"""fashion_tf.data.decode: encoded bytes -> pixels, and decode_for_eval (evaluation and inference pixels)."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from data_shards import HEIGHT, IMAGE_SIZE, WIDTH, config, encode, image_of  # noqa: E402
from fashion_tf.data.decode import decode_for_eval, decode_full, decode_jpeg_window  # noqa: E402

SIZE = [IMAGE_SIZE, IMAGE_SIZE]


def test_eval_pixels_are_the_plain_decode_and_resize(tmp_path):
    for i in range(4):
        encoded = tf.constant(encode(image_of(i), "jpeg"))
        plain = tf.image.resize(tf.io.decode_jpeg(encoded, channels=3), SIZE).numpy()
        with_sizes = decode_for_eval(encoded, config(tmp_path), tf.constant(HEIGHT, tf.int64), tf.constant(WIDTH, tf.int64))
        np.testing.assert_array_equal(with_sizes.numpy(), plain)
        np.testing.assert_array_equal(decode_for_eval(encoded, config(tmp_path)).numpy(), plain)  # predict: no sizes


def test_eval_central_crop_fraction(tmp_path):
    encoded = tf.constant(encode(image_of(0), "jpeg"))
    decoded = tf.io.decode_jpeg(encoded, channels=3)
    central = tf.image.crop_to_bounding_box(decoded, HEIGHT // 4, WIDTH // 4, HEIGHT // 2, WIDTH // 2)
    expected = tf.image.resize(central, SIZE).numpy()
    actual = decode_for_eval(encoded, config(tmp_path, eval_crop_fraction=0.5)).numpy()
    # decode_and_crop_jpeg decodes whole MCUs, so pixels at the window's edge differ slightly from crop-after-decode.
    assert np.abs(actual - expected).mean() < 0.5 and np.abs(actual - expected).max() < 8.0
    assert np.abs(actual - tf.image.resize(decoded, SIZE).numpy()).mean() > 5.0


def test_png_takes_the_decode_image_path_whole_and_cropped(tmp_path):
    image = image_of(3)
    encoded = tf.constant(encode(image, "png"))
    whole = decode_for_eval(encoded, config(tmp_path), tf.constant(HEIGHT, tf.int64), tf.constant(WIDTH, tf.int64))
    np.testing.assert_allclose(whole.numpy(), tf.image.resize(image, SIZE).numpy(), atol=1e-4)  # PNG is lossless
    cropped = decode_for_eval(encoded, config(tmp_path, eval_crop_fraction=0.5))
    central = image[HEIGHT // 4: HEIGHT // 4 + HEIGHT // 2, WIDTH // 4: WIDTH // 4 + WIDTH // 2]
    np.testing.assert_allclose(cropped.numpy(), tf.image.resize(central, SIZE).numpy(), atol=1e-4)


def test_big_jpegs_are_decoded_at_a_dct_scale_that_keeps_the_output_size():
    yy, xx = np.mgrid[0:256, 0:320]
    big = np.stack([yy, xx * 255 // 320, np.full_like(yy, 90)], axis=-1).astype(np.uint8)
    encoded = tf.io.encode_jpeg(big, quality=95)
    height, width = tf.constant(256, tf.int64), tf.constant(320, tf.int64)
    assert decode_full(encoded, 32, height, width).shape == (32, 40, 3)  # ratio 8: 256 / 8 = 32 still >= 32
    assert decode_full(encoded, 100, height, width).shape == (128, 160, 3)  # ratio 2 (ratio 4 would leave 64)
    assert decode_full(encoded, 32, tf.constant(-1, tf.int64), width).shape == (256, 320, 3)  # size unknown
    np.testing.assert_array_equal(decode_full(encoded).numpy(), tf.io.decode_jpeg(encoded).numpy())
    window = decode_jpeg_window(encoded, tf.constant([64, 64, 128, 160]), min_size=60)  # ratio 2
    assert window.shape == (64, 80, 3)
    expected = tf.image.resize(tf.io.decode_jpeg(encoded)[64:192, 64:224], [64, 80], method="area").numpy()
    assert np.abs(window.numpy().astype(np.float32) - expected).mean() < 3.0
