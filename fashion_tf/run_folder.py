"""The run folder: every file that training writes and later stages read, named here and nowhere else.

    RUN/config.json              resolved config
    RUN/label_map.json           copied from the shard folder
    RUN/model.keras              final model (+ optimizer)
    RUN/saved_model/             SavedModel export (images float32 [B,S,S,3] in [0,255])
    RUN/history.csv              one row per epoch
    RUN/plots/                   PNG plots of every stage
    RUN/checkpoints/             epoch-NNNN.weights.h5 (weights + optimizer), last.json, best.weights.h5
    RUN/tensorboard/             TensorBoard logs
    RUN/val_predictions.npz      ids [N], scores [N, C] float32, labels [N, C] uint8 on the validation split
    RUN/summary.json             training's closing figures
    RUN/thresholds.json          threshold_search's decision thresholds
    RUN/threshold_report.{md,json}
    RUN/metrics.{json,md}        evaluate's figures
    RUN/workers/<task>/          what a non-chief worker of a multi-worker run keeps

An earlier run is never deleted by a command that then fails: `begin` refuses a folder holding a run unless
told to resume or overwrite, and an overwrite moves the earlier run aside (RUN/.previous-run/) until the new
run has written its model (`finish`).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fashion_tf.errors import UserError
from fashion_tf.fileio import atomic_path, check_folder_writable, fields_of, read_json
from fashion_tf.labels import LABEL_MAP_FILE, LabelMap, indexed_entries

if TYPE_CHECKING:
    from fashion_tf.config import Config

PREVIOUS_RUN = ".previous-run"
DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class RunFolder:
    root: Path

    def __init__(self, root: str | os.PathLike):
        object.__setattr__(self, "root", Path(root))

    # ---- names -------------------------------------------------------------------------
    config = property(lambda self: self.root / "config.json")
    label_map = property(lambda self: self.root / LABEL_MAP_FILE)
    model = property(lambda self: self.root / "model.keras")
    saved_model = property(lambda self: self.root / "saved_model")
    history = property(lambda self: self.root / "history.csv")
    plots = property(lambda self: self.root / "plots")
    checkpoints = property(lambda self: self.root / "checkpoints")
    tensorboard = property(lambda self: self.root / "tensorboard")
    val_predictions = property(lambda self: self.root / "val_predictions.npz")
    summary = property(lambda self: self.root / "summary.json")
    thresholds = property(lambda self: self.root / "thresholds.json")
    threshold_report_md = property(lambda self: self.root / "threshold_report.md")
    threshold_report_json = property(lambda self: self.root / "threshold_report.json")
    metrics_json = property(lambda self: self.root / "metrics.json")
    metrics_md = property(lambda self: self.root / "metrics.md")
    last_checkpoint = property(lambda self: self.checkpoints / "last.json")
    best_weights = property(lambda self: self.checkpoints / "best.weights.h5")
    worker_weights = property(lambda self: self.root / "final.weights.h5")  # a non-chief worker's final model

    def epoch_weights(self, epoch: int) -> Path:
        return self.checkpoints / f"epoch-{epoch:04d}.weights.h5"

    def epoch_weight_files(self) -> list[Path]:
        """Epoch checkpoints, oldest first."""
        return sorted(self.checkpoints.glob("epoch-*.weights.h5"))

    def worker(self, task: str) -> "RunFolder":
        return RunFolder(self.root / "workers" / task)

    def outputs(self) -> list[Path]:
        """Every file or folder of ours that exists here (what an earlier run left)."""
        names = (self.config, self.label_map, self.model, self.saved_model, self.history, self.plots,
                 self.checkpoints, self.tensorboard, self.val_predictions, self.summary, self.thresholds,
                 self.threshold_report_md, self.threshold_report_json, self.metrics_json, self.metrics_md,
                 self.worker_weights)  # not workers/: each worker of a multi-worker run minds its own
        return [path for path in names if path.exists()]

    # ---- a run's lifecycle -----------------------------------------------------------------
    def check_writable(self) -> None:
        """UserError (before anything is written) when the folder cannot be created or written."""
        check_folder_writable(self.root, "run folder (output_dir)")

    def check_can_start(self, resume: bool, overwrite: bool) -> None:
        """A fresh run may not land on an earlier one unless asked to overwrite it. Touches nothing."""
        self.check_writable()
        if resume or overwrite:
            return
        earlier = self.outputs()
        if earlier:
            shown = ", ".join(p.name for p in earlier[:4]) + (", ..." if len(earlier) > 4 else "")
            raise UserError(f"{self.root}: holds an earlier run ({shown}); pass --resume to continue it, "
                            "--overwrite to replace it, or choose another output_dir")

    def begin(self, resume: bool, overwrite: bool) -> None:
        """Make the folder ready for a run: with overwrite (and no resume), move the earlier run aside."""
        self.check_can_start(resume, overwrite)
        self.root.mkdir(parents=True, exist_ok=True)
        earlier = self.outputs()
        if overwrite and not resume and earlier:
            aside = self.root / PREVIOUS_RUN
            if aside.exists():
                # An overwrite that never finished left the last complete run there; what is here is that
                # failed attempt, which this overwrite replaces.
                for path in earlier:
                    _remove(path)
            else:
                for path in earlier:
                    aside.mkdir(exist_ok=True)
                    os.replace(path, aside / path.name)
            print(f"note: the earlier run in {self.root} is kept in {aside} until this run has written its model",
                  flush=True)

    def finish(self) -> None:
        """The new run's model is written: an earlier run moved aside by --overwrite can go."""
        shutil.rmtree(self.root / PREVIOUS_RUN, ignore_errors=True)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()


def newest_run(runs_root: str | os.PathLike) -> RunFolder:
    """The most recently modified run folder under runs_root that holds validation predictions."""
    runs_root = Path(runs_root)
    if not runs_root.is_dir():
        raise UserError(f"{runs_root}: runs folder not found (pass --run-dir or --runs-root)")
    name = RunFolder(runs_root).val_predictions.name
    candidates = [p.parent for p in runs_root.rglob(name) if p.is_file() and PREVIOUS_RUN not in p.parts]
    if not candidates:
        raise UserError(f"{runs_root}: no run folder with {name} found (pass --run-dir)")
    return RunFolder(max(candidates, key=lambda d: (d.stat().st_mtime, str(d))))


# ---- a trained run, as evaluate, predict and the app read it ------------------------------------------
@dataclass
class Run:
    """Everything a trained run folder holds, checked; the model itself is loaded separately (predict.load_model)."""

    folder: RunFolder
    config: "Config"
    label_map: "LabelMap"
    thresholds: np.ndarray  # float64 [C] as stored; a label is positive when score >= threshold
    thresholds_source: str  # the file they came from, or a sentence saying the default is used

    @property
    def run_dir(self) -> Path:
        return self.folder.root

    @property
    def model_path(self) -> Path:
        return self.folder.model

    @property
    def num_labels(self) -> int:
        return len(self.label_map)

    @property
    def image_size(self) -> int:
        return self.config.data.image_size


def load_run(run_dir: str | os.PathLike, thresholds_path: str | os.PathLike | None = None) -> Run:
    """Check and read a trained run folder (config, label map, thresholds); no TensorFlow needed."""
    from fashion_tf.config import load_config

    folder = RunFolder(run_dir)
    if not folder.root.is_dir():
        raise UserError(f"{folder.root}: run directory not found")
    for path in (folder.config, folder.model, folder.label_map):
        if not path.is_file():
            raise UserError(f"{path}: not found (is {folder.root} a run directory written by fashion_tf.train?)")
    config = load_config(folder.config)
    label_map = LabelMap.from_json(folder.label_map)
    path = Path(thresholds_path) if thresholds_path is not None else folder.thresholds
    if thresholds_path is None and not path.is_file():
        thresholds = np.full(len(label_map), DEFAULT_THRESHOLD, dtype=np.float64)
        return Run(folder, config, label_map, thresholds,
                   f"{DEFAULT_THRESHOLD} for every label (no {path.name} in {folder.root})")
    thresholds = read_thresholds(path)
    if thresholds.shape[0] != len(label_map):
        raise UserError(f"{path}: {thresholds.shape[0]} thresholds for {len(label_map)} labels in {folder.label_map.name}")
    return Run(folder, config, label_map, thresholds, str(path))


# ---- thresholds.json (written by threshold_search, read by evaluate, predict and the app) -------------
def thresholds_document(thresholds, ids, names, groups, objective: str, mode: str, global_threshold: float,
                        cv=None) -> dict:
    return {
        "objective": objective,
        "mode": mode,
        "rule": "score >= threshold",
        "cv_folds": cv,
        "global_threshold": float(global_threshold),
        "num_labels": len(thresholds),
        "labels": [
            {"index": i, "id": ids[i], "name": names[i], "group": groups[i], "threshold": float(t)}
            for i, t in enumerate(thresholds)
        ],
    }


def read_thresholds(path: str | os.PathLike) -> np.ndarray:
    """Per-label thresholds (float64 [C], by label index) from a thresholds.json.

    float64 as stored: rounding a hand-written 0.3 to float32 could flip a score lying between the two.
    """
    path = Path(path)
    data = read_json(path, "thresholds file")
    with fields_of(path, "thresholds.json"):
        values = np.array([float(e["threshold"]) for e in indexed_entries(data["labels"], path)], np.float64)
    if not np.all(np.isfinite(values)):
        raise UserError(f"{path}: thresholds must be finite numbers")
    return values


# ---- validation predictions (written by train, read by threshold_search and the app) ----------------
def write_predictions(run: RunFolder, ids: np.ndarray, scores: np.ndarray, labels: np.ndarray) -> None:
    with atomic_path(run.val_predictions) as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, ids=ids, scores=scores, labels=labels)


def read_predictions(run: RunFolder) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids [N], scores [N, C] float32 in [0, 1], labels [N, C] bool), validated; UserError naming the file."""
    path = run.val_predictions
    if not path.is_file():
        raise UserError(f"{path}: predictions file not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [key for key in ("ids", "scores", "labels") if key not in data.files]
            if missing:
                raise UserError(f"{path}: missing array {missing[0]!r} (has {', '.join(data.files) or 'none'})")
            ids = data["ids"]
        scores, labels = (_read_npz_array(path, key) for key in ("scores", "labels"))
    except UserError:
        raise
    except Exception as err:  # zipfile / pickle / format errors all mean "not a readable npz"
        raise UserError(f"{path}: not a readable .npz file ({type(err).__name__}: {err})") from None
    if scores.ndim != 2:
        raise UserError(f"{path}: 'scores' must be 2-D [N, C], got shape {scores.shape}")
    if labels.shape != scores.shape:
        raise UserError(f"{path}: 'labels' shape {labels.shape} does not match 'scores' shape {scores.shape}")
    if ids.shape != (scores.shape[0],):
        raise UserError(f"{path}: 'ids' shape {ids.shape} does not match {scores.shape[0]} score rows")
    if scores.shape[0] == 0 or scores.shape[1] == 0:
        raise UserError(f"{path}: 'scores' is empty (shape {scores.shape})")
    if not np.issubdtype(scores.dtype, np.floating):
        raise UserError(f"{path}: 'scores' must be floating point, got {scores.dtype}")
    check_probabilities(scores, f"{path}: 'scores'")
    return ids, scores.astype(np.float32, copy=False), _as_bool_labels(labels, path)


ROW_CHUNK = 16384


def check_probabilities(scores: np.ndarray, where: str = "scores") -> None:
    """Scores must be probabilities: finite and in [0, 1] (thresholds on logits would mean nothing)."""
    if scores.size and 0.0 <= scores.min() and scores.max() <= 1.0:  # NaN fails both comparisons
        return
    for start in range(0, scores.shape[0], ROW_CHUNK):
        chunk = scores[start:start + ROW_CHUNK]
        bad = ~((chunk >= 0) & (chunk <= 1))
        if bad.any():
            row, col = np.argwhere(bad)[0]
            value = chunk[row, col]
            kind = "NaN" if np.isnan(value) else "infinite" if np.isinf(value) else f"{float(value):g}, outside [0, 1]"
            raise UserError(f"{where} must be probabilities; found {kind} at row {start + row}, label {col}")


def _as_bool_labels(labels: np.ndarray, path: Path) -> np.ndarray:
    if labels.dtype == bool:
        return labels
    if not np.issubdtype(labels.dtype, np.number):
        raise UserError(f"{path}: 'labels' must be 0/1 numbers, got {labels.dtype}")
    if labels.min() < 0 or labels.max() > 1 or not np.issubdtype(labels.dtype, np.integer):
        bad = (labels != 0) & (labels != 1)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise UserError(f"{path}: 'labels' must be 0/1, found {labels[row, col]!r} at row {row}, label {col}")
    # 0/1 bytes are valid booleans: a view instead of a 1-byte-per-entry copy
    return labels.view(bool) if labels.dtype.itemsize == 1 else labels != 0


def _read_npz_array(path: Path, key: str) -> np.ndarray:
    """One array of an .npz; uncompressed members are read straight from the file (np.load's zip stream
    checksums and copies every byte, which costs seconds on a gigabyte of scores)."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        member = archive.getinfo(f"{key}.npy")
        if member.compress_type != zipfile.ZIP_STORED:
            with np.load(path, allow_pickle=False) as data:
                return data[key]
    with open(path, "rb") as handle:
        handle.seek(member.header_offset)
        local = handle.read(30)
        if local[:4] != b"PK\x03\x04":
            raise ValueError(f"bad zip entry for {key}")
        name_len, extra_len = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
        handle.seek(member.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(handle)
        readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in readers:
            with np.load(path, allow_pickle=False) as data:
                return data[key]
        shape, fortran, dtype = readers[version](handle)
        if dtype.hasobject:
            raise ValueError(f"{key} holds Python objects")
        count = int(np.prod(shape, dtype=np.int64))
        array = np.fromfile(handle, dtype=dtype, count=count)
        if array.size != count:
            raise ValueError(f"{key} is truncated")
    return array.reshape(shape, order="F" if fortran else "C")
