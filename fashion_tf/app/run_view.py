"""What "Look inside the run" shows, read from the run's own files, without Streamlit.

metrics.json (fashion_tf.evaluate) gives the figures and the per-label F1; history.csv (fashion_tf.train) the
training curves; val_predictions.npz (train) with the run's thresholds the worst mistakes of the validation
split, ranked by evaluate's own error margin. Nothing the run already wrote is computed again.
"""

from __future__ import annotations

import csv
import json
import math
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from fashion_tf.errors import UserError
from fashion_tf.evaluate.scoring import error_margins
from fashion_tf.run_folder import Run, RunFolder, read_predictions
from fashion_tf.shard_folder import ShardFolder

HEADLINE = (("micro F1", "micro_f1"), ("macro F1", "macro_f1"), ("samples F1", "samples_f1"), ("mAP", "mAP"))


def history_file(run_dir: Path) -> Path:
    return RunFolder(run_dir).history


def shard_folder(run: Run, data_dir: Path | None = None) -> Path:
    """The validation shards: --data when given, else the folder named in the run's config (data.tfrecords)."""
    return Path(data_dir) if data_dir is not None else Path(run.config.data.tfrecords)


def evaluate_command(run: Run, data_dir: Path | None = None) -> str:
    """The command that writes metrics.json for this run."""
    return shlex.join(["python", "-m", "fashion_tf.evaluate", "--run-dir", str(run.run_dir),
                       "--data", str(shard_folder(run, data_dir)), "--split", run.config.data.val_split])


# ---------------------------------------------------------------------------- metrics.json
def read_metrics(run_dir: Path) -> dict | None:
    """metrics.json, or None when evaluate has not written it yet."""
    path = RunFolder(run_dir).metrics_json
    if not path.is_file():
        return None
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: not readable JSON ({type(err).__name__})") from None
    if not isinstance(metrics, dict):
        raise UserError(f"{path}: not a JSON object")
    return metrics


def headline_figures(metrics: dict) -> list[tuple[str, float | None]]:
    return [(title, metrics.get(key)) for title, key in HEADLINE]


def top1_rows(metrics: dict) -> list[dict]:
    """Top-1 accuracy of each single-choice group, as evaluate measured it."""
    return [{"group": group, "top-1 accuracy": row.get("accuracy"), "images": row.get("images")}
            for group, row in (metrics.get("top1_accuracy") or {}).items()]


def per_label_f1(metrics: dict) -> list[dict]:
    """metrics.json's label rows, worst F1 first (ties: more support first)."""
    rows = [{"label": row["name"], "group": row["group"], "F1": row["f1"], "precision": row["precision"],
             "recall": row["recall"], "support": row["support"], "threshold": row["threshold"],
             "AP": row.get("average_precision")}
            for row in metrics.get("labels", [])]
    return sorted(rows, key=lambda row: (row["F1"], -row["support"]))


# ---------------------------------------------------------------------------- history.csv
def read_history(run_dir: Path) -> dict[str, list[float]] | None:
    """{column: values per epoch} of history.csv, or None when there is none."""
    path = history_file(run_dir)
    if not path.is_file():
        return None
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return None
    columns: dict[str, list[float]] = {}
    for name in rows[0]:
        columns[name] = [_number(row.get(name)) for row in rows]
    return columns


def _number(text: str | None) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def curve_groups(history: dict[str, list[float]]) -> list[tuple[str, list[str]]]:
    """(title, columns) per chart: each training metric beside its val_ twin, in the file's order."""
    groups = []
    for name in history:
        if name == "epoch" or name.startswith("val_"):
            continue
        twin = f"val_{name}"
        groups.append((name, [name, twin] if twin in history else [name]))
    orphans = [name for name in history if name.startswith("val_") and name[4:] not in history]
    groups += [(name, [name]) for name in orphans]
    return groups


# ---------------------------------------------------------------------------- the worst mistakes
@dataclass
class ValPredictions:
    ids: list[str]
    scores: np.ndarray  # float32 [N, C]
    positive: np.ndarray  # bool [N, C]


def read_val_predictions(run: Run) -> ValPredictions | None:
    """val_predictions.npz (train writes it), checked against the label map; None when there is none."""
    if not run.folder.val_predictions.is_file():
        return None
    ids, scores, positive = read_predictions(run.folder)
    if scores.shape[1] != run.num_labels:
        raise UserError(f"{run.folder.val_predictions}: {scores.shape[1]} scores per image but the run has "
                        f"{run.num_labels} labels")
    return ValPredictions([str(i) for i in ids], scores, positive)


@dataclass
class Mistake:
    image_id: str
    margin: float  # evaluate's error margin over the filtered labels
    true: list[int]  # every true label of the image
    predicted: list[int]  # every label over its threshold, highest score first
    wrong: set[int]  # labels decided wrongly (missed or false)


def worst_mistakes(preds: ValPredictions, run: Run, group: str | None = None, label: int | None = None) -> list[Mistake]:
    """Images with a wrong decision, worst first (evaluate's margin: sum of |score - threshold| over wrong labels).

    `group` or `label` narrows both the wrong decisions counted and the ranking to those labels.
    """
    lm = run.label_map
    if label is not None:
        columns = np.array([label])
    elif group is not None:
        columns = lm.group_members(group)
    else:
        columns = np.arange(run.num_labels)
    thresholds = run.thresholds
    margins = error_margins(preds.scores[:, columns], preds.positive[:, columns], thresholds[columns])
    rows = np.flatnonzero(margins > 0)
    rows = rows[np.argsort(-margins[rows], kind="stable")]
    mistakes = []
    for row in rows:
        scores, positive = preds.scores[row], preds.positive[row]
        predicted = np.flatnonzero(scores >= thresholds)
        predicted = predicted[np.argsort(-scores[predicted], kind="stable")]
        wrong = set(np.flatnonzero((scores >= thresholds) != positive).tolist())
        mistakes.append(Mistake(preds.ids[row], float(margins[row]), np.flatnonzero(positive).tolist(),
                                predicted.tolist(), wrong))
    return mistakes


def page_count(total: int, page_size: int) -> int:
    return max(1, math.ceil(total / page_size))


def page_of(items: Sequence, page: int, page_size: int) -> Sequence:
    """Items of page `page` (1-based), clamped to the pages that exist."""
    page = min(max(1, page), page_count(len(items), page_size))
    return items[(page - 1) * page_size: page * page_size]


# ---------------------------------------------------------------------------- single-choice groups
def single_choice_groups(run: Run, shards: Path | None, preds: ValPredictions | None) -> list[str]:
    """Groups in which an image has one label: as make_tfrecords recorded them in the shards' shard_info.json,
    else as the validation labels show (no image with two labels of the group), else none."""
    if shards is not None:
        try:
            recorded = ShardFolder(shards).single_choice_groups()
            return [group for group in recorded if group in run.label_map.group_names()]
        except UserError:
            pass  # no shard folder or an older shard_info.json: fall back on the labels
    if preds is not None:
        return run.label_map.exclusive_groups(preds.positive)
    return []
