"""fashion_tf.data.augment: the augmentation table and its ops, alone and through the training pipeline."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from data_shards import (  # noqa: E402
    IMAGE_SIZE, NUM_LABELS, collect, config, encode, expected_labels, image_of, write_png_folder,
    write_standard_folder,
)
from fashion_tf.config import DataConfig, from_dict  # noqa: E402
from fashion_tf.data import augment, make_dataset  # noqa: E402
from fashion_tf.errors import UserError  # noqa: E402

STAGE_ORDER = (augment.DECODE, augment.WINDOW, augment.PIXELS, augment.BATCH)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_standard_folder(tmp_path_factory.mktemp("shards"))


# ---- the table ------------------------------------------------------------------------------
def test_the_table_is_in_application_order_and_names_real_config_fields():
    stages = [STAGE_ORDER.index(op.stage) for op in augment.AUGMENTATIONS]
    assert stages == sorted(stages)  # the pipeline applies the table top to bottom
    assert len(set(augment.NAMES)) == len(augment.NAMES)
    assert [op.stage for op in augment.AUGMENTATIONS].count(augment.DECODE) == 1  # one op decides the decode
    fields = {field.name for field in dataclasses.fields(DataConfig)}
    for op in augment.AUGMENTATIONS:
        assert set(op.params) <= fields, op.name
        assert op.enabled_by is None or op.enabled_by in op.params, op.name


def test_the_config_accepts_exactly_the_table_names():
    assert from_dict({"data": {"augment": list(augment.NAMES)}}).data.augment == list(augment.NAMES)
    with pytest.raises(UserError, match=r"^run.json: data.augment: unknown augmentation 'blur' \(known: crop, flip, "):
        from_dict({"data": {"augment": ["flip", "blur"]}}, "run.json")


def test_an_op_whose_switch_is_zero_is_left_out():
    on = DataConfig(augment=list(augment.NAMES))
    off = dataclasses.replace(on, rotate_degrees=0.0, color_jitter=0.0, randaugment_ops=0, mixup_alpha=0.0)
    assert [op.name for op in augment.active(on.augment, on)] == list(augment.NAMES)
    assert [op.name for op in augment.active(off.augment, off)] == ["crop", "flip"]
    assert [op.name for op in augment.active(["mixup", "flip"], on)] == ["flip", "mixup"]  # table order


def test_a_switched_off_op_leaves_the_training_stream_unchanged(shards):
    def first_batches(**changes):
        cfg = config(shards, deterministic=True, **changes)
        return collect(make_dataset(cfg, "train", training=True, seed=2), batches=2)[0]

    plain = first_batches(augment=["flip"])
    np.testing.assert_array_equal(first_batches(augment=["flip", "rotate"], rotate_degrees=0.0), plain)
    assert np.abs(first_batches(augment=["flip", "rotate"], rotate_degrees=20.0) - plain).mean() > 1.0


# ---- the ops ----------------------------------------------------------------------------------
def test_flip_mirrors_about_half_the_examples_and_keeps_the_others(tmp_path):
    image = image_of(2)
    encoded = tf.constant(encode(image, "png"))  # lossless: exact comparisons
    cfg = config(tmp_path, image_size=IMAGE_SIZE)
    ops = augment.active(["flip"], cfg)
    plain = tf.image.resize(image, [IMAGE_SIZE, IMAGE_SIZE]).numpy()
    mirrored = tf.image.resize(image[:, ::-1], [IMAGE_SIZE, IMAGE_SIZE]).numpy()
    flipped = 0
    for k in range(16):
        out = augment.augment_example(encoded, None, None, cfg, ops, tf.constant([3, k], tf.int64)).numpy()
        is_plain, is_mirrored = np.array_equal(out, plain), np.array_equal(out, mirrored)
        assert is_plain != is_mirrored
        flipped += is_mirrored
    assert 3 <= flipped <= 13


def test_crop_windows_lie_inside_the_image_and_keep_the_minimum_area():
    shape = tf.constant([48, 40, 3])
    areas = []
    for k in range(20):
        y, x, h, w = augment.random_crop_window(shape, 0.25, tf.constant([5, k], tf.int64)).numpy().tolist()
        assert 0 <= y and 0 <= x and y + h <= 48 and x + w <= 40
        areas.append(h * w / (48 * 40))
    assert min(areas) >= 0.25 - 0.02 and len(set(areas)) > 1


def test_color_jitter_is_identity_at_zero_strength_and_keeps_grey_grey():
    image = tf.constant(image_of(3)[:32, :32].astype(np.float32))
    seed = tf.constant([1, 2], tf.int64)
    np.testing.assert_allclose(augment.color_jitter(image, 0.0, seed).numpy(), image.numpy(), atol=1e-3)
    grey = tf.fill([8, 8, 3], 100.0)
    jittered = augment.color_jitter(grey, 0.4, seed).numpy()
    np.testing.assert_allclose(jittered[..., 0], jittered[..., 1], atol=1e-3)
    np.testing.assert_allclose(jittered[..., 1], jittered[..., 2], atol=1e-3)
    changed = augment.color_jitter(image, 0.4, seed).numpy()
    assert np.abs(changed - image.numpy()).mean() > 1.0 and 0 <= changed.min() and changed.max() <= 255


# ---- through the training pipeline -------------------------------------------------------------
def test_training_shapes_dtypes_ranges_with_every_per_image_augmentation(shards):
    cfg = config(shards, augment=["crop", "flip", "rotate", "color", "randaugment"])
    dataset = make_dataset(cfg, "train", training=True, seed=1)
    images, labels, _ = collect(dataset, batches=3)
    assert images.dtype == np.float32 and labels.dtype == np.float32
    assert images.shape == (24, IMAGE_SIZE, IMAGE_SIZE, 3) and labels.shape == (24, NUM_LABELS)
    assert images.min() >= 0.0 and images.max() <= 255.0 and images.max() > 100.0
    assert set(np.unique(labels)) <= {0.0, 1.0}


def test_png_records_take_the_decode_image_path_when_cropped(tmp_path):
    folder = write_png_folder(tmp_path / "png")
    images, _, _ = collect(make_dataset(config(folder, augment=["crop", "flip"]), "train", True), 2)
    assert images.shape == (16, IMAGE_SIZE, IMAGE_SIZE, 3) and 0 <= images.min() <= images.max() <= 255


def test_mixup_produces_soft_labels_mixed_with_the_reversed_batch(shards):
    cfg = config(shards, augment=["flip", "mixup"], mixup_alpha=0.4, batch_size=10)
    dataset = make_dataset(cfg, "train", training=True, with_ids=True, seed=4)
    soft_values = 0
    for batch in dataset.take(4):
        images, labels, ids = (t.numpy() for t in batch)
        # lam * 255 + (1 - lam) * 255 can round to 255.00002 in float32
        assert images.min() >= 0.0 and images.max() <= 255.0 + 1e-3
        originals = np.stack([expected_labels(i) for i in ids])
        partners = originals[::-1]
        for row, own, partner in zip(labels, originals, partners):
            differs = own != partner
            if differs.any():  # labels = lam * own + (1 - lam) * partner with one lam per example
                lam = row[differs][0] if own[differs][0] == 1 else 1 - row[differs][0]
                np.testing.assert_allclose(row, lam * own + (1 - lam) * partner, atol=1e-5)
        soft_values += int(((labels > 1e-3) & (labels < 1 - 1e-3)).sum())
    assert soft_values > 0
