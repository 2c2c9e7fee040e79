"""Hyper-parameter search over the config tree with Optuna: TPE sampling, pruning on per-epoch validation figures,
a study in a database that a rerun continues and that several processes or machines share.

    python -m fashion_tf.sweep --config configs/fashion_products.json --space configs/sweeps/fashion_products.json \\
        --study fp --trials 24 --storage sqlite:///runs/sweeps/fp.db --out runs/sweeps/fp

Space file: a JSON object from config keys (as --override names them) to one distribution each:
    {"train.learning_rate": {"log_uniform": [1e-4, 1e-2]}, "loss.label_smoothing": {"uniform": [0, 0.3]},
     "model.width": {"int": [16, 48], "step": 16}, "data.augment": {"choice": [["flip"], ["crop", "flip"]]}}
Kinds: uniform, log_uniform (float fields), int, log_int (integer fields), choice (any values the field takes);
"step" is optional for uniform and int. The file is checked against the config dataclasses before anything is
written: an unknown key, a value the field does not take or a bad range is one line naming the key.

Each trial is an ordinary training run in OUT/trials/trial-NNNN (its own folder, never reused; config.json there
re-runs it with `python -m fashion_tf.train --config`, or resumes a pruned one with --resume). It is scored on the
validation split by --metric (default cv_micro_f1: micro-F1 after the threshold search, held-out over 5 folds,
as `python -m fashion_tf.threshold_search --cv 5 --mode auto` reports it). Every epoch's --prune-on figure goes
to the pruner, which stops trials that trail the others at the same epoch. Unless --no-baseline, the study's
first trial is the base config itself (when the space contains its values), so the leaderboard shows the recipe.

--trials N is the study's target of finished (complete or pruned) trials, summed over every process and rerun:
a rerun after a kill continues to N, not N more. Processes sharing the study stop starting trials when N are
finished or running; one with nothing to start waits for the running ones, and takes over a trial whose process
died (no heartbeat for --grace seconds): that trial is marked failed and its parameters are tried again in a new
trial (up to --max-retries times). Failed trials do not count towards N.

Storage (--storage): an SQLAlchemy URL (sqlite:///file.db on one machine; postgresql://... or mysql+pymysql://...
for machines sharing a study; drivers installed separately), or a file path for Optuna's journal file (default
OUT/optuna.journal; safe for several processes on one machine or on a shared file system).

Outputs in --out: trials/, leaderboard.md and leaderboard.csv, best_config.json (the best trial's config, output
folder OUT/best: `python -m fashion_tf.train --config OUT/best_config.json`), plots/ (optimisation history,
parameter importances, parallel coordinates, per-epoch values with the pruned trials), sweep.json.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import math
import os
import socket
import sys
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from fashion_tf.config import Config, add_config_arguments, from_dict, load_config, save_config, to_dict
from fashion_tf.errors import UserError, run_cli
from fashion_tf.fileio import write_bytes_atomic, write_json_atomic

METRICS = ("cv_micro_f1", "val_micro_f1", "val_pr_auc", "mAP")
PRUNE_ON = ("val_micro_f1", "val_pr_auc", "val_loss")
PRUNERS = ("median", "hyperband", "none")
KINDS = ("uniform", "log_uniform", "int", "log_int", "choice")
STEP_KINDS = ("uniform", "int")
NOT_SWEPT = ("output_dir",)  # set by the sweep for every trial
PATH_KEYS = ("output_dir", "data.tfrecords")  # may differ between machines sharing a study
STUDY_ATTR = "fashion_tf_sweep"
SURPLUS_ATTR = "surplus"
HEARTBEAT_ATTR = "fashion_tf:heartbeat"
MAX_WAIT_POLL_SECONDS = 30
OUT_RECORD = "sweep.json"


# ---- search space --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Dimension:
    key: str
    kind: str
    low: float = 0.0
    high: float = 0.0
    step: Optional[float] = None
    options: tuple = ()  # choice: the config values, as the config coerces them

    @property
    def encoded(self) -> bool:
        """Optuna's categorical values must be scalars: list or object options are stored as JSON text."""
        return any(isinstance(o, (list, dict)) for o in self.options)

    def optuna_options(self) -> list:
        return [json.dumps(o) for o in self.options] if self.encoded else list(self.options)

    def suggest(self, trial) -> Any:
        """Sample this dimension in an Optuna trial; returns the config value."""
        if self.kind in ("uniform", "log_uniform"):
            return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.kind == "log_uniform")
        if self.kind in ("int", "log_int"):
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1),
                                     log=self.kind == "log_int")
        return self.to_config(trial.suggest_categorical(self.key, self.optuna_options()))

    def to_config(self, optuna_value: Any) -> Any:
        if self.kind == "choice" and self.encoded:
            return json.loads(optuna_value)
        return optuna_value

    def to_optuna(self, config_value: Any) -> Any:
        return json.dumps(config_value) if self.kind == "choice" and self.encoded else config_value

    def contains(self, config_value: Any) -> bool:
        if self.kind == "choice":
            return any(json.dumps(config_value) == json.dumps(o) for o in self.options)
        if isinstance(config_value, bool) or not isinstance(config_value, (int, float)):
            return False
        if not self.low <= config_value <= self.high:
            return False
        return self.step is None or math.isclose((config_value - self.low) / self.step,
                                                 round((config_value - self.low) / self.step), abs_tol=1e-9)

    def describe(self) -> str:
        if self.kind == "choice":
            return f"choice of {len(self.options)}"
        return f"{self.kind} [{self.low:g}, {self.high:g}]" + (f" step {self.step:g}" if self.step else "")


def load_space(path: str | Path, base: dict) -> list[Dimension]:
    """Read and check a space file against the resolved base config dict; raises UserError naming file and key."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: space file not found") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON: {err.msg} at line {err.lineno} column {err.colno}") from None
    if not isinstance(raw, dict) or not raw:
        raise UserError(f"{path}: expected a non-empty object of config key -> distribution, "
                        'e.g. {"train.learning_rate": {"log_uniform": [1e-4, 1e-2]}}')
    return [_dimension(path, key, spec, base) for key, spec in raw.items()]


def _dimension(path: Path, key: str, spec: Any, base: dict) -> Dimension:
    where = f"{path} [{key}]"
    if key in NOT_SWEPT:
        raise UserError(f"{where}: {key} is set by the sweep (OUT/trials/trial-NNNN) and cannot be searched")
    if not isinstance(spec, dict) or not any(kind in spec for kind in KINDS):
        raise UserError(f"{where}: expected an object with one of {', '.join(KINDS)}, got {json.dumps(spec)}")
    kinds = [kind for kind in spec if kind in KINDS]
    unknown = [name for name in spec if name not in KINDS and name != "step"]
    if len(kinds) > 1 or unknown:
        raise UserError(f"{where}: give exactly one of {', '.join(KINDS)} (and an optional step), "
                        f"got {', '.join(map(repr, spec))}")
    kind, values = kinds[0], spec[kinds[0]]
    if kind == "choice":
        if not isinstance(values, list) or not values:
            raise UserError(f"{where}: choice needs a non-empty list of values, got {json.dumps(values)}")
        if "step" in spec:
            raise UserError(f"{where}: step applies to uniform and int only")
        options = tuple(_config_value(base, key, value, where) for value in values)
        if len({json.dumps(o) for o in options}) != len(options):
            raise UserError(f"{where}: choice lists a value twice")
        return Dimension(key, kind, options=options)
    low, high, step = _range(where, kind, values, spec.get("step"))
    for end in (low, high):  # a float end where the field wants integers (or the reverse) fails here
        _config_value(base, key, int(end) if kind in ("int", "log_int") else float(end), where)
    return Dimension(key, kind, low, high, step)


def _range(where: str, kind: str, values: Any, step: Any) -> tuple[float, float, Optional[float]]:
    integral = kind in ("int", "log_int")
    number = int if integral else (int, float)
    if (not isinstance(values, list) or len(values) != 2
            or not all(isinstance(v, number) and not isinstance(v, bool) for v in values)):
        raise UserError(f"{where}: {kind} needs [low, high] as two {'integers' if integral else 'numbers'}, "
                        f"got {json.dumps(values)}")
    low, high = values
    if not all(math.isfinite(v) for v in values):
        raise UserError(f"{where}: {kind} bounds must be finite, got {json.dumps(values)}")
    if low >= high:
        raise UserError(f"{where}: {kind} needs low < high, got [{low}, {high}]")
    if kind.startswith("log_") and low <= 0:
        raise UserError(f"{where}: {kind} needs low > 0 (a log scale), got [{low}, {high}]")
    if step is not None:
        if kind not in STEP_KINDS:
            raise UserError(f"{where}: step applies to uniform and int only, not {kind}")
        if not isinstance(step, number) or isinstance(step, bool) or step <= 0 or step > high - low:
            raise UserError(f"{where}: step must be a positive {'integer' if integral else 'number'} "
                            f"no larger than high - low, got {json.dumps(step)}")
    return low, high, step


def _config_value(base: dict, key: str, value: Any, where: str) -> Any:
    """The value as the config takes it (ints widen to float, etc.), after checking base + {key: value} loads."""
    config = config_from(with_values(base, {key: value}, where), where)
    node = _config_node(config, key)
    if dataclasses.is_dataclass(node):
        raise UserError(f"{where}: names a config section; search one of its keys (e.g. {key}.<key>)")
    return node


def _config_node(config: Config, key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else getattr(node, part)
    return node


def base_values(dimensions: Sequence[Dimension], config: Config) -> tuple[Optional[dict], str]:
    """(Optuna params of the base config, "") when the space contains every base value, else (None, why not)."""
    params = {}
    for dim in dimensions:
        try:
            value = _config_node(config, dim.key)
        except (AttributeError, KeyError):
            return None, f"the base config has no {dim.key}"
        if not dim.contains(value):
            return None, f"its {dim.key} ({json.dumps(value)}) is outside the space ({dim.describe()})"
        params[dim.key] = dim.to_optuna(value)
    return params, ""


def config_params(dimensions: Sequence[Dimension], optuna_params: dict) -> dict:
    """Optuna's stored params of a trial -> {config key: config value}."""
    return {dim.key: dim.to_config(optuna_params[dim.key]) for dim in dimensions if dim.key in optuna_params}


# ---- every call into the rest of fashion_tf: the one place to re-point when config/train/threshold_search change --
def load_base_config(path: Optional[str], overrides: Sequence[str]) -> dict:
    """The resolved base config as a dict (every key), validated like `fashion_tf.train --config`."""
    return to_dict(load_config(path, overrides))


def config_from(data: dict, source: str) -> Config:
    return from_dict(data, source)


def trial_config(base: dict, params: dict, output_dir: str | Path, source: str) -> Config:
    return config_from(with_values(base, {**params, "output_dir": str(output_dir)}, source), source)


def with_values(data: dict, values: dict, source: str) -> dict:
    """A copy of a raw config dict with dotted keys set to JSON values, which from_dict then checks. (Unlike
    --override text, whose value a string field may keep as raw text, these are typed already: 3 stays a number.)"""
    data = json.loads(json.dumps(data))
    for key, value in values.items():
        *parents, last = key.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"{source}: {key}: {part!r} is not a config section")
        node[last] = value
    return data


def check_shards(base: dict) -> None:
    """The shard folder's label map and shard_info.json are there and agree (UserError naming the file if not)."""
    from fashion_tf.shard_folder import ShardFolder

    ShardFolder(base["data"]["tfrecords"]).num_labels


def train_run(cfg: Config, callbacks: Sequence) -> dict:
    """One training run in cfg.output_dir, which train refuses when it holds an earlier run (never reused)."""
    from fashion_tf.train import Options as TrainOptions, train

    return train(TrainOptions(cfg, verbose=0, callbacks=callbacks))


def monitor_sign(monitor: str) -> int:
    """+1 where higher is better; the study maximises, so a loss is reported negated."""
    from fashion_tf.checkpoints import monitor_mode

    return -1 if monitor_mode(monitor) == "min" else 1


def score_run(run_dir: Path, summary: dict, folds: int) -> dict:
    """Validation figures of a finished run: micro-F1 after the threshold search (the stage itself, `--cv K --mode
    auto`, which writes the run's thresholds.json: the held-out mean of 0.5, one global or per-label thresholds,
    whichever is best), Keras' epoch figures, and mAP."""
    import numpy as np

    from fashion_tf import threshold_search
    from fashion_tf.evaluate.metrics import average_precisions
    from fashion_tf.run_folder import RunFolder, read_predictions

    found = threshold_search.search(threshold_search.Options(run_dir=run_dir, cv=folds, mode="auto", plots=False))
    setting = {"0.5": "at_0.5", "global": "best_global", "per_label": "per_label"}[found["auto_choice"]]
    _, scores, positive = read_predictions(RunFolder(run_dir))
    precision = average_precisions(scores, positive)
    return {
        "cv_micro_f1": float(found["f1"][setting]["mean"]),
        "cv_thresholds": setting,
        "val_micro_f1": _finite_or_none(summary.get("val_micro_f1")),
        "val_pr_auc": _finite_or_none(summary.get("val_pr_auc")),
        "mAP": _finite_or_none(float(np.nanmean(precision)) if np.isfinite(precision).any() else None),
    }


def save_best_config(cfg: Config, path: Path) -> None:
    save_config(cfg, path)


def save_png(figure, path: Path) -> Path:
    from fashion_tf.plots import save_figure

    return save_figure(figure, path)


def _finite_or_none(value: Any) -> Optional[float]:
    return float(value) if value is not None and math.isfinite(float(value)) else None


# ---- storage -------------------------------------------------------------------------------------------------
def open_storage(spec: str, heartbeat: int, grace: Optional[int], max_retries: int):
    """An Optuna storage with a heartbeat: a trial whose process dies is failed after `grace` seconds without a beat,
    and its parameters are queued again (RetryHeartbeatStaleTrialCallback)."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retries)
        if "://" not in spec:
            return _journal_storage(Path(spec), heartbeat, grace, retry)
        if spec.startswith("sqlite:///"):
            Path(spec[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        engine = {"connect_args": {"timeout": 60}} if spec.startswith("sqlite") else None  # wait out other writers
        try:
            return optuna.storages.RDBStorage(spec, engine_kwargs=engine, heartbeat_interval=heartbeat,
                                              grace_period=grace, heartbeat_stale_trial_callback=retry)
        except ImportError:
            raise UserError(f"--storage {spec}: its database driver is not installed "
                            "(e.g. pip install psycopg2-binary for postgresql, pymysql for mysql+pymysql)") from None
        except Exception as err:  # noqa: BLE001 - SQLAlchemy's URL and connection errors are many classes
            raise UserError(f"--storage {spec}: cannot open ({type(err).__name__}: {_one_line(err)})") from None


def _journal_storage(path: Path, heartbeat: int, grace: Optional[int], retry):
    from optuna.storages._heartbeat import BaseHeartbeat  # Optuna 5 gives only RDBStorage a heartbeat
    from optuna.storages.journal import JournalFileBackend, JournalStorage
    from optuna.trial import TrialState

    class JournalStorageWithHeartbeat(JournalStorage, BaseHeartbeat):
        """Journal file storage whose heartbeat is a trial system attribute (wall-clock seconds): Optuna's
        optimize() beats it from a thread, and fail_stale_trials() fails a RUNNING trial with no beat for `grace`."""

        def record_heartbeat(self, trial_id: int) -> None:
            self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())

        def _get_stale_trial_ids(self, study_id: int) -> list[int]:
            now = time.time()
            stale = []
            for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
                beat = trial.system_attrs.get(HEARTBEAT_ATTR)
                if beat is None and trial.datetime_start is not None:
                    beat = trial.datetime_start.timestamp()
                if beat is not None and now - beat > (grace or 2 * heartbeat):
                    stale.append(trial._trial_id)
            return stale

        def get_heartbeat_interval(self) -> int:
            return heartbeat

        def get_heartbeat_stale_trial_callback(self):
            return retry

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return JournalStorageWithHeartbeat(JournalFileBackend(str(path)))
    except Exception as err:  # noqa: BLE001 - a corrupt or foreign file
        raise UserError(f"--storage {path}: not a readable Optuna journal ({type(err).__name__}: {_one_line(err)})") from None


# ---- options -------------------------------------------------------------------------------------------------
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


# ---- the study -------------------------------------------------------------------------------------------------
def open_study(setup: Setup):
    """Create or load the study; the process that creates it records what the others must agree on and queues the
    baseline trial."""
    import optuna

    options = setup.options
    storage = open_storage(options.storage_spec, options.heartbeat, options.grace, options.max_retries)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(seed=options.seed, n_startup_trials=options.startup_trials)
    pruner = make_pruner(options, setup.base["train"]["epochs"])
    try:
        study = optuna.create_study(study_name=options.study, storage=storage, sampler=sampler, pruner=pruner,
                                    direction="maximize")
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=options.study, storage=storage, sampler=sampler, pruner=pruner)
        check_same_study(study, setup)
        return study
    study.set_user_attr(STUDY_ATTR, setup.study_record())
    if options.baseline:
        params, why_not = base_values(setup.dimensions, config_from(setup.base, "the base config"))
        if params is None:
            print(f"note: no baseline trial: {why_not}", flush=True)
        else:
            study.enqueue_trial(params, user_attrs={"baseline": True})
    return study


def make_pruner(options: Options, epochs: int):
    import optuna

    if options.pruner == "none":
        return optuna.pruners.NopPruner()
    if options.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, options.prune_warmup_epochs),
                                              max_resource=max(epochs, 1))
    return optuna.pruners.MedianPruner(n_startup_trials=options.prune_startup_trials,
                                       n_warmup_steps=options.prune_warmup_epochs)


def check_same_study(study, setup: Setup) -> None:
    from optuna.study import StudyDirection

    where = f"study {setup.options.study!r} in {setup.options.storage_spec}"
    if study.direction != StudyDirection.MAXIMIZE or len(study.directions) != 1:
        raise UserError(f"{where}: not a fashion_tf.sweep study (it does not maximise one value); use another --study")
    recorded = study.user_attrs.get(STUDY_ATTR)
    if recorded is None:
        return  # its creator is about to record it
    ours = setup.study_record()
    for part, flag in (("metric", "--metric"), ("prune_on", "--prune-on"), ("space", "--space"),
                       ("base_config", "--config/--override")):
        if recorded.get(part) != ours[part]:
            raise UserError(f"{where} was started with another {part.replace('_', ' ')} "
                            f"({_first_difference(recorded.get(part), ours[part])}); use the same {flag} or "
                            "another --study")


def _first_difference(theirs: Any, ours: Any, prefix: str = "") -> str:
    if isinstance(theirs, dict) and isinstance(ours, dict):
        for key in sorted(set(theirs) | set(ours)):
            if theirs.get(key) != ours.get(key):
                return _first_difference(theirs.get(key), ours.get(key), f"{prefix}{key}.")
    return f"{prefix.rstrip('.') or 'value'}: {json.dumps(theirs)} there, {json.dumps(ours)} here"


def check_trial_folders(study, out: Path) -> None:
    """A trial folder beyond the study's trials means --out belonged to another storage; its runs must not be reused."""
    known = len(study.get_trials(deepcopy=False))
    for folder in sorted((out / "trials").glob("trial-*")):
        number = folder.name.removeprefix("trial-")
        if number.isdigit() and int(number) >= known:
            raise UserError(f"{folder}: study {study.study_name!r} has no trial {int(number)} (was the storage "
                            "replaced?); use another --out")


def state_counts(study) -> dict[str, int]:
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        if not trial.user_attrs.get(SURPLUS_ATTR):
            counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    return counts


def finished(counts: dict[str, int]) -> int:
    return counts.get("COMPLETE", 0) + counts.get("PRUNED", 0)


# ---- one trial ---------------------------------------------------------------------------------------------------
class SurplusTrial(Exception):
    """Another process claimed the last of --trials at the same moment; this trial stops before it starts."""


class TrialRunner:
    """The Optuna objective: one training run per trial, plus the per-trial progress line (an optimize callback)."""

    def __init__(self, setup: Setup, study):
        self.setup = setup
        self.study = study
        self.host = socket.gethostname()
        self.ran: list[dict] = []  # this process's trials: number, state, seconds, cpu_seconds
        self.consecutive_failures = 0
        self.last_error = ""

    # objective
    def __call__(self, trial) -> float:
        import optuna

        if self._is_surplus(trial):
            self._give_back(trial)
            raise SurplusTrial(f"trial {trial.number}: {self.setup.options.trials} trials were already claimed")
        options, out = self.setup.options, self.setup.out
        run_dir = out / "trials" / f"trial-{trial.number:04d}"
        for name, value in (("run_dir", str(run_dir)), ("host", self.host), ("pid", os.getpid())):
            trial.set_user_attr(name, value)
        started, cpu_started = time.perf_counter(), time.process_time()
        reporter = None
        try:
            params = {dim.key: dim.suggest(trial) for dim in self.setup.dimensions}
            cfg = trial_config(self.setup.base, params, run_dir, f"trial {trial.number} ({_params_text(params)})")
            trial.set_user_attr("epochs", cfg.train.epochs)
            reporter = pruning_reporter(trial, self.setup.prune_on, cfg.train.epochs)
            summary = train_run(cfg, [reporter])
            scores = score_run(run_dir, summary, options.cv_folds)
        except optuna.TrialPruned:
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("error", "interrupted")
            self.study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})  # nothing done is lost
            raise
        except Exception as err:
            trial.set_user_attr("error", f"{type(err).__name__}: {_one_line(err)}")
            if not isinstance(err, UserError):  # a crash, not a bad setting: keep its traceback in the log
                traceback.print_exc()
            raise
        finally:
            trial.set_user_attr("seconds", round(time.perf_counter() - started, 1))
            trial.set_user_attr("cpu_seconds", round(time.process_time() - cpu_started, 1))
            trial.set_user_attr("epochs_run", reporter.epochs_run if reporter else 0)
        trial.set_user_attr("metrics", scores)
        value = scores[options.metric]
        if value is None:
            raise UserError(f"trial {trial.number}: {options.metric} could not be computed")
        return value

    def _is_surplus(self, trial) -> bool:
        from optuna.trial import TrialState

        claimed = [t for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                                           TrialState.RUNNING))
                   if t.number < trial.number and not t.user_attrs.get(SURPLUS_ATTR)]
        return len(claimed) >= self.setup.options.trials

    def _give_back(self, trial) -> None:
        """A queued trial (baseline or retry) popped as surplus is queued again, for a later, larger --trials."""
        trial.set_user_attr(SURPLUS_ATTR, True)
        frozen = next(t for t in self.study.get_trials(deepcopy=False) if t.number == trial.number)
        queued = frozen.params or frozen.system_attrs.get("fixed_params")
        if queued:
            self.study.enqueue_trial(queued, user_attrs={k: v for k, v in frozen.user_attrs.items() if k != SURPLUS_ATTR})

    # optimize callback
    def after_trial(self, study, frozen) -> None:
        if frozen.user_attrs.get(SURPLUS_ATTR):
            return
        attrs = frozen.user_attrs
        self.ran.append({"number": frozen.number, "state": frozen.state.name,
                         "seconds": attrs.get("seconds", 0.0), "cpu_seconds": attrs.get("cpu_seconds", 0.0)})
        if frozen.state.name == "FAIL":
            self.consecutive_failures += 1
            self.last_error = attrs.get("error", "unknown error")
        else:
            self.consecutive_failures = 0
        print(progress_line(study, frozen, self.setup), flush=True)
        write_outputs(study, self.setup, plots=False)


def pruning_reporter(trial, monitor: str, epochs: int):
    """A Keras callback: each epoch's `monitor` goes to the trial; when the pruner says so, it raises TrialPruned
    (after train's own callbacks wrote that epoch's history row and checkpoint, so the run can be resumed)."""
    import keras
    import optuna

    sign = monitor_sign(monitor)

    class ReportToPruner(keras.callbacks.Callback):
        epochs_run = 0

        def on_epoch_end(self, epoch, logs=None):
            self.epochs_run = epoch + 1
            value = (logs or {}).get(monitor)
            line = f"  trial {trial.number} epoch {epoch + 1}/{epochs}: {monitor} {_fmt(value)}"
            if value is None or not math.isfinite(float(value)):
                print(line, flush=True)
                return
            trial.report(sign * float(value), step=epoch + 1)
            if epoch + 1 < epochs and trial.should_prune():  # after the last epoch there is nothing left to save
                print(f"{line} -> pruned", flush=True)
                trial.set_user_attr("pruned_at", f"{monitor} {float(value):.4f}")
                raise optuna.TrialPruned(f"after epoch {epoch + 1}: {monitor} {float(value):.4f}")
            print(line, flush=True)

    return ReportToPruner()


# ---- reports ------------------------------------------------------------------------------------------------------
def progress_line(study, frozen, setup: Setup) -> str:
    attrs = frozen.user_attrs
    metric = setup.options.metric
    state = frozen.state.name
    if state == "COMPLETE":
        what = f"complete: {metric} {frozen.value:.4f}"
    elif state == "PRUNED":
        what = f"pruned after epoch {attrs.get('epochs_run')}/{attrs.get('epochs')} ({attrs.get('pruned_at', '')})"
    else:
        what = f"failed: {attrs.get('error', 'unknown error')}"
    counts = state_counts(study)
    best = best_trial(study)
    best_text = f"best {best.value:.4f} (trial {best.number})" if best else "no complete trial yet"
    return (f"[sweep {study.study_name}] trial {frozen.number} {what} | {attrs.get('epochs_run', 0)} epochs, "
            f"{attrs.get('seconds', 0):.0f} s, {attrs.get('cpu_seconds', 0):.0f} CPU-s | {best_text} | "
            f"{finished(counts)}/{setup.options.trials} finished, {counts.get('RUNNING', 0)} running, "
            f"{counts.get('FAIL', 0)} failed")


def best_trial(study):
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return max(complete, key=lambda t: (t.value, -t.number), default=None)


def leaderboard_rows(study, setup: Setup) -> list[dict]:
    """Finished and failed trials: complete ones ranked by score, then pruned, then failed."""
    order = {"COMPLETE": 0, "PRUNED": 1, "FAIL": 2}
    trials = [t for t in study.get_trials(deepcopy=False)
              if t.state.name in order and not t.user_attrs.get(SURPLUS_ATTR)]
    trials.sort(key=lambda t: (order[t.state.name], -(t.value if t.value is not None else 0), t.number))
    rows = []
    for rank, trial in enumerate(trials, start=1):
        attrs, metrics = trial.user_attrs, trial.user_attrs.get("metrics", {})
        row = {
            "rank": rank if trial.state.name == "COMPLETE" else "",
            "trial": trial.number,
            "state": trial.state.name.lower(),
            "score": trial.value if trial.state.name == "COMPLETE" else None,
            **{name: metrics.get(name) for name in METRICS},
            "cv_thresholds": metrics.get("cv_thresholds", ""),
            "epochs_run": attrs.get("epochs_run"),
            "epochs": attrs.get("epochs"),
            "seconds": attrs.get("seconds"),
            "cpu_seconds": attrs.get("cpu_seconds"),
            **{dim.key: value for dim, value in zip(setup.dimensions, _trial_values(setup.dimensions, trial))},
            "note": _note(trial),
            "host": attrs.get("host", ""),
            "run_dir": attrs.get("run_dir", ""),
        }
        rows.append(row)
    return rows


def _trial_values(dimensions: Sequence[Dimension], trial) -> list:
    params = config_params(dimensions, trial.params)
    return [params.get(dim.key) for dim in dimensions]


def _note(trial) -> str:
    attrs, notes = trial.user_attrs, []
    if attrs.get("baseline"):
        notes.append("baseline (the base config)")
    retried = trial.system_attrs.get("failed_trial", attrs.get("retry_of"))
    if retried is not None:
        notes.append(f"retry of trial {retried}")
    if trial.state.name == "PRUNED":
        notes.append(f"pruned after epoch {attrs.get('epochs_run')} ({attrs.get('pruned_at', '')})")
    if trial.state.name == "FAIL":
        notes.append(attrs.get("error") or "process died (no heartbeat)")
    return "; ".join(notes)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e-2 or abs(value) >= 1e4 else f"{value:.4f}".rstrip("0").rstrip(".")
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def leaderboard_markdown(rows: list[dict], study, setup: Setup) -> str:
    counts = state_counts(study)
    options = setup.options
    lines = [f"# Sweep `{study.study_name}`: {options.metric} (higher is better)", "",
             f"{finished(counts)} of {options.trials} trials finished ({counts.get('COMPLETE', 0)} complete, "
             f"{counts.get('PRUNED', 0)} pruned on {setup.prune_on}), {counts.get('FAIL', 0)} failed, "
             f"{counts.get('RUNNING', 0)} running. Base config: `{options.config or 'defaults'}`"
             + "".join(f" `--override {o}`" for o in options.overrides) + f"; space: `{options.space}`.", ""]
    columns = ["rank", "trial", "state", "score", *METRICS, "cv_thresholds", "epochs_run", "seconds", "cpu_seconds",
               *(d.key for d in setup.dimensions), "note", "run_dir"]
    lines.append("| " + " | ".join(columns) + " |")
    lines.append("|" + "---|" * len(columns))
    for row in rows:
        cells = [_cell(row[c]).replace("|", "\\|") for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Plots: [history](plots/optimization_history.png), [importances](plots/param_importances.png), "
                  "[parallel coordinates](plots/parallel_coordinate.png), "
                  "[per-epoch values](plots/intermediate_values.png).", ""]
    return "\n".join(lines)


def write_outputs(study, setup: Setup, plots: bool = True) -> dict:
    """Leaderboard (md, csv), best config and (with plots) the PNGs; returns what was written."""
    out = setup.out
    rows = leaderboard_rows(study, setup)
    written = {"leaderboard": out / "leaderboard.md"}
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in r.items()} for r in rows)
    write_bytes_atomic(out / "leaderboard.csv", buffer.getvalue().encode("utf-8"))
    write_bytes_atomic(out / "leaderboard.md", leaderboard_markdown(rows, study, setup).encode("utf-8"))
    best = best_trial(study)
    if best is not None:
        best_cfg = trial_config(setup.base, config_params(setup.dimensions, best.params), out / "best",
                                f"trial {best.number}")
        save_best_config(best_cfg, out / "best_config.json")
        written["best_config"] = out / "best_config.json"
    if plots:
        written["plots"] = write_plots(study, out / "plots", setup.prune_on)
    return written


def write_plots(study, folder: Path, prune_on: str) -> list[Path]:
    """Optuna's matplotlib views; one that cannot be drawn yet (e.g. importances before two complete trials) is
    skipped with a note."""
    import matplotlib

    matplotlib.use("Agg")
    from optuna.visualization import matplotlib as views

    written = []
    for name, draw in (("optimization_history", views.plot_optimization_history),
                       ("param_importances", views.plot_param_importances),
                       ("parallel_coordinate", views.plot_parallel_coordinate),
                       ("intermediate_values", views.plot_intermediate_values)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # experimental-API and few-trials notes, not problems
                axes = draw(study)
            if name == "intermediate_values":
                axes.set_xlabel("epoch")
                axes.set_ylabel(prune_on + (" (negated)" if prune_on.endswith("loss") else ""))
            figure = getattr(axes, "figure", None) or axes.flat[0].figure
            figure.set_size_inches(max(figure.get_size_inches()[0], 9), max(figure.get_size_inches()[1], 5))
            written.append(save_png(figure, folder / f"{name}.png"))
        except Exception as err:  # noqa: BLE001 - a plot that cannot be drawn yet must not end the sweep
            print(f"note: no {name} plot yet ({type(err).__name__}: {_one_line(err)})", flush=True)
    return written


def summary_text(study, setup: Setup, runner: TrialRunner, seconds: float, written: dict, stopped: str) -> str:
    counts = state_counts(study)
    options = setup.options
    ran = runner.ran
    cpu = sum(r["cpu_seconds"] or 0 for r in ran)
    best = best_trial(study)
    baseline = next((t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("baseline")
                     and t.state.name == "COMPLETE"), None)
    parts = [
        f"Sweep {study.study_name!r} ({options.metric}, higher is better): {finished(counts)} of {options.trials} "
        f"trials finished ({counts.get('COMPLETE', 0)} complete, {counts.get('PRUNED', 0)} pruned), "
        f"{counts.get('FAIL', 0)} failed, {counts.get('RUNNING', 0)} running elsewhere.",
        f"This process ran {len(ran)} trial(s) ({sum(r['state'] == 'FAIL' for r in ran)} failed) in {seconds:.0f} s "
        f"({cpu:.0f} CPU-s in trials" + (f", {3600 * len(ran) / seconds:.1f} trials/h)." if seconds > 0 else ")."),
    ]
    if best is not None:
        gain = ""
        if baseline is not None and baseline.number != best.number:
            gain = f", {best.value - baseline.value:+.4f} over the baseline trial {baseline.number} ({baseline.value:.4f})"
        elif baseline is not None:
            gain = " (the baseline: the base config)"
        parts.append(f"Best: trial {best.number}, {options.metric} {best.value:.4f}{gain}: "
                     f"{_params_text(config_params(setup.dimensions, best.params))}.")
        parts.append(f"Best config: {written.get('best_config')} "
                     f"(python -m fashion_tf.train --config {written.get('best_config')}).")
    parts.append(f"Leaderboard: {written['leaderboard']} and .csv; plots: {len(written.get('plots', []))} in "
                 f"{setup.out / 'plots'}; storage: {options.storage_spec}.")
    if stopped:
        parts.append(f"Stopped early: {stopped}")
    return " ".join(parts)


def _params_text(params: dict) -> str:
    return ", ".join(f"{key}={_cell(value)}" for key, value in params.items())


def _fmt(value: Any) -> str:
    return "n/a" if value is None or not math.isfinite(float(value)) else f"{float(value):.4f}"


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


# ---- the loop -------------------------------------------------------------------------------------------------
def run(options: Options) -> int:
    """Run trials until the study has options.trials finished ones; 0 when it has, 1 when this process gave up."""
    setup = prepare(options)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the sweep prints its own line per trial
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    started = time.perf_counter()
    study = open_study(setup)
    check_trial_folders(study, setup.out)
    write_json_atomic(setup.out / OUT_RECORD, {"study": options.study, "storage": options.storage_spec,
                                               "space": options.space, "config": options.config,
                                               "overrides": list(options.overrides)})
    runner = TrialRunner(setup, study)
    counts = state_counts(study)
    print(f"[sweep {options.study}] {len(setup.dimensions)} parameters ({', '.join(d.key for d in setup.dimensions)}); "
          f"{finished(counts)} of {options.trials} trials finished so far, scored by {options.metric}, pruned on "
          f"{setup.prune_on} ({options.pruner}); storage {options.storage_spec}; trials in {setup.out / 'trials'}",
          flush=True)
    stopped = run_trials(study, runner, setup)
    written = write_outputs(study, setup)
    print(summary_text(study, setup, runner, time.perf_counter() - started, written, stopped), flush=True)
    if stopped or best_trial(study) is None:
        return 1
    return 0


def run_trials(study, runner: TrialRunner, setup: Setup) -> str:
    """Start trials until the study has enough finished ones; '' or why this process stopped early."""
    import optuna

    options = setup.options
    poll = min(options.heartbeat, MAX_WAIT_POLL_SECONDS)
    waiting_said = False
    while True:
        optuna.storages.fail_stale_trials(study)  # a dead process's trial: failed, its parameters queued again
        counts = state_counts(study)
        if finished(counts) >= options.trials:
            return ""
        if runner.consecutive_failures >= options.max_failures:
            return f"the last {runner.consecutive_failures} trials of this process failed (last: {runner.last_error})"
        if finished(counts) + counts.get("RUNNING", 0) >= options.trials:
            if not waiting_said:
                print(f"[sweep {options.study}] waiting for {counts.get('RUNNING', 0)} running trial(s) of other "
                      f"processes (one without a heartbeat for {options.grace or 2 * options.heartbeat} s is taken "
                      "over)", flush=True)
                waiting_said = True
            time.sleep(poll)
            continue
        waiting_said = False
        try:
            study.optimize(runner, n_trials=1, catch=(Exception,), callbacks=[runner.after_trial], gc_after_trial=True)
        except (optuna.exceptions.UpdateFinishedTrialError, ValueError) as err:
            if not isinstance(err, optuna.exceptions.UpdateFinishedTrialError) and "Cannot tell" not in str(err):
                raise
            # another process failed this trial as dead while it ran (its heartbeats came late): it was retried
            print(f"[sweep {options.study}] note: another process declared this process's trial dead "
                  f"({_one_line(err)}); if this repeats, raise --grace", flush=True)


# ---- CLI --------------------------------------------------------------------------------------------------------
class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except None ones: their help says what happens when the option is absent."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fashion_tf.sweep",
        description="Hyper-parameter search with Optuna (TPE, pruning) over the config keys of a space file. Each "
                    "trial is a training run in OUT/trials/; the study lives in --storage, so rerunning the command "
                    "continues it and several processes or machines can share it.",
        formatter_class=_HelpFormatter,
    )
    add_config_arguments(parser)
    parser.add_argument("--space", required=True,
                        help='JSON file: config key -> {"uniform"|"log_uniform"|"int"|"log_int": [low, high]} or '
                             '{"choice": [values]}')
    parser.add_argument("--study", default="sweep", help="study name in the storage")
    parser.add_argument("--trials", type=int, default=20,
                        help="target number of finished (complete or pruned) trials in the study, over all processes "
                             "and reruns: a rerun continues to N, not N more; failed trials do not count")
    parser.add_argument("--out", default=None, help="output folder (default: runs/sweeps/<study>)")
    parser.add_argument("--storage", default=None,
                        help="SQLAlchemy URL (sqlite:///f.db, postgresql://..., mysql+pymysql://...) or a journal "
                             "file path (default: OUT/optuna.journal)")
    parser.add_argument("--metric", choices=METRICS, default="cv_micro_f1",
                        help="trial score on the validation split: micro-F1 after the threshold search (5-fold "
                             "held-out, as threshold_search --cv 5 --mode auto), micro-F1 at 0.5 or PR-AUC of the best "
                             "epoch, or mAP")
    parser.add_argument("--prune-on", choices=PRUNE_ON, default=None,
                        help="per-epoch figure the pruner compares (default: the config's train.monitor)")
    parser.add_argument("--pruner", choices=PRUNERS, default="median", help="Optuna pruner")
    parser.add_argument("--prune-startup-trials", type=int, default=3,
                        help="median pruner: trials that must complete before any is pruned")
    parser.add_argument("--prune-warmup-epochs", type=int, default=2,
                        help="no trial is pruned before this many of its epochs have run")
    parser.add_argument("--startup-trials", type=int, default=10, help="TPE: random trials before it models the results")
    parser.add_argument("--seed", type=int, default=None,
                        help="sampler seed (reproducible for one process; give each process sharing a study its own)")
    parser.add_argument("--no-baseline", dest="baseline", action="store_false",
                        help="do not make the base config itself the study's first trial")
    parser.add_argument("--cv", type=int, default=5, help="folds of the threshold search behind cv_micro_f1")
    parser.add_argument("--heartbeat", type=int, default=60, help="seconds between a running trial's heartbeats")
    parser.add_argument("--grace", type=int, default=None,
                        help="seconds without a heartbeat after which a running trial counts as dead (default: "
                             "2 x --heartbeat)")
    parser.add_argument("--max-retries", type=int, default=2, help="times a dead trial's parameters are tried again")
    parser.add_argument("--max-failures", type=int, default=3,
                        help="stop this process after this many failed trials in a row")
    return parser


def options_from_args(args: argparse.Namespace) -> Options:
    return Options(space=args.space, config=args.config, overrides=tuple(args.override), study=args.study,
                   trials=args.trials, out=args.out, storage=args.storage, metric=args.metric, prune_on=args.prune_on,
                   pruner=args.pruner, prune_startup_trials=args.prune_startup_trials,
                   prune_warmup_epochs=args.prune_warmup_epochs, startup_trials=args.startup_trials, seed=args.seed,
                   baseline=args.baseline, cv_folds=args.cv, heartbeat=args.heartbeat, grace=args.grace,
                   max_retries=args.max_retries, max_failures=args.max_failures)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run(options_from_args(build_parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(run_cli(main))
