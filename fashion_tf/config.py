"""One config dataclass tree (data, model, loss, train, output_dir), loaded from JSON and validated.

Unknown keys and wrong types are user errors naming the key and the file. `--override key=value`
strings are typed by the field they set. The resolved config is written next to every output.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Union

from fashion_tf.backbones import BACKBONES
from fashion_tf.errors import UserError
from fashion_tf.fileio import read_json, write_json_atomic


@dataclass
class DataConfig:
    tfrecords: str = "tfrecords"  # shard folder written by make_tfrecords (holds label_map.json)
    image_size: int = 224
    batch_size: int = 64  # per replica; the global batch is this times the number of replicas
    train_split: str = "train"
    val_split: str = "validation"
    shuffle_buffer: int = 2048
    cache: bool = False  # cache the encoded records in memory (before decode/augment; small sets only)
    deterministic: bool = False
    prefetch: Optional[int] = None  # None: autotune. Model Garden pins it because autotune can OOM at scale.
    cycle_length: Optional[int] = None  # shard files read at once; None: min(number of files, 16)
    num_parallel_calls: Optional[int] = None  # parallel reads and decodes; None: autotune
    eval_crop_fraction: float = 1.0  # evaluation central crop (e.g. 0.875) before the resize; 1.0: whole image
    jpeg_dct_scaling: bool = True  # decode big JPEGs at 1/2, 1/4 or 1/8 scale while >= image_size pixels remain
    augment: list[str] = field(default_factory=lambda: ["crop", "flip", "color"])
    crop_min_area: float = 0.25
    rotate_degrees: float = 10.0
    color_jitter: float = 0.2
    randaugment_ops: int = 2
    randaugment_magnitude: float = 9.0
    mixup_alpha: float = 0.2
    balance: str = "none"  # none | rejection: oversample examples carrying rare labels
    balance_power: float = 0.5  # target sampling weight ~ (1 / label frequency) ** power


@dataclass
class ModelConfig:
    backbone: str = "efficientnet_b0"
    weights: Optional[str] = "imagenet"  # "imagenet", null (from scratch) or a weights file path
    head: str = "sigmoid"  # sigmoid (multi-label) | softmax (one class per image) | group_softmax (see README)
    pooling: str = "avg"  # avg | max
    dropout: float = 0.2
    dense_units: int = 0  # 0: no extra dense layer before the output
    width: int = 32  # small_cnn only: channels of the first stage
    stages: list[int] = field(default_factory=lambda: [1, 2, 4, 4])  # small_cnn only: channels of each stage / width
    stage_strides: list[int] = field(default_factory=lambda: [1, 2, 2, 2])  # small_cnn only: stride of each stage
    stage_blocks: list[int] = field(default_factory=lambda: [1, 1, 1, 1])  # small_cnn only: residual blocks per stage


@dataclass
class LossConfig:
    name: str = "focal"  # focal | bce | asl
    gamma: float = 2.0
    alpha: Optional[Union[float, str]] = 0.25  # scalar, "inverse_frequency" or null (focal)
    pos_weight: Optional[Union[float, str]] = None  # scalar, "inverse_frequency" or null (bce)
    gamma_pos: float = 0.0  # asl
    gamma_neg: float = 4.0  # asl
    clip: float = 0.05  # asl probability margin for negatives
    label_smoothing: float = 0.0
    group_weights: dict[str, float] = field(default_factory=dict)  # group_softmax: loss weight per group name (default 1)


@dataclass
class TrainConfig:
    epochs: int = 10
    learning_rate: float = 1e-3  # at base_batch_size; scaled with the global batch when lr_scaling is linear
    base_batch_size: int = 64
    lr_scaling: str = "linear"  # linear | none
    optimizer: str = "adamw"  # adamw | sgd
    weight_decay: float = 1e-4
    momentum: float = 0.9
    schedule: str = "cosine"  # cosine | step | constant (all after warmup)
    warmup_epochs: float = 1.0
    step_epochs: int = 10
    step_factor: float = 0.1
    freeze_backbone_epochs: int = 0  # epochs training only the head
    unfreeze: str = "all"  # after the frozen phase: "all" or the number of last backbone layers
    fine_tune_lr_factor: float = 0.1
    strategy: str = "auto"  # auto | mirrored | multi_worker | one_device
    mixed_precision: str = "auto"  # auto | float16 | bfloat16 | off
    xla: bool = False
    early_stopping_patience: int = 0  # 0: off
    monitor: str = "val_micro_f1"
    restore_best: bool = True  # final model = the best epoch by `monitor` (false: the last epoch)
    steps_per_epoch: Optional[int] = None  # None: one pass over the training split
    seed: int = 0


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output_dir: str = "runs/default"


CHOICES = {
    "data.balance": ("none", "rejection"),
    "model.head": ("sigmoid", "softmax", "group_softmax"),
    "model.pooling": ("avg", "max"),
    "loss.name": ("focal", "bce", "asl"),
    "train.lr_scaling": ("linear", "none"),
    "train.optimizer": ("adamw", "sgd"),
    "train.schedule": ("cosine", "step", "constant"),
    "train.strategy": ("auto", "mirrored", "multi_worker", "one_device"),
    "train.mixed_precision": ("auto", "float16", "bfloat16", "off"),
}


# ---- typing helpers ---------------------------------------------------------------------
def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return f"object of {_type_name(typing.get_args(tp)[1])}"
    return {int: "integer", float: "number", str: "string", bool: "true/false"}.get(tp, getattr(tp, "__name__", str(tp)))


def _json_type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "true/false", int: "integer", float: "number", str: "string", list: "list", dict: "object"}.get(
        type(value), type(value).__name__
    )


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check `value` against the annotation `tp`; return it (ints widen to float). Raise UserError naming key."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, key, source)
            except UserError:
                continue
    elif tp is type(None):
        if value is None:
            return None
    elif origin is list:
        if isinstance(value, list):
            (item_type,) = typing.get_args(tp)
            return [_coerce(item, item_type, f"{key}[{i}]", source) for i, item in enumerate(value)]
    elif origin is dict:
        if isinstance(value, dict):
            _, value_type = typing.get_args(tp)
            return {name: _coerce(item, value_type, f"{key}.{name}", source) for name, item in value.items()}
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    raise UserError(f"{source}: {key}: expected {_type_name(tp)}, got {_json_type_name(value)} ({json.dumps(value)})")


def _fields(cls: type) -> dict[str, tuple[dataclasses.Field, Any]]:
    hints = typing.get_type_hints(cls)
    return {f.name: (f, hints[f.name]) for f in dataclasses.fields(cls)}


def _build(cls: type, data: Any, prefix: str, source: str):
    if not isinstance(data, dict):
        where = prefix.rstrip(".") or "top level"
        raise UserError(f"{source}: {where}: expected an object, got {_json_type_name(data)}")
    known = _fields(cls)
    for key in data:
        if key not in known:
            raise UserError(f"{source}: unknown key '{prefix}{key}' (known: {', '.join(known)})")
    kwargs = {}
    for name, (_, tp) in known.items():
        if name not in data:
            continue
        key = f"{prefix}{name}"
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, data[name], f"{key}.", source)
        else:
            kwargs[name] = _coerce(data[name], tp, key, source)
    return cls(**kwargs)


MONITORS = ("val_micro_f1", "val_pr_auc", "val_loss", "micro_f1", "pr_auc", "loss")

# Ranges of the numeric keys, known without any data: (key, test, what the test asks for).
RANGES = (
    ("data.image_size", lambda v: v > 0, "must be positive"),
    ("data.batch_size", lambda v: v > 0, "must be positive"),
    ("data.shuffle_buffer", lambda v: v > 0, "must be positive"),
    ("data.prefetch", lambda v: v is None or v > 0, "must be positive or null"),
    ("data.cycle_length", lambda v: v is None or v > 0, "must be positive or null"),
    ("data.num_parallel_calls", lambda v: v is None or v > 0, "must be positive or null"),
    ("data.eval_crop_fraction", lambda v: 0 < v <= 1, "must be in (0, 1]"),
    ("data.crop_min_area", lambda v: 0 < v <= 1, "must be in (0, 1]"),
    ("data.rotate_degrees", lambda v: 0 <= v <= 180, "must be in [0, 180]"),
    ("data.color_jitter", lambda v: 0 <= v <= 1, "must be in [0, 1]"),
    ("data.randaugment_ops", lambda v: v >= 0, "must be >= 0"),
    ("data.randaugment_magnitude", lambda v: 0 <= v <= 30, "must be in [0, 30]"),
    ("data.mixup_alpha", lambda v: v >= 0, "must be >= 0"),
    ("data.balance_power", lambda v: v >= 0, "must be >= 0"),
    ("model.dropout", lambda v: 0 <= v < 1, "must be in [0, 1)"),
    ("model.dense_units", lambda v: v >= 0, "must be >= 0"),
    ("model.width", lambda v: v > 0, "must be positive"),
    ("loss.gamma", lambda v: v >= 0, "must be >= 0"),
    ("loss.gamma_pos", lambda v: v >= 0, "must be >= 0"),
    ("loss.gamma_neg", lambda v: v >= 0, "must be >= 0"),
    ("loss.clip", lambda v: 0 <= v < 1, "must be in [0, 1)"),
    ("loss.label_smoothing", lambda v: 0 <= v < 1, "must be in [0, 1)"),
    ("loss.alpha", lambda v: not isinstance(v, float) or 0 <= v <= 1, "must be in [0, 1]"),
    ("loss.pos_weight", lambda v: not isinstance(v, float) or v > 0, "must be > 0"),
    ("train.epochs", lambda v: v >= 1, "must be >= 1"),
    ("train.learning_rate", lambda v: v > 0, "must be > 0"),
    ("train.base_batch_size", lambda v: v > 0, "must be positive"),
    ("train.weight_decay", lambda v: v >= 0, "must be >= 0"),
    ("train.momentum", lambda v: 0 <= v < 1, "must be in [0, 1)"),
    ("train.warmup_epochs", lambda v: v >= 0, "must be >= 0"),
    ("train.step_epochs", lambda v: v >= 1, "must be >= 1"),
    ("train.step_factor", lambda v: 0 < v <= 1, "must be in (0, 1]"),
    ("train.freeze_backbone_epochs", lambda v: v >= 0, "must be >= 0"),
    ("train.fine_tune_lr_factor", lambda v: v > 0, "must be > 0"),
    ("train.early_stopping_patience", lambda v: v >= 0, "must be >= 0"),
    ("train.steps_per_epoch", lambda v: v is None or v >= 1, "must be >= 1 or null"),
)


def _validate(config: Config, source: str) -> None:
    for key, allowed in CHOICES.items():
        value = get_value(config, key)
        if value not in allowed:
            raise UserError(f"{source}: {key}: {value!r} is not one of {', '.join(allowed)}")
    from fashion_tf.data.augment import check_names  # imported late: the data package sits above config

    check_names(config.data.augment, f"{source}: data.augment")
    for key, test, requirement in RANGES:
        value = get_value(config, key)
        if not test(value):
            raise UserError(f"{source}: {key}: {requirement}, got {value!r}")
    for key in ("loss.alpha", "loss.pos_weight"):
        value = get_value(config, key)
        if isinstance(value, str) and value != "inverse_frequency":
            raise UserError(f"{source}: {key}: expected a number, null or \"inverse_frequency\", got {value!r}")
    if config.loss.group_weights and config.model.head != "group_softmax":
        raise UserError(f"{source}: loss.group_weights: only used with model.head group_softmax, not {config.model.head!r}")
    for name, weight in config.loss.group_weights.items():
        if weight < 0:
            raise UserError(f"{source}: loss.group_weights.{name}: must be >= 0, got {weight}")
    unfreeze = config.train.unfreeze
    if unfreeze != "all" and not unfreeze.isdigit():
        raise UserError(f"{source}: train.unfreeze: expected \"all\" or a number of layers, got {unfreeze!r}")
    if config.train.monitor not in MONITORS:
        raise UserError(f"{source}: train.monitor: {config.train.monitor!r} is not one of {', '.join(MONITORS)}")
    check_model_config(config.model, config.data.image_size, source)


def check_model_config(model: ModelConfig, image_size: int, source: str) -> None:
    """The model section against the backbone table (fashion_tf.backbones): name, smallest input, weights."""
    spec = BACKBONES.get(model.backbone)
    if spec is None:
        raise UserError(f"{source}: model.backbone: unknown backbone {model.backbone!r} (known: {', '.join(BACKBONES)})")
    if image_size < spec.min_size:
        raise UserError(f"{source}: data.image_size: {model.backbone} needs at least {spec.min_size} px, got {image_size}")
    if model.weights == "imagenet" and not spec.has_imagenet_weights:
        raise UserError(f"{source}: model.weights: {model.backbone} has no ImageNet weights; use null or a weights file")
    if model.weights == "":
        raise UserError(f"{source}: model.weights: expected \"imagenet\", null or a weights file path, got \"\"")
    if spec.application is None:
        check_small_cnn_shape(model.width, model.stages, model.stage_strides, model.stage_blocks, source)


def check_small_cnn_shape(width: int, stages, strides, blocks, where: str) -> None:
    if width < 1:
        raise UserError(f"{where}: model.width: must be positive, got {width}")
    if not stages or any(int(m) < 1 for m in stages):
        raise UserError(f"{where}: model.stages: positive channel multipliers needed, got {list(stages)}")
    if len(strides) != len(stages) or any(int(s) not in (1, 2) for s in strides):
        raise UserError(f"{where}: model.stage_strides: one stride (1 or 2) per stage needed, got {list(strides)} "
                        f"for {len(stages)} stages")
    if len(blocks) != len(stages) or any(int(b) < 1 for b in blocks):
        raise UserError(f"{where}: model.stage_blocks: one positive block count per stage needed, got {list(blocks)} "
                        f"for {len(stages)} stages")


# ---- public surface ---------------------------------------------------------------------
def get_value(config: Config, key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        node = getattr(node, part)
    return node


def parse_override(text: str) -> tuple[str, Any]:
    """'data.image_size=64' -> ('data.image_size', 64), typed by the field it sets.

    Values are read as JSON (numbers, true/false, null, lists); a string field keeps the raw text
    when the JSON reading does not fit it (output_dir=2024 stays "2024").
    """
    if "=" not in text:
        raise UserError(f"--override {text!r}: expected key=value, e.g. data.image_size=64")
    key, raw = (part.strip() for part in text.split("=", 1))
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return key, raw
    field_type = _field_type(key)
    if value is not None and not isinstance(value, str) and field_type is not None and _admits_str(field_type):
        try:
            _coerce(value, field_type, key, "--override")
        except UserError:
            return key, raw
    return key, value


def apply_overrides(data: dict, overrides: Iterable[str]) -> dict:
    """Set dotted keys in the raw config dict; validation happens in from_dict like for the file."""
    data = json.loads(json.dumps(data))
    for text in overrides:
        key, value = parse_override(text)
        node, parts = data, key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"--override {text!r}: {part!r} is not a section")
        node[parts[-1]] = value
    return data


def _field_type(key: str) -> Any:
    cls: Any = Config
    tp = None
    for part in key.split("."):
        if not dataclasses.is_dataclass(cls):
            return None
        fields = _fields(cls)
        if part not in fields:
            return None
        tp = fields[part][1]
        cls = tp
    return tp


def _admits_str(tp: Any) -> bool:
    if tp is str:
        return True
    return typing.get_origin(tp) in (Union, types.UnionType) and any(_admits_str(a) for a in typing.get_args(tp))


def from_dict(data: dict, source: str = "<config>") -> Config:
    config = _build(Config, data, "", source)
    _validate(config, source)
    return config


def load_config(path: str | Path | None, overrides: Iterable[str] = ()) -> Config:
    """Load a JSON config file (or the defaults when path is None) and apply --override strings."""
    data: dict = {}
    source = "<defaults>"
    if path is not None:
        source = str(path)
        data = read_json(path, "config file")
    overrides = list(overrides)
    if overrides:
        data = apply_overrides(data, overrides)
        source = f"{source} (with --override)"
    return from_dict(data, source)


def to_dict(config: Config) -> dict:
    return dataclasses.asdict(config)


def save_config(config: Config, path: str | Path) -> None:
    """Write the resolved config (every key, defaults included) as JSON, atomically."""
    write_json_atomic(path, to_dict(config))


def add_config_arguments(parser) -> None:
    """--config and --override, the same on every command that reads a config."""
    parser.add_argument("--config", default=None, help="JSON config file (defaults for every key not in it)")
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set one config key, typed by its field, e.g. data.image_size=64 (repeatable)",
    )


def main(argv=None) -> int:
    """Validate a config and print it resolved: `python -m fashion_tf.config --config configs/demo.json`."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m fashion_tf.config",
        description="Validate a config file and print the resolved config (every key, defaults filled in).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    print(json.dumps(to_dict(load_config(args.config, args.override)), indent=2))
    return 0


if __name__ == "__main__":
    import sys

    from fashion_tf.errors import run_cli

    sys.exit(run_cli(main))
