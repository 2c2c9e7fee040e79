import json

import pytest

from conftest import REPO, run_module
from fashion_tf.config import Config, load_config, parse_override, save_config
from fashion_tf.errors import UserError


def write(tmp_path, obj, name="c.json"):
    path = tmp_path / name
    path.write_text(json.dumps(obj) if not isinstance(obj, str) else obj)
    return path


@pytest.mark.parametrize("name", ["imat.json", "fashion_products.json", "demo.json"])
def test_shipped_configs_load(name):
    config = load_config(REPO / "configs" / name)
    assert config.data.image_size > 0
    assert config.output_dir


def test_required_keys_exist_with_their_names():
    config = Config()
    for key in ("tfrecords", "image_size", "batch_size"):
        assert hasattr(config.data, key)
    for key in ("backbone", "weights"):
        assert hasattr(config.model, key)
    for key in ("name", "gamma", "alpha"):
        assert hasattr(config.loss, key)
    for key in ("epochs", "learning_rate", "strategy", "mixed_precision"):
        assert hasattr(config.train, key)


def test_imat_config_is_inception_imagenet_focal_mixed_precision():
    config = load_config(REPO / "configs" / "imat.json")
    assert (config.model.backbone, config.data.image_size, config.model.weights) == ("inception_v3", 299, "imagenet")
    assert config.loss.name == "focal" and config.train.mixed_precision != "off"


def test_values_are_read_and_defaults_fill_the_rest(tmp_path):
    path = write(tmp_path, {"data": {"image_size": 96}, "model": {"weights": None}, "loss": {"alpha": "inverse_frequency"}})
    config = load_config(path)
    assert config.data.image_size == 96
    assert config.model.weights is None
    assert config.loss.alpha == "inverse_frequency"
    assert config.data.batch_size == Config().data.batch_size


def test_int_is_accepted_for_a_float_field(tmp_path):
    config = load_config(write(tmp_path, {"train": {"learning_rate": 1}}))
    assert config.train.learning_rate == 1.0 and isinstance(config.train.learning_rate, float)


def test_unknown_key_names_key_and_file(tmp_path):
    path = write(tmp_path, {"data": {"imagesize": 64}})
    with pytest.raises(UserError, match=r"c\.json: unknown key 'data\.imagesize'"):
        load_config(path)


def test_unknown_top_level_section(tmp_path):
    with pytest.raises(UserError, match="unknown key 'optimizer'"):
        load_config(write(tmp_path, {"optimizer": {}}))


def test_wrong_type_names_key_expected_and_got(tmp_path):
    path = write(tmp_path, {"data": {"image_size": "big"}})
    with pytest.raises(UserError, match=r"data\.image_size: expected integer, got string"):
        load_config(path)


def test_bool_is_not_an_int(tmp_path):
    with pytest.raises(UserError, match="data.batch_size: expected integer, got true/false"):
        load_config(write(tmp_path, {"data": {"batch_size": True}}))


def test_section_must_be_an_object(tmp_path):
    with pytest.raises(UserError, match="data: expected an object, got list"):
        load_config(write(tmp_path, {"data": [1]}))


def test_choice_and_augmentation_validation(tmp_path):
    with pytest.raises(UserError, match="train.strategy: 'tpu' is not one of"):
        load_config(write(tmp_path, {"train": {"strategy": "tpu"}}))
    with pytest.raises(UserError, match="unknown augmentation 'blur'"):
        load_config(write(tmp_path, {"data": {"augment": ["flip", "blur"]}}))


def test_broken_json_and_missing_file(tmp_path):
    with pytest.raises(UserError, match="not valid JSON"):
        load_config(write(tmp_path, "{\"data\": "))
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "nope.json")


def test_overrides_are_typed_by_field(tmp_path):
    config = load_config(
        None,
        [
            "data.image_size=64",
            "model.weights=null",
            "output_dir=2024",
            "train.learning_rate=3e-4",
            "data.augment=[\"flip\",\"crop\"]",
            "train.xla=true",
            "model.weights=/tmp/w.h5",
        ],
    )
    assert config.data.image_size == 64
    assert config.output_dir == "2024"
    assert config.train.learning_rate == pytest.approx(3e-4)
    assert config.data.augment == ["flip", "crop"]
    assert config.train.xla is True
    assert config.model.weights == "/tmp/w.h5"


def test_group_weights_are_an_object_of_numbers_settable_per_group(tmp_path):
    config = load_config(None, ["model.head=group_softmax", "loss.group_weights.articleType=2",
                                "loss.group_weights.gender=1"])
    assert config.loss.group_weights == {"articleType": 2.0, "gender": 1.0}
    path = tmp_path / "c.json"
    path.write_text('{"model": {"head": "group_softmax"}, "loss": {"group_weights": {"articleType": "high"}}}')
    with pytest.raises(UserError, match=r"c\.json: loss\.group_weights\.articleType: expected number, got string"):
        load_config(path)
    path.write_text('{"model": {"head": "group_softmax"}, "loss": {"group_weights": [2]}}')
    with pytest.raises(UserError, match=r"loss\.group_weights: expected object of number, got list"):
        load_config(path)
    with pytest.raises(UserError, match=r"loss\.group_weights\.usage: must be >= 0"):
        load_config(None, ["model.head=group_softmax", "loss.group_weights.usage=-1"])
    with pytest.raises(UserError, match=r"loss\.group_weights: only used with model\.head group_softmax, not 'sigmoid'"):
        load_config(None, ["model.head=sigmoid", "loss.group_weights.usage=2"])


def test_override_errors():
    with pytest.raises(UserError, match="expected key=value"):
        parse_override("data.image_size")
    with pytest.raises(UserError, match="data.image_size: expected integer, got string"):
        load_config(None, ["data.image_size=large"])
    with pytest.raises(UserError, match="unknown key 'train.epoch'"):
        load_config(None, ["train.epoch=3"])


def test_resolved_config_round_trips(tmp_path):
    config = load_config(REPO / "configs" / "demo.json", ["data.image_size=48"])
    save_config(config, tmp_path / "config.json")
    assert load_config(tmp_path / "config.json") == config


def test_cli_prints_resolved_config_and_fails_in_one_line(tmp_path):
    ok = run_module("fashion_tf.config", "--config", str(REPO / "configs" / "demo.json"))
    assert ok.returncode == 0 and json.loads(ok.stdout)["model"]["backbone"] == "small_cnn"
    bad = run_module("fashion_tf.config", "--config", str(write(tmp_path, {"model": {"backbnoe": "x"}})))
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "model.backbnoe" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.parametrize("override, message", [
    ("model.backbone=resnet5", "model.backbone: unknown backbone 'resnet5'"),
    ("model.dropout=1.5", r"model.dropout: must be in \[0, 1\), got 1.5"),
    ("model.dropout=1", r"model.dropout: must be in \[0, 1\)"),
    ("train.learning_rate=-0.001", "train.learning_rate: must be > 0, got -0.001"),
    ("train.learning_rate=0", "train.learning_rate: must be > 0"),
    ("train.epochs=0", "train.epochs: must be >= 1, got 0"),
    ("loss.name=focl", "loss.name: 'focl' is not one of focal, bce, asl"),
    ("loss.label_smoothing=1", r"loss.label_smoothing: must be in \[0, 1\)"),
    ("loss.alpha=2", r"loss.alpha: must be in \[0, 1\]"),
    ("train.monitor=val_f1", "train.monitor: 'val_f1' is not one of"),
    ("data.image_size=8", "data.image_size: efficientnet_b0 needs at least 32 px, got 8"),
    ("data.crop_min_area=0", r"data.crop_min_area: must be in \(0, 1\]"),
    ("train.steps_per_epoch=0", "train.steps_per_epoch: must be >= 1 or null"),
    ("model.stage_strides=[1,3,2,2]", "model.stage_strides: one stride"),
])
def test_values_out_of_range_are_caught_on_load_naming_the_key(tmp_path, override, message):
    path = write(tmp_path, {"model": {"backbone": "small_cnn", "weights": None}} if "small" in message or "stage" in message
                 else {})
    with pytest.raises(UserError, match=message):
        load_config(path, [override])


def test_config_command_checks_everything_train_would_without_tensorflow(tmp_path):
    """`python -m fashion_tf.config` is the dry run of a config: it loads no TensorFlow, so it answers in well
    under a second, and it catches what train would (e.g. an unknown backbone) in one line."""
    import subprocess
    import sys
    import time

    path = write(tmp_path, {"model": {"backbone": "resnet5"}})
    started = time.perf_counter()
    result = run_module("fashion_tf.config", "--config", str(path))
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "resnet5" in result.stderr
    assert time.perf_counter() - started < 5
    probe = "import sys, fashion_tf.config; fashion_tf.config.load_config(None); assert 'tensorflow' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", probe], cwd=REPO).returncode == 0
