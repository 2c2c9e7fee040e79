"""fashion_tf.data.pipeline (make_dataset) against small real shards (tests/data_shards.py)."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from data_shards import (  # noqa: E402
    N_TRAIN, N_VAL, NUM_LABELS, all_ids, collect, config, expected_labels, fingerprint, labels_of, write_folder,
    write_png_folder, write_shards, write_standard_folder,
)
from fashion_tf.data import make_dataset  # noqa: E402
from fashion_tf.errors import UserError  # noqa: E402


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_standard_folder(tmp_path_factory.mktemp("shards"))


# ---- bad input ----------------------------------------------------------------------------
def test_bad_folder_and_split_are_user_errors(shards, tmp_path):
    with pytest.raises(UserError, match="no split 'test'.*train, validation"):
        make_dataset(config(shards), "test", training=False)
    with pytest.raises(UserError, match="not found"):
        make_dataset(config(tmp_path / "nope"), "train", training=True)
    with pytest.raises(UserError, match="data.augment: unknown augmentation 'blur'"):
        make_dataset(config(shards, augment=["flip", "blur"]), "train", training=True)


def test_a_label_count_other_than_the_shards_is_one_user_error_naming_the_folder(shards):
    """Defect: num_labels smaller than the shards' silently dropped the labels past it (schema.multi_hot)."""
    for wrong in (NUM_LABELS - 1, NUM_LABELS + 1):
        with pytest.raises(UserError) as caught:
            make_dataset(config(shards), "train", training=True, num_labels=wrong)
        message = str(caught.value)
        assert message.startswith(f"{shards}:") and "\n" not in message
        assert f"{NUM_LABELS} labels" in message and f"{wrong} were expected" in message
    _, labels, ids = collect(make_dataset(config(shards), "validation", False, num_labels=NUM_LABELS, with_ids=True))
    assert labels.shape == (N_VAL, NUM_LABELS)
    np.testing.assert_array_equal(labels, np.stack([expected_labels(i) for i in ids]))


def test_a_label_map_that_disagrees_with_the_shards_is_refused(tmp_path):
    folder = tmp_path / "shorter_map"
    split = write_shards(folder, "train", [labels_of(i) for i in range(8)], num_shards=1)
    write_folder(folder, {"train": split}, mapped_labels=NUM_LABELS - 1)
    with pytest.raises(UserError, match="label_map.json: lists 4 labels but shard_info.json says the shards use 5"):
        make_dataset(config(folder), "train", training=True)


# ---- training -----------------------------------------------------------------------------
def test_training_labels_match_ids_repeat_forever_and_full_batches(shards):
    cfg = config(shards, augment=["crop", "flip"], shuffle_buffer=16)
    dataset = make_dataset(cfg, "train", training=True, with_ids=True, seed=3)
    assert dataset.element_spec[0].shape.as_list() == [8, 32, 32, 3]  # drop_remainder: static batch
    _, labels, ids = collect(dataset, batches=30)  # four epochs
    assert len(ids) == 8 * 30
    assert set(ids) == set(all_ids(N_TRAIN))
    for row, image_id in zip(labels, ids):
        np.testing.assert_array_equal(row, expected_labels(image_id))


def test_training_is_shuffled_and_reproducible_with_seed_and_deterministic(shards):
    cfg = config(shards, augment=["crop", "flip", "color"], deterministic=True)
    first = collect(make_dataset(cfg, "train", training=True, with_ids=True, seed=5), batches=3)
    second = collect(make_dataset(cfg, "train", training=True, with_ids=True, seed=5), batches=3)
    other = collect(make_dataset(cfg, "train", training=True, with_ids=True, seed=6), batches=3)
    assert first[2] == second[2]
    np.testing.assert_array_equal(first[0], second[0])
    assert first[2] != other[2]
    assert first[2] != all_ids(24)  # not in file order


def test_cached_training_gives_the_written_labels(shards):
    cfg = config(shards, augment=["flip"], cache=True, shuffle_buffer=16)
    _, labels, ids = collect(make_dataset(cfg, "train", training=True, with_ids=True, seed=2), batches=30)
    assert set(ids) == set(all_ids(N_TRAIN))
    for row, image_id in zip(labels, ids):
        np.testing.assert_array_equal(row, expected_labels(image_id))


# ---- the same stream as before the split into modules ---------------------------------------------
# name: (folder, DataConfig changes, make_dataset keywords; pipelines/replicas make an InputContext)
STREAMS = {
    "train crop,flip": ("jpeg", dict(augment=["crop", "flip"]), {}),
    "train crop,flip,color (the default)": ("jpeg", dict(augment=["crop", "flip", "color"]), {}),
    "train flip,rotate,randaugment": ("jpeg", dict(augment=["flip", "rotate", "randaugment"]), {}),
    "train crop,flip,mixup": ("jpeg", dict(augment=["crop", "flip", "mixup"], mixup_alpha=0.4), {}),
    "train every augmentation, ids": (
        "jpeg", dict(augment=["crop", "flip", "rotate", "color", "randaugment", "mixup"]), dict(with_ids=True)),
    "train crop,flip at 16 px (DCT-scaled window)": ("jpeg", dict(augment=["crop", "flip"], image_size=16), {}),
    "train no augmentation at 16 px (DCT-scaled decode)": ("jpeg", dict(augment=[], image_size=16), {}),
    "train rejection balance": ("jpeg", dict(augment=["flip"], balance="rejection", balance_power=1.0), {}),
    "train cached, pipeline 1 of 2": ("jpeg", dict(augment=["crop", "flip"], cache=True), dict(pipelines=(2, 1))),
    "train png crop,flip": ("png", dict(augment=["crop", "flip"]), {}),
    "eval": ("jpeg", {}, dict(training=False, split="validation", with_ids=True)),
    "eval 16 px, central crop 0.875": (
        "jpeg", dict(image_size=16, eval_crop_fraction=0.875), dict(training=False, split="validation")),
    "eval two replicas of one pipeline": (
        "jpeg", dict(batch_size=3), dict(training=False, split="validation", replicas=2)),
    "eval png central crop 0.5": ("png", dict(eval_crop_fraction=0.5), dict(training=False, with_ids=True)),
}
STREAM_SEED = 7
STREAM_BATCHES = 3
# data_shards.fingerprint of each stream's first batches, recorded from fashion_tf/data.py as it was before the
# split (commit b43cb82) with TensorFlow 2.21.0 on x86-64 (AVX-512); the sha256 is bit-identity, the projections
# catch any real change on platforms whose float rounding differs.
RECORDED_WITH = "2.21.0"
RECORDED_ON = "AMD EPYC"  # the CPU family of the recording; elsewhere float rounding may differ in the last bit
REFERENCE = {
    "train crop,flip": (
        "21c04de36704d782904c0532a017dd2e26f2b19ff5abf783a76364c10dcb72bc",
        [27859.974576266097, 14157.935792494187, 14609.274035944001]),
    "train crop,flip,color (the default)": (
        "0a64f25a45529c80727aa4a47b68599ecf78a2161655e770a312202941867b3a",
        [21374.389414034238, 17244.830493570793, 11091.373814549239]),
    "train flip,rotate,randaugment": (
        "d3f6f6e485a3faf7e8c56b3745b5ff62cd582b7acdcf31d3c09ca09ca04bab3b",
        [21380.289716477822, 18655.795804296235, 13629.972738136745]),
    "train crop,flip,mixup": (
        "b29818db912fdb1bbe4f40018b63df7a6995c6bea5c49c4649fecb821a076f41",
        [15138.34993143788, 10309.604228212585, 9458.524231841657]),
    "train every augmentation, ids": (
        "2a199a7cbb0c92e3a03bead9e39fb809632f203e703834ad6c316686a812fc98",
        [9399.348138200203, 20770.868118646868, 8203.400440300316]),
    "train crop,flip at 16 px (DCT-scaled window)": (
        "bbb290e815a3c71ae3db10bb74f62b49db9abc56265247a5c19bcc2636303ffc",
        [-6219.6364316343415, 7830.222282826234, -1067.7613278835192]),
    "train no augmentation at 16 px (DCT-scaled decode)": (
        "34d4f7de7aaecb6c019fb1fa61147bbdbbcae2b05c2c6517ecde443dd1ab26f9",
        [2654.3825382892787, 10548.916627676304, 7671.041507211197]),
    "train rejection balance": (
        "192a67314fdd7be0502ebbde25e9524cc9264bdcf3b3563bdc7d4554c5ea33a6",
        [21061.16523847357, 29699.02066038012, 22877.21518425722]),
    "train cached, pipeline 1 of 2": (
        "8dc95d903b48f39caa4ed386aeb9cd04391eab682bf4276e7796481d9134b26c",
        [27182.382406333883, 32539.02692519807, 19353.962654999246]),
    "train png crop,flip": (
        "a1d8365537035e1ded1be47a7d0d4706c5958fa9afe93d0ef7c98657507800af",
        [18617.97075357237, 17359.63647256706, 20636.908656449737]),
    "eval": (
        "4538012633bcaeb7dcf7e0406b8b6c281e12dcbd5f8297bfe19b90efb6a9a3b4",
        [12667.909768238287, 17461.018992133297]),
    "eval 16 px, central crop 0.875": (
        "52668004844b3428254fcae57eb5acc70e6f7f74921b1d6b009bb98fa183fa58",
        [9242.270738922613, -2863.9598632328753]),
    "eval two replicas of one pipeline": (
        "f7e6b9151f682cb4fe911034b84df6e42ffd32fe5fd6b6310528cbab3eaa96cf",
        [7397.463723717105, 16716.248195005395, -2971.696598604429]),
    "eval png central crop 0.5": (
        "a61b53c5480faaa491e6d3b48e29c77ae72b1ca20ca4f052c27f3136186f1672",
        [6786.279633635179, 13167.510631512545]),
}


def stream(name: str, folders: dict):
    folder, changes, keywords = STREAMS[name]
    keywords = dict(keywords)
    training = keywords.pop("training", True)
    split = keywords.pop("split", "train")
    pipelines, pipeline_id = keywords.pop("pipelines", (1, 0))
    replicas = keywords.pop("replicas", pipelines)
    context = None
    if pipelines > 1 or replicas > 1:
        context = tf.distribute.InputContext(pipelines, pipeline_id, replicas)
    cfg = config(folders[folder], deterministic=True, **changes)
    return make_dataset(cfg, split, training, input_context=context, seed=STREAM_SEED if training else None, **keywords)


@pytest.fixture(scope="module")
def stream_folders(shards, tmp_path_factory):
    return {"jpeg": shards, "png": write_png_folder(tmp_path_factory.mktemp("png"))}


@pytest.mark.parametrize("name", list(STREAMS))
def test_the_stream_is_bit_identical_to_the_recorded_one(stream_folders, name):
    tf.random.set_seed(None)  # op seeds combine with a global seed, which other tests set (train does, by design)
    digest, projections = REFERENCE[name]
    actual = fingerprint(stream(name, stream_folders), STREAM_BATCHES)
    np.testing.assert_allclose(actual["projections"], projections, rtol=1e-6, err_msg=f"{name}: another stream")
    if tf.__version__ == RECORDED_WITH and RECORDED_ON in cpu_model():
        assert actual["sha256"] == digest, f"{name}: the same stream within float noise, but not bit-identical"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            return next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), "")
    except OSError:
        return ""


# ---- evaluation -------------------------------------------------------------------------
def test_evaluation_is_one_deterministic_pass_with_remainder_and_written_labels(shards):
    cfg = config(shards, augment=["crop", "flip", "color", "mixup"], batch_size=5)
    dataset = make_dataset(cfg, "validation", training=False, with_ids=True)
    first = collect(dataset)
    second = collect(dataset)
    assert sorted(first[2]) == all_ids(N_VAL)  # 13 = 5 + 5 + 3: remainder kept
    assert first[2] == second[2]
    np.testing.assert_array_equal(first[0], second[0])
    for row, image_id in zip(first[1], first[2]):
        np.testing.assert_array_equal(row, expected_labels(image_id))


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
        dataset = make_dataset(cfg, "train", training=False, input_context=context, with_ids=True)
        assert dataset.element_spec[0].shape.as_list()[0] in (None, 8)
        ids = collect(dataset)[2]
        assert 0 < len(ids) < N_TRAIN
        seen.extend(ids)
    assert sorted(seen) == all_ids(N_TRAIN)


@pytest.mark.parametrize("batch_size", [1, 4, 5, 6])
def test_evaluation_for_two_replicas_of_one_pipeline_gives_equal_nonempty_batches_weighting_each_record_once(
        shards, batch_size):
    cfg = config(shards, batch_size=batch_size)
    context = tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0, num_replicas_in_sync=2)
    batches = list(make_dataset(cfg, "validation", training=False, input_context=context, with_ids=True))
    assert len(batches) % 2 == 0  # the replicas take batches in turn: every step has one per replica
    weighted = []
    for first, second in zip(batches[::2], batches[1::2]):
        assert 0 < len(first[2]) == len(second[2]) <= batch_size
        for images, labels, ids, weights in (first, second):
            assert images.shape[0] == labels.shape[0] == ids.shape[0] == weights.shape[0]
            weighted.extend(i for i, w in zip(ids.numpy().tolist(), weights.numpy().tolist()) if w == 1.0)
            assert set(weights.numpy().tolist()) <= {0.0, 1.0}
    assert sorted(weighted) == all_ids(N_VAL)  # 13: padded, each weighed once


def test_training_pipelines_read_disjoint_records_with_the_per_replica_batch(shards):
    cfg = config(shards, augment=["flip"], shuffle_buffer=16)
    seen = []
    for pipeline_id in (0, 1):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline_id, num_replicas_in_sync=2)
        dataset = make_dataset(cfg, "train", training=True, input_context=context, with_ids=True, seed=0)
        assert dataset.element_spec[0].shape.as_list()[0] == cfg.batch_size
        seen.append(set(collect(dataset, batches=15)[2]))  # four epochs of this pipeline's 30 records
    assert len(seen[0]) == len(seen[1]) == N_TRAIN // 2 and not seen[0] & seen[1]
