"""Epoch checkpoints of a run folder, and what --resume needs of them and of history.csv.

After every epoch the model's weights and optimizer state go to checkpoints/epoch-NNNN.weights.h5 (written
under a temporary name and renamed), then checkpoints/last.json points at it; the two newest epoch files are
kept. A kill at any moment leaves a consistent pair. --resume starts from what last.json names; when last.json
is unreadable or its file does not load, it falls back to the newest epoch file that does (its epoch from the
name, the best monitored value from history.csv), so no intact checkpoint is ever a dead end.
"""

from __future__ import annotations

import csv
import errno
import gc
import json
import math
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, TypeVar

import numpy as np

from fashion_tf.errors import UserError
from fashion_tf.fileio import atomic_path, write_json_atomic
from fashion_tf.run_folder import RunFolder

KEEP_EPOCH_CHECKPOINTS = 2
T = TypeVar("T")
DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


@dataclass
class ResumeState:
    epoch: int  # epochs completed
    weights: Path
    best: Optional[float]  # best monitored value so far
    source: str  # how it was found, for the log line


def monitor_mode(monitor: str) -> str:
    return "min" if monitor.endswith("loss") else "max"


# ---- writing --------------------------------------------------------------------------------
def save_epoch(model, run: RunFolder, epoch: int, best: Optional[float], monitor: str) -> None:
    """Weights + optimizer state of `epoch` (1-based), then last.json; older epoch files beyond the newest two go.

    A full disk is one line naming the file, not a traceback; the previous checkpoint stays the one last.json
    names.
    """
    save_weights(model, run.epoch_weights(epoch))
    state = {"epoch": epoch, "iterations": int(model.optimizer.iterations.numpy()), "weights": run.epoch_weights(epoch).name,
             "best": best, "monitor": monitor}
    write_or_fail(run.last_checkpoint, lambda: write_json_atomic(run.last_checkpoint, state))
    for old in run.epoch_weight_files()[:-KEEP_EPOCH_CHECKPOINTS]:
        old.unlink(missing_ok=True)


def save_weights(model, path: Path) -> None:
    """model.save_weights(path) (weights and optimizer state) under a temporary name, renamed when complete.

    The room it needs is checked first: HDF5 cannot close a file whose write failed for lack of space, and
    crashes the process when it tries again at exit, so a checkpoint is only started where it fits.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    needed = weights_file_bytes(model)
    free = shutil.disk_usage(path.parent).free
    if free < needed:
        raise UserError(f"{path}: cannot write ({needed / 2**20:.1f} MB needed, {free / 2**20:.1f} MB free on its disk); "
                        "free space and re-run with --resume to continue from the last complete checkpoint")
    tmp = path.with_name(f".tmp-{path.name}")  # Keras insists on the .weights.h5 suffix
    try:
        write_or_fail(path, lambda: model.save_weights(tmp, overwrite=True))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def weights_file_bytes(model) -> int:
    """A safe upper bound of a weights file's size: every variable of the model and its optimizer, plus HDF5's
    own few kilobytes per variable."""
    variables = list(model.weights) + list(getattr(model.optimizer, "variables", []) or [])
    data = sum(math.prod(v.shape) * np.dtype(v.dtype).itemsize for v in variables)
    return int(data * 1.05) + 8192 * len(variables) + (64 << 10)


def write_or_fail(path: Path, write: Callable[[], T]) -> T:
    """write()'s result; a full disk (or quota, or file size limit) becomes one UserError line naming `path`."""
    result, reason = _attempt(write)
    if reason is not None:
        raise UserError(f"{path}: cannot write ({reason}); free space and re-run with --resume to continue "
                        "from the last complete checkpoint")
    return result


def _attempt(write: Callable[[], T]) -> tuple[Optional[T], Optional[str]]:
    """(result, None) when write() succeeds, (None, reason) when the disk is full; other errors propagate.

    h5py reports a failed write once as OSError and then again from its objects' destructors (Cython prints
    those through sys.excepthook and sys.unraisablehook): they are collected here, quietly, so the user sees
    one line. The UserError is raised by the caller, outside this except clause, so that it keeps nothing of
    the failed write alive.
    """
    hook, excepthook = sys.unraisablehook, sys.excepthook
    sys.unraisablehook = lambda unraisable: None if _is_disk_full(unraisable.exc_value) else hook(unraisable)
    sys.excepthook = lambda kind, value, tb: None if _is_disk_full(value) else excepthook(kind, value, tb)
    try:
        return write(), None
    except OSError as err:
        if not _is_disk_full(err):
            raise
        return None, os.strerror(err.errno if err.errno in DISK_FULL else errno.ENOSPC)
    finally:
        gc.collect()
        sys.unraisablehook, sys.excepthook = hook, excepthook


def _is_disk_full(err: BaseException | None) -> bool:
    return getattr(err, "errno", None) in DISK_FULL or "errno = 28" in str(err) or "No space left" in str(err)


# ---- resuming ---------------------------------------------------------------------------------
def resume_candidates(run: RunFolder, monitor: str) -> list[ResumeState]:
    """Checkpoints to resume from, best first: what last.json names, then every epoch file, newest first."""
    candidates: list[ResumeState] = []
    named = _read_last_state(run)
    if named is not None:
        candidates.append(named)
    for path in reversed(run.epoch_weight_files()):
        if named is not None and path == named.weights:
            continue
        epoch = _epoch_of(path)
        if epoch is not None:
            best = best_in_history(run.history, monitor, epoch)
            candidates.append(ResumeState(epoch, path, best, f"{path.name} (best {monitor} from {run.history.name})"))
    return candidates


def _read_last_state(run: RunFolder) -> Optional[ResumeState]:
    path = run.last_checkpoint
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        weights = run.checkpoints / state["weights"]
        best = state.get("best")
        resumed = ResumeState(int(state["epoch"]), weights, None if best is None else float(best), path.name)
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as err:
        print(f"note: {path} is unreadable ({type(err).__name__}); resuming from the newest epoch checkpoint instead",
              flush=True)
        return None
    if not weights.is_file():
        print(f"note: {path} names {weights.name}, which is missing; resuming from the newest epoch checkpoint instead",
              flush=True)
        return None
    return resumed


def _epoch_of(path: Path) -> Optional[int]:
    stem = path.name.split(".")[0]  # epoch-0007
    try:
        return int(stem.split("-")[1])
    except (IndexError, ValueError):
        return None


def load_first_loadable(model, candidates: list[ResumeState], run: RunFolder) -> ResumeState:
    """Load the first candidate that loads; UserError naming the files when none does."""
    failures = []
    for state in candidates:
        try:
            model.load_weights(state.weights)
        except Exception as err:  # noqa: BLE001 - a torn or foreign file: try the next one
            failures.append(f"{state.weights.name}: {type(err).__name__}")
            print(f"note: {state.weights} does not load ({type(err).__name__}); trying an older checkpoint", flush=True)
            continue
        return state
    raise UserError(f"{run.checkpoints}: no checkpoint loads ({'; '.join(failures)}); start over with --overwrite "
                    "(the earlier run is kept until the new one has written its model)")


# ---- history.csv --------------------------------------------------------------------------------
def read_history(path: Path) -> list[dict]:
    """Rows of history.csv as floats (empty cells NaN); [] when there is none."""
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def _number(text: Optional[str]) -> float:
    try:
        return float(text) if text not in ("", None) else float("nan")
    except ValueError:
        return float("nan")


def monitor_history(path: Path, monitor: str, first_epoch: int, end_epoch: int) -> list[float]:
    """The monitored value of epochs [first_epoch, end_epoch) (0-based) from history.csv; absent ones skipped."""
    return [row[monitor] for row in read_history(path)
            if monitor in row and first_epoch <= int(row.get("epoch", -1)) < end_epoch]


def best_in_history(path: Path, monitor: str, epochs: int) -> Optional[float]:
    values = [v for v in monitor_history(path, monitor, 0, epochs) if math.isfinite(v)]
    if not values:
        return None
    return max(values) if monitor_mode(monitor) == "max" else min(values)


def trim_history(path: Path, epochs: int) -> None:
    """Keep the history rows of the first `epochs` epochs (rows logged after the last checkpoint are redone)."""
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    if not lines:
        return
    header, rows = lines[0], lines[1:]
    column = header.strip().split(",").index("epoch") if "epoch" in header.split(",") else 0
    kept = [row for row in rows if row.strip() and _epoch_cell(row, column) < epochs]
    if len(kept) != len(rows):
        with atomic_path(path) as tmp:
            tmp.write_text(header + "".join(kept), encoding="utf-8")


def _epoch_cell(row: str, column: int) -> float:
    try:
        return float(row.split(",")[column])
    except (IndexError, ValueError):
        return math.inf  # a torn last row: dropped
