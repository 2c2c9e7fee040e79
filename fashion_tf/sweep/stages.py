"""Every call from the sweep into the rest of fashion_tf (config, shard folder, train, threshold search,
evaluate metrics): the one place to re-point when those change."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Optional, Sequence

from fashion_tf.config import Config, from_dict, load_config, save_config, to_dict
from fashion_tf.errors import UserError


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
