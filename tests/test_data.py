"""The tf.data input pipeline against small real shards written here with schema.serialize_example."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from fashion_tf import data, schema  # noqa: E402
from fashion_tf.config import DataConfig  # noqa: E402
from fashion_tf.errors import UserError, run_cli  # noqa: E402
from fashion_tf.shard_folder import ShardFolder  # noqa: E402

NUM_LABELS = 5
IMAGE_SIZE = 32
HEIGHT, WIDTH = 48, 40


def labels_of(i: int) -> list[int]:
    if i == 7:
        return []  # an image without labels
    return sorted({i % 4} | ({4} if i % 5 == 0 else set()))


def image_of(i: int) -> np.ndarray:
    """A distinct, non-symmetric picture per example (so flips and crops change it)."""
    rng = np.random.default_rng(i)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    base = np.stack([xx * 255 // WIDTH, yy * 255 // HEIGHT, np.full_like(xx, (i * 37) % 256)], axis=-1)
    noise = rng.integers(0, 40, size=base.shape)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def encode(image: np.ndarray, fmt: str) -> bytes:
    if fmt == "png":
        return tf.io.encode_png(image).numpy()
    return tf.io.encode_jpeg(image, quality=95).numpy()


def write_shards(folder: Path, split: str, labels: list[list[int]], num_shards: int, fmt: str = "jpeg") -> dict:
    """Write `{split}-i-of-n.tfrecord` shards, round-robin; return the split's dataset_info entry."""
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"{split}-{s:05d}-of-{num_shards:05d}.tfrecord" for s in range(num_shards)]
    writers = [tf.io.TFRecordWriter(str(folder / name)) for name in names]
    lengths = [0] * num_shards
    counts = np.zeros(NUM_LABELS, dtype=np.int64)
    total_bytes = 0
    for i, label_indices in enumerate(labels):
        encoded = encode(image_of(i), fmt)
        record = schema.serialize_example(
            encoded, fmt, HEIGHT, WIDTH, label_indices, f"img-{i:03d}", hashlib.sha256(encoded).hexdigest()
        )
        writers[i % num_shards].write(record)
        lengths[i % num_shards] += 1
        counts[label_indices] += 1
        total_bytes += len(record)
    for writer in writers:
        writer.close()
    return {
        "num_examples": len(labels),
        "num_bytes": total_bytes,
        "shards": names,
        "shard_lengths": lengths,
        "label_counts": counts.tolist(),
    }


def write_folder(folder: Path, splits: dict[str, dict]) -> Path:
    info = {"num_labels": NUM_LABELS, "splits": splits, "groups": {"all": list(range(NUM_LABELS))}}
    (folder / "shard_info.json").write_text(json.dumps(info))
    label_map = {"labels": [{"index": k, "id": str(k + 1), "name": f"l{k}", "group": "all"} for k in range(NUM_LABELS)]}
    (folder / "label_map.json").write_text(json.dumps(label_map))
    return folder


N_TRAIN = 60
N_VAL = 13


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("shards")
    train = write_shards(folder, "train", [labels_of(i) for i in range(N_TRAIN)], num_shards=4)
    validation = write_shards(folder, "validation", [labels_of(i) for i in range(N_VAL)], num_shards=1)
    return write_folder(folder, {"train": train, "validation": validation})


def config(folder: Path, **changes) -> DataConfig:
    values = dict(tfrecords=str(folder), image_size=IMAGE_SIZE, batch_size=8, shuffle_buffer=64)
    values.update(changes)
    return DataConfig(**values)


def expected_labels(image_id: bytes) -> np.ndarray:
    row = np.zeros(NUM_LABELS, dtype=np.float32)
    row[labels_of(int(image_id.decode().split("-")[1]))] = 1.0
    return row


def collect(dataset, batches: int | None = None):
    images, labels, ids = [], [], []
    for step, batch in enumerate(dataset):
        if batches is not None and step >= batches:
            break
        images.append(batch[0].numpy())
        labels.append(batch[1].numpy())
        if len(batch) > 2:
            ids.extend(batch[2].numpy().tolist())
    return np.concatenate(images), np.concatenate(labels), ids


# ---- bad input ----------------------------------------------------------------------------
def test_bad_folder_and_split_are_user_errors(shards, tmp_path, capsys):
    with pytest.raises(UserError, match="no split 'test'.*train, validation"):
        data.make_dataset(config(shards), "test", training=False)
    with pytest.raises(UserError, match="not found"):
        data.make_dataset(config(tmp_path / "nope"), "train", training=True)
    code = run_cli(data.main, ["benchmark", "--data", str(tmp_path / "nope"), "--seconds", "1"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "nope" in err


# ---- training -----------------------------------------------------------------------------
def test_training_shapes_dtypes_ranges_with_every_per_image_augmentation(shards):
    cfg = config(shards, augment=["crop", "flip", "rotate", "color", "randaugment"])
    dataset = data.make_dataset(cfg, "train", training=True, seed=1)
    images, labels, _ = collect(dataset, batches=3)
    assert dataset.element_spec[0].shape.as_list() == [8, IMAGE_SIZE, IMAGE_SIZE, 3]  # drop_remainder: static batch
    assert images.dtype == np.float32 and labels.dtype == np.float32
    assert images.shape == (24, IMAGE_SIZE, IMAGE_SIZE, 3) and labels.shape == (24, NUM_LABELS)
    assert images.min() >= 0.0 and images.max() <= 255.0 and images.max() > 100.0
    assert set(np.unique(labels)) <= {0.0, 1.0}


def test_training_labels_match_ids_repeat_forever_and_full_batches(shards):
    cfg = config(shards, augment=["crop", "flip"], shuffle_buffer=16)
    dataset = data.make_dataset(cfg, "train", training=True, with_ids=True, seed=3)
    _, labels, ids = collect(dataset, batches=30)  # four epochs
    assert len(ids) == 8 * 30
    assert set(ids) == {f"img-{i:03d}".encode() for i in range(N_TRAIN)}
    for row, image_id in zip(labels, ids):
        np.testing.assert_array_equal(row, expected_labels(image_id))


def test_training_is_shuffled_and_reproducible_with_seed_and_deterministic(shards):
    cfg = config(shards, augment=["crop", "flip", "color"], deterministic=True)
    first = collect(data.make_dataset(cfg, "train", training=True, with_ids=True, seed=5), batches=3)
    second = collect(data.make_dataset(cfg, "train", training=True, with_ids=True, seed=5), batches=3)
    other = collect(data.make_dataset(cfg, "train", training=True, with_ids=True, seed=6), batches=3)
    assert first[2] == second[2]
    np.testing.assert_array_equal(first[0], second[0])
    assert first[2] != other[2]
    in_file_order = [f"img-{i:03d}".encode() for i in range(24)]
    assert first[2] != in_file_order


def test_cached_training_gives_the_written_labels(shards):
    cfg = config(shards, augment=["flip"], cache=True, shuffle_buffer=16)
    _, labels, ids = collect(data.make_dataset(cfg, "train", training=True, with_ids=True, seed=2), batches=30)
    assert set(ids) == {f"img-{i:03d}".encode() for i in range(N_TRAIN)}
    for row, image_id in zip(labels, ids):
        np.testing.assert_array_equal(row, expected_labels(image_id))


def test_mixup_produces_soft_labels_mixed_with_the_reversed_batch(shards):
    cfg = config(shards, augment=["flip", "mixup"], mixup_alpha=0.4, batch_size=10)
    dataset = data.make_dataset(cfg, "train", training=True, with_ids=True, seed=4)
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


# ---- evaluation -------------------------------------------------------------------------
def test_evaluation_is_one_deterministic_pass_with_remainder_and_written_labels(shards):
    cfg = config(shards, augment=["crop", "flip", "color", "mixup"], batch_size=5)
    dataset = data.make_dataset(cfg, "validation", training=False, with_ids=True)
    first = collect(dataset)
    second = collect(dataset)
    assert sorted(first[2]) == [f"img-{i:03d}".encode() for i in range(N_VAL)]  # 13 = 5 + 5 + 3: remainder kept
    assert first[2] == second[2]
    np.testing.assert_array_equal(first[0], second[0])
    for row, image_id in zip(first[1], first[2]):
        np.testing.assert_array_equal(row, expected_labels(image_id))


def test_evaluation_equals_plain_decode_and_resize(shards):
    cfg = config(shards, augment=["crop", "flip", "rotate", "color", "randaugment", "mixup"])
    images, _, ids = collect(data.make_dataset(cfg, "validation", training=False, with_ids=True))
    records = {}
    for serialized in tf.data.TFRecordDataset(ShardFolder(shards).shard_files("validation")):
        parsed = schema.parse_example(serialized)
        records[parsed[schema.SOURCE_ID].numpy()] = parsed[schema.ENCODED]
    for image, image_id in zip(images, ids):
        plain = tf.image.resize(tf.io.decode_jpeg(records[image_id], channels=3), [IMAGE_SIZE, IMAGE_SIZE]).numpy()
        np.testing.assert_array_equal(image, plain)


def test_evaluation_central_crop_fraction(shards):
    cfg = config(shards, eval_crop_fraction=0.5)
    images, _, ids = collect(data.make_dataset(cfg, "validation", training=False, with_ids=True))
    first = tf.data.TFRecordDataset(ShardFolder(shards).shard_files("validation")).take(1).get_single_element()
    parsed = schema.parse_example(first)
    decoded = tf.io.decode_jpeg(parsed[schema.ENCODED], channels=3)
    central = tf.image.crop_to_bounding_box(decoded, HEIGHT // 4, WIDTH // 4, HEIGHT // 2, WIDTH // 2)
    expected = tf.image.resize(central, [IMAGE_SIZE, IMAGE_SIZE]).numpy()
    actual = images[ids.index(parsed[schema.SOURCE_ID].numpy())]
    # decode_and_crop_jpeg decodes whole MCUs, so pixels at the window's edge differ slightly from crop-after-decode.
    assert np.abs(actual - expected).mean() < 0.5 and np.abs(actual - expected).max() < 8.0
    assert np.abs(actual - tf.image.resize(decoded, [IMAGE_SIZE, IMAGE_SIZE]).numpy()).mean() > 5.0


def test_png_records_take_the_decode_image_path(tmp_path):
    folder = tmp_path / "png"
    split = write_shards(folder, "train", [labels_of(i) for i in range(12)], num_shards=2, fmt="png")
    write_folder(folder, {"train": split})
    train_images, _, _ = collect(data.make_dataset(config(folder, augment=["crop", "flip"]), "train", True), 2)
    assert train_images.shape == (16, IMAGE_SIZE, IMAGE_SIZE, 3) and 0 <= train_images.min() <= train_images.max() <= 255
    images, _, ids = collect(data.make_dataset(config(folder), "train", training=False, with_ids=True))
    index = int(ids[0].decode().split("-")[1])
    expected = tf.image.resize(image_of(index), [IMAGE_SIZE, IMAGE_SIZE]).numpy()  # PNG is lossless
    np.testing.assert_allclose(images[0], expected, atol=1e-4)


# ---- distribution ---------------------------------------------------------------------------
@pytest.mark.parametrize("num_shards", [4, 1])  # 1 shard < 2 pipelines: sharded by record instead of by file
def test_two_input_pipelines_cover_every_record_exactly_once(tmp_path, num_shards):
    folder = tmp_path / f"s{num_shards}"
    split = write_shards(folder, "train", [labels_of(i) for i in range(N_TRAIN)], num_shards=num_shards)
    write_folder(folder, {"train": split})
    cfg = config(folder)
    seen = []
    for pipeline_id in (0, 1):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline_id, num_replicas_in_sync=2)
        dataset = data.make_dataset(cfg, "train", training=False, input_context=context, with_ids=True)
        assert dataset.element_spec[0].shape.as_list()[0] in (None, 8)
        ids = collect(dataset)[2]
        assert 0 < len(ids) < N_TRAIN
        seen.extend(ids)
    assert sorted(seen) == [f"img-{i:03d}".encode() for i in range(N_TRAIN)]


@pytest.mark.parametrize("batch_size", [1, 4, 5, 6])
def test_evaluation_for_two_replicas_of_one_pipeline_gives_equal_nonempty_batches_weighting_each_record_once(
        shards, batch_size):
    cfg = config(shards, batch_size=batch_size)
    context = tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0, num_replicas_in_sync=2)
    batches = list(data.make_dataset(cfg, "validation", training=False, input_context=context, with_ids=True))
    assert len(batches) % 2 == 0  # the replicas take batches in turn: every step has one per replica
    weighted = []
    for first, second in zip(batches[::2], batches[1::2]):
        assert 0 < len(first[2]) == len(second[2]) <= batch_size
        for images, labels, ids, weights in (first, second):
            assert images.shape[0] == labels.shape[0] == ids.shape[0] == weights.shape[0]
            weighted.extend(i for i, w in zip(ids.numpy().tolist(), weights.numpy().tolist()) if w == 1.0)
            assert set(weights.numpy().tolist()) <= {0.0, 1.0}
    assert sorted(weighted) == [f"img-{i:03d}".encode() for i in range(N_VAL)]  # 13: padded, each weighed once


def test_training_pipelines_read_disjoint_records_with_the_per_replica_batch(shards):
    cfg = config(shards, augment=["flip"], shuffle_buffer=16)
    seen = []
    for pipeline_id in (0, 1):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline_id, num_replicas_in_sync=2)
        dataset = data.make_dataset(cfg, "train", training=True, input_context=context, with_ids=True, seed=0)
        assert dataset.element_spec[0].shape.as_list()[0] == cfg.batch_size
        seen.append(set(collect(dataset, batches=15)[2]))  # four epochs of this pipeline's 30 records
    assert len(seen[0]) == len(seen[1]) == N_TRAIN // 2 and not seen[0] & seen[1]


# ---- label balancing --------------------------------------------------------------------------
def rare_share(folder: Path, balance: str, power: float, samples: int = 480) -> float:
    cfg = config(folder, balance=balance, balance_power=power, batch_size=16, shuffle_buffer=128)
    _, labels, _ = collect(data.make_dataset(cfg, "train", training=True, seed=11), batches=samples // 16)
    return float(labels[:, 0].mean())


def test_rejection_balancing_raises_the_share_of_a_rare_label_as_configured(tmp_path):
    folder = tmp_path / "imbalanced"
    labels = [[0] if i % 20 == 0 else [1] for i in range(200)]  # label 0: 10 of 200 (5%)
    write_folder(folder, {"train": write_shards(folder, "train", labels, num_shards=2)})
    plain = rare_share(folder, "none", 1.0)
    sqrt_balanced = rare_share(folder, "rejection", 0.5)
    balanced = rare_share(folder, "rejection", 1.0)
    # Expected shares: 5%; 10 * sqrt(19) / (10 * sqrt(19) + 190) = 18.7%; power 1 equalises: 50%.
    assert plain == pytest.approx(0.05, abs=0.03)
    assert sqrt_balanced == pytest.approx(0.187, abs=0.07)
    assert balanced == pytest.approx(0.5, abs=0.1)


def test_label_weights():
    np.testing.assert_allclose(data.label_weights(np.array([100, 25, 0, 4]), 0.5), [1.0, 2.0, 0.0, 5.0])


# ---- CLI ------------------------------------------------------------------------------------------
def test_benchmark_cli_prints_images_per_second(shards, capsys):
    code = data.main(
        ["benchmark", "--data", str(shards), "--image-size", "32", "--batch-size", "8", "--augment", "crop,flip",
         "--seconds", "1", "--warmup", "0.2"]
    )
    out = capsys.readouterr().out
    assert code == 0 and "augment=crop,flip" in out and "images/s" in out
    assert float(out.split(": ")[-1].split(" images/s")[0]) > 0


def test_color_jitter_is_identity_at_zero_strength_and_keeps_grey_grey():
    image = tf.constant(image_of(3)[:32, :32].astype(np.float32))
    seed = tf.constant([1, 2], tf.int64)
    np.testing.assert_allclose(data.color_jitter(image, 0.0, seed).numpy(), image.numpy(), atol=1e-3)
    grey = tf.fill([8, 8, 3], 100.0)
    jittered = data.color_jitter(grey, 0.4, seed).numpy()
    np.testing.assert_allclose(jittered[..., 0], jittered[..., 1], atol=1e-3)
    np.testing.assert_allclose(jittered[..., 1], jittered[..., 2], atol=1e-3)
    changed = data.color_jitter(image, 0.4, seed).numpy()
    assert np.abs(changed - image.numpy()).mean() > 1.0 and 0 <= changed.min() and changed.max() <= 255


def test_big_jpegs_are_decoded_at_a_dct_scale_that_keeps_the_output_size():
    yy, xx = np.mgrid[0:256, 0:320]
    big = np.stack([yy, xx * 255 // 320, np.full_like(yy, 90)], axis=-1).astype(np.uint8)
    encoded = tf.io.encode_jpeg(big, quality=95)
    height, width = tf.constant(256, tf.int64), tf.constant(320, tf.int64)
    assert data.decode_full(encoded, 32, height, width).shape == (32, 40, 3)  # ratio 8: 256 / 8 = 32 still >= 32
    assert data.decode_full(encoded, 100, height, width).shape == (128, 160, 3)  # ratio 2 (ratio 4 would leave 64)
    assert data.decode_full(encoded, 32, tf.constant(-1, tf.int64), width).shape == (256, 320, 3)  # size unknown
    np.testing.assert_array_equal(data.decode_full(encoded).numpy(), tf.io.decode_jpeg(encoded).numpy())
    window = data.decode_jpeg_window(encoded, tf.constant([64, 64, 128, 160]), min_size=60)  # ratio 2
    assert window.shape == (64, 80, 3)
    expected = tf.image.resize(tf.io.decode_jpeg(encoded)[64:192, 64:224], [64, 80], method="area").numpy()
    assert np.abs(window.numpy().astype(np.float32) - expected).mean() < 3.0
