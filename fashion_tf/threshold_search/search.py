"""The whole stage on a run folder: Options in, thresholds.json + reports + plots out, summary figures back.

Every input (options, predictions, label map, the folder being writable) is checked before anything is
written; the files are written atomically.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np

from fashion_tf.errors import UserError
from fashion_tf.fileio import write_bytes_atomic, write_json_atomic
from fashion_tf.labels import DEFAULT_GROUP, LabelMap
from fashion_tf.run_folder import RunFolder, newest_run, read_predictions, thresholds_document
from fashion_tf.threshold_search.best import best_thresholds, check_mode, check_objective, decision_warnings
from fashion_tf.threshold_search.cross_validation import auto_choice, check_fold_count, cross_validate
from fashion_tf.threshold_search.metrics import f1_scores
from fashion_tf.threshold_search.report import build_report, headline, json_ready, report_markdown

AUTO = "auto"


@dataclass(frozen=True)
class Options:
    run_dir: str | os.PathLike | None = None  # None: the newest run under runs_root
    runs_root: str | os.PathLike = "runs"
    objective: str = "micro"
    mode: str = "per_label"  # per_label, global, or auto (with cv): whichever scores best on held-out folds
    cv: int = 0  # K-fold cross-validation of the thresholds (0: off)
    min_positives: int = 5  # labels with fewer validation positives use the global threshold
    seed: int = 0  # of the CV fold split
    plots: bool = True
    progress: bool = False

    def __post_init__(self):
        check_objective(self.objective)
        if self.mode != AUTO:
            check_mode(self.mode)
        if self.cv and self.cv < 2:
            raise UserError(f"--cv must be 0 (off) or at least 2, got {self.cv}")
        if self.min_positives < 0:
            raise UserError(f"--min-positives must be >= 0, got {self.min_positives}")
        if self.mode == AUTO and not self.cv:
            raise UserError("--mode auto chooses 0.5, global or per_label by their held-out F1: "
                            "give --cv K (e.g. --cv 5)")


@dataclass
class _Choice:
    """The thresholds to write and the figures that describe them."""

    thresholds: np.ndarray
    mode: str  # as written to thresholds.json: per_label or global
    chosen: str  # what the summary names: the mode, or auto's pick (0.5, global, per_label)
    info: dict  # best_thresholds' info, its warnings about the thresholds written
    headline: dict  # setting -> objective -> {mean, std, folds}
    per_label_metrics: dict  # of the report's per-label rows
    fit: dict  # in-sample metrics at the thresholds written (operating points of the plots)


def search(options: Options) -> dict:
    """Choose and write thresholds for a run folder; returns the summary figures (see `_summary`)."""
    started = time.perf_counter()
    folder = _run_folder(options)
    _, scores, positive = read_predictions(folder)
    label_map = _label_map(folder, scores.shape[1])
    if options.cv:
        check_fold_count(scores.shape[0], options.cv)
    folder.check_writable()
    choice = _choose(scores, positive, options)
    report = build_report(folder.root, label_map, choice.thresholds, choice.info, choice.headline,
                          choice.per_label_metrics, options.cv or None, scores.shape[0])
    _write_thresholds_and_report(folder, options, label_map, choice, report)
    plots = []
    if options.plots:
        from fashion_tf.threshold_search.plots import write_plots

        plots = write_plots(folder.plots, scores, positive, choice.thresholds, report, label_map, choice.fit)
    return _summary(options, folder, label_map, scores.shape, choice, plots, time.perf_counter() - started)


def _write_thresholds_and_report(folder: RunFolder, options: Options, label_map: LabelMap, choice: _Choice,
                                 report: dict) -> None:
    write_json_atomic(folder.thresholds, thresholds_document(
        choice.thresholds, label_map.ids, label_map.names, label_map.groups, options.objective, choice.mode,
        choice.info["global_threshold"], options.cv or None))
    write_json_atomic(folder.threshold_report_json, json_ready(report))
    write_bytes_atomic(folder.threshold_report_md,
                       report_markdown(report, folder.threshold_report_json.name).encode("utf-8"))


def _run_folder(options: Options) -> RunFolder:
    folder = RunFolder(options.run_dir) if options.run_dir else newest_run(options.runs_root)
    if not folder.root.is_dir():
        raise UserError(f"{folder.root}: run folder not found")
    return folder


def _label_map(folder: RunFolder, num_labels: int) -> LabelMap:
    """The run's label map, or generic label_<i> names when it has none; its size must match the scores."""
    path = folder.label_map
    if not path.is_file():
        return LabelMap(tuple(str(i) for i in range(num_labels)), tuple(f"label_{i}" for i in range(num_labels)),
                        (DEFAULT_GROUP,) * num_labels)
    label_map = LabelMap.from_json(path)
    if len(label_map) != num_labels:
        raise UserError(f"{path}: has {len(label_map)} labels but the scores have {num_labels} columns")
    return label_map


def _choose(scores: np.ndarray, positive: np.ndarray, options: Options) -> _Choice:
    mode = "per_label" if options.mode == AUTO else options.mode
    thresholds, info = best_thresholds(scores, positive, options.objective, mode, options.min_positives,
                                       options.progress)
    if not options.cv:
        in_sample = {"at_0.5": f1_scores(scores, positive, 0.5),
                     "best_global": f1_scores(scores, positive, info["global_threshold"]),
                     "per_label": info["fit_metrics"]}
        return _Choice(thresholds, mode, mode, info, headline([in_sample]), info["fit_metrics"], info["fit_metrics"])
    cv = cross_validate(scores, positive, options.cv, options.objective, mode, options.min_positives, options.seed,
                        options.progress)
    info["global_threshold"] = cv["global_threshold"]
    held_out = headline(cv["fold_metrics"])
    thresholds, chosen = cv["thresholds"], mode
    if options.mode == AUTO:
        chosen, mode, thresholds = auto_choice(held_out, options.objective, thresholds, info["global_threshold"])
        info["mode"] = mode
    fit = f1_scores(scores, positive, thresholds)
    info.update(decision_warnings(fit, scores.shape[0]))  # about the thresholds written: the fold averages
    return _Choice(thresholds, mode, chosen, info, held_out, cv["pooled_metrics"]["per_label"], fit)


def _summary(options: Options, folder: RunFolder, label_map: LabelMap, shape, choice: _Choice, plots: list,
             seconds: float) -> dict:
    info, objective = choice.info, options.objective
    return {
        "run_dir": folder.root,
        "objective": objective,
        "mode": choice.mode,
        "auto_choice": choice.chosen if options.mode == AUTO else None,
        "cv_folds": options.cv or None,
        "num_images": int(shape[0]),
        "num_labels": int(shape[1]),
        "global_threshold": float(info["global_threshold"]),
        "f1": {setting: figures[objective] for setting, figures in choice.headline.items()},
        "rare_labels": len(info["rare_labels"]),
        "no_positive_labels": len(info["no_positive_labels"]),
        "high_positive_rate_labels": [
            {"id": label_map.ids[i], "name": label_map.names[i], "rate": float(info["predicted_positive_rate"][i])}
            for i in info["high_positive_rate_labels"]],
        "files": [folder.thresholds, folder.threshold_report_md, folder.threshold_report_json],
        "plots": plots,
        "seconds": seconds,
    }

