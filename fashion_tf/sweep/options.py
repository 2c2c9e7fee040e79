"""Options (what the command line sets) and Setup (the options checked, with the base config and the space)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from fashion_tf.errors import UserError
from fashion_tf.sweep.space import Dimension, load_space
from fashion_tf.sweep.stages import check_shards, load_base_config


METRICS = ("cv_micro_f1", "val_micro_f1", "val_pr_auc", "mAP")
PRUNE_ON = ("val_micro_f1", "val_pr_auc", "val_loss")
PRUNERS = ("median", "hyperband", "none")
PATH_KEYS = ("output_dir", "data.tfrecords")  # may differ between machines sharing a study
OUT_RECORD = "sweep.json"


@dataclass(frozen=True)
class Options:
    space: str
    config: Optional[str] = None
    overrides: tuple[str, ...] = ()
    study: str = "sweep"
    trials: int = 20
    out: Optional[str] = None  # None: runs/sweeps/<study>
    storage: Optional[str] = None  # None: OUT/optuna.journal
    metric: str = "cv_micro_f1"
    prune_on: Optional[str] = None  # None: the config's train.monitor (val_micro_f1 when it is not in PRUNE_ON)
    pruner: str = "median"
    prune_startup_trials: int = 3
    prune_warmup_epochs: int = 2
    startup_trials: int = 10
    seed: Optional[int] = None
    baseline: bool = True
    cv_folds: int = 5
    heartbeat: int = 60
    grace: Optional[int] = None
    max_retries: int = 2
    max_failures: int = 3

    @property
    def out_dir(self) -> Path:
        return Path(self.out or f"runs/sweeps/{self.study}")

    @property
    def storage_spec(self) -> str:
        return self.storage or str(self.out_dir / "optuna.journal")


@dataclass
class Setup:
    """Everything checked before the study is opened."""

    options: Options
    base: dict
    dimensions: list[Dimension]
    prune_on: str

    @property
    def out(self) -> Path:
        return self.options.out_dir

    def study_record(self) -> dict:
        """What every process of a study must agree on (paths excepted: they may differ between machines)."""
        base = json.loads(json.dumps(self.base))
        for key in PATH_KEYS:
            *parents, last = key.split(".")
            node = base
            for part in parents:
                node = node[part]
            node.pop(last, None)
        space = {d.key: {d.kind: list(d.options) if d.kind == "choice" else [d.low, d.high], "step": d.step}
                 for d in self.dimensions}
        return {"metric": self.options.metric, "prune_on": self.prune_on, "space": space, "base_config": base}


def check_options(options: Options) -> None:
    checks = [
        (options.trials >= 1, f"--trials must be at least 1, got {options.trials}"),
        (options.metric in METRICS, f"--metric {options.metric!r}: choose from {', '.join(METRICS)}"),
        (options.prune_on in (None, *PRUNE_ON), f"--prune-on {options.prune_on!r}: choose from {', '.join(PRUNE_ON)}"),
        (options.pruner in PRUNERS, f"--pruner {options.pruner!r}: choose from {', '.join(PRUNERS)}"),
        (options.prune_startup_trials >= 0, "--prune-startup-trials must be >= 0"),
        (options.prune_warmup_epochs >= 0, "--prune-warmup-epochs must be >= 0"),
        (options.startup_trials >= 0, "--startup-trials must be >= 0"),
        (options.cv_folds >= 2, f"--cv must be at least 2, got {options.cv_folds}"),
        (options.heartbeat >= 1, f"--heartbeat must be at least 1 second, got {options.heartbeat}"),
        (options.grace is None or options.grace > options.heartbeat,
         f"--grace must be longer than --heartbeat ({options.heartbeat} s), got {options.grace}"),
        (options.max_retries >= 0, "--max-retries must be >= 0"),
        (options.max_failures >= 1, "--max-failures must be at least 1"),
        (bool(options.study.strip()), "--study must not be empty"),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)


def prepare(options: Options) -> Setup:
    """Check options, base config, space, shards and --out; changes nothing on disk."""
    check_options(options)
    base = load_base_config(options.config, options.overrides)
    dimensions = load_space(options.space, base)
    check_shards(base)
    check_out_folder(options.out_dir, options.study)
    monitor = base["train"]["monitor"]
    prune_on = options.prune_on or (monitor if monitor in PRUNE_ON else "val_micro_f1")
    return Setup(options, base, dimensions, prune_on)


def check_out_folder(out: Path, study: str) -> None:
    record = out / OUT_RECORD
    if record.is_file():
        try:
            earlier = json.loads(record.read_text(encoding="utf-8")).get("study")
        except (json.JSONDecodeError, AttributeError):
            raise UserError(f"{record}: unreadable; remove it or use another --out") from None
        if earlier != study:
            raise UserError(f"{record}: --out holds study {earlier!r}, not {study!r}; use another --out")
