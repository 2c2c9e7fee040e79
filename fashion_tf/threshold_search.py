"""Exact F1-optimal decision thresholds from a run's validation scores.

Input: <run>/val_predictions.npz (`ids` [N], `scores` [N, C] float, `labels` [N, C] 0/1) and <run>/label_map.json.
Output in the run dir: thresholds.json, threshold_report.{md,json}, plots/*.png.

A label is predicted positive when `score >= threshold` (see `apply_thresholds`).

How the search is exact without a grid
--------------------------------------
For one label, sort its scores once. A threshold only matters through the set {score >= t}, which is always
"every score at or above some distinct value u". F1 = 2TP / (TP + FP + P) only drops when the cut moves past
scores that are all negatives, so the optimum sits at a cut whose lowest included value u is the score of at
least one positive. For every distinct positive score u, TP(u) and FP(u) (ties at u included, as `>=` does)
come from two `searchsorted` calls on the sorted arrays: O(n log n) per label, no Python loop per image.
The stored threshold lies between u and the next lower distinct score (the float32 value nearest their midpoint
that is > the lower one, so float32 and float64 comparisons agree). Outer sentinels are 0 and 1 when the scores
lie in [0, 1]: "predict all" is placed midway between the lowest score and 0, "predict none" midway between
the highest score and 1.

Objectives (--objective) and modes (--mode):
- macro: mean of per-label F1. per_label: each label's own optimum. global: see below.
- micro: F1 of the pooled TP/FP/FN. per_label: coordinate ascent on the pooled counts, starting from the global
  optimum; each step sets one label to its best cut given the others, passes repeat until none improves (a local
  optimum: no single-label change helps). A label may end "switched off" (threshold above all its scores) when
  any prediction of it lowers micro F1.
- global micro/macro: exact over every distinct positive score of all labels, by branch and bound: exact
  counts at ~16,000 coarse cuts (from the sorted columns), an upper bound of F1 between neighbouring cuts (no cut
  in between has more TP than the lower one nor fewer FP than the higher one), and exact counts at every cut
  inside the gaps whose bound beats the best value found (one row pass over the narrow band of scores).
- samples: mean per-image F1 (Kaggle iMaterialist metric). global: exact sweep (per-image F1 changes are
  accumulated as events on the score axis). per_label: falls back to the global samples threshold for every
  label (a per-label search on a per-image metric couples all labels of an image; documented, reported).

Labels with fewer than --min-positives validation positives (and always those with none) get the global
threshold of the same objective.

Edge conventions match sklearn with zero_division=0: F1 of a label (or image) with no positives and no
predictions is 0, and macro averages over all C labels.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from fashion_tf.errors import UserError, run_cli
from fashion_tf.fileio import write_bytes_atomic, write_json_atomic

OBJECTIVES = ("micro", "macro", "samples")
MODES = ("per_label", "global")
PREDICTIONS_FILE = "val_predictions.npz"
LABEL_MAP_FILE = "label_map.json"
THRESHOLDS_FILE = "thresholds.json"
REPORT_MD = "threshold_report.md"
REPORT_JSON = "threshold_report.json"
PLOTS_DIR = "plots"
HIGH_POSITIVE_RATE = 0.95
ROW_CHUNK = 16384
COARSE_CUTS = 16384  # first level of the global branch and bound (from the sorted columns)
REFINE_CUTS = 65536  # later levels (one row pass each over the narrow band of surviving scores)
COLUMN_BLOCK = 32
MAX_ASCENT_PASSES = 25
FALLBACK_GROUP = "all"

_F32_INF = np.float32(np.inf)


# ---------------------------------------------------------------------------------------------
# Threshold placement
# ---------------------------------------------------------------------------------------------
def _between(lower, upper) -> np.ndarray:
    """Float32-representable t with lower < t <= upper, nearest the midpoint (inputs float32, lower < upper)."""
    lower = np.asarray(lower, np.float32)
    upper = np.asarray(upper, np.float32)
    mid = ((lower.astype(np.float64) + upper.astype(np.float64)) / 2).astype(np.float32)
    return np.where(mid > lower, mid, np.nextafter(lower, _F32_INF)).astype(np.float64)


def _all_threshold(lowest) -> np.ndarray:
    """Threshold that includes `lowest` (and everything above): midway to 0 for positive scores, else itself."""
    lowest = np.asarray(lowest, np.float32)
    safe = np.where(lowest > 0, lowest, np.float32(1))
    return np.where(lowest > 0, _between(np.zeros_like(safe), safe), lowest.astype(np.float64))


def _none_threshold(highest: float) -> float:
    """Threshold above every score: midway to 1 for scores below 1, else the next float32 up."""
    highest = np.float32(highest)
    if highest < 1:
        return float(_between(highest, np.float32(1)))
    return float(np.nextafter(highest, _F32_INF))


@dataclass
class Sweep:
    """Every useful cut of one score set, highest threshold first; index 0 is 'predict none'."""

    thresholds: np.ndarray  # float64 [K + 1], descending
    tp: np.ndarray  # int64 [K + 1]
    fp: np.ndarray  # int64 [K + 1]
    positives: int
    total: int

    def f1(self) -> np.ndarray:
        return _ratio(2 * self.tp, self.tp + self.fp + self.positives)

    def precision(self) -> np.ndarray:
        return _ratio(self.tp, self.tp + self.fp)

    def recall(self) -> np.ndarray:
        return _ratio(self.tp, np.full_like(self.tp, self.positives))


def _ratio(num, den) -> np.ndarray:
    num = np.asarray(num, np.float64)
    den = np.asarray(den, np.float64)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)


def _distinct_sorted(sorted_values: np.ndarray) -> np.ndarray:
    if sorted_values.size == 0:
        return sorted_values
    keep = np.empty(sorted_values.size, bool)
    keep[0] = True
    np.not_equal(sorted_values[1:], sorted_values[:-1], out=keep[1:])
    return sorted_values[keep]


def sweep_sorted(sorted_scores: np.ndarray, sorted_positive_scores: np.ndarray) -> Sweep:
    """All cuts at distinct positive scores of one (ascending) score set; O(n log n) in total."""
    n, npos = sorted_scores.size, sorted_positive_scores.size
    cut_values = _distinct_sorted(sorted_positive_scores)[::-1]  # descending
    first_at_or_above = np.searchsorted(sorted_scores, cut_values, side="left")
    tp = npos - np.searchsorted(sorted_positive_scores, cut_values, side="left")
    fp = (n - first_at_or_above) - tp
    has_lower = first_at_or_above > 0
    lower = sorted_scores[np.maximum(first_at_or_above - 1, 0)]
    lower = np.where(has_lower, lower, cut_values - np.float32(1))  # dummy where unused, keeps lower < upper
    thresholds = np.where(has_lower, _between(lower, cut_values), _all_threshold(cut_values))
    top = _none_threshold(sorted_scores[-1]) if n else 0.5
    return Sweep(
        thresholds=np.concatenate([[top], thresholds]),
        tp=np.concatenate([[0], tp]).astype(np.int64),
        fp=np.concatenate([[0], fp]).astype(np.int64),
        positives=int(npos),
        total=int(n),
    )


def sweep_label(scores: np.ndarray, positive: np.ndarray) -> Sweep:
    """Sweep of one label's scores ([N]) given its boolean truth ([N])."""
    scores = np.asarray(scores, np.float32)
    return sweep_sorted(np.sort(scores), np.sort(scores[positive]))


def _label_columns(scores: np.ndarray, positive: np.ndarray, block: int = COLUMN_BLOCK):
    """Yield (label, sorted scores, sorted positive scores), copying a few columns at a time (cache friendly)."""
    for start in range(0, scores.shape[1], block):
        cols = np.ascontiguousarray(scores[:, start:start + block].T)
        truth = np.ascontiguousarray(positive[:, start:start + block].T)
        for offset in range(cols.shape[0]):
            col = cols[offset]
            yield start + offset, np.sort(col), np.sort(col[truth[offset]])


# ---------------------------------------------------------------------------------------------
# Counting and metrics
# ---------------------------------------------------------------------------------------------
def _as_threshold_vector(thresholds, num_labels: int) -> np.ndarray:
    thresholds = np.asarray(thresholds, np.float64)
    if thresholds.ndim == 0:
        return np.full(num_labels, float(thresholds))
    if thresholds.shape != (num_labels,):
        raise UserError(f"thresholds have shape {thresholds.shape}, scores have {num_labels} labels")
    return thresholds


def apply_thresholds(scores: np.ndarray, thresholds) -> np.ndarray:
    """Boolean predictions: score >= threshold of its label (thresholds: scalar or [C])."""
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise UserError(f"scores must be 2-D [N, C], got shape {scores.shape}")
    return scores >= _as_threshold_vector(thresholds, scores.shape[1])


def _count(scores: np.ndarray, positive: np.ndarray, thresholds: np.ndarray) -> dict:
    """Per-label TP and predicted-positive counts plus the sum of per-image F1, in row chunks."""
    num_labels = scores.shape[1]
    tp = np.zeros(num_labels, np.int64)
    predicted = np.zeros(num_labels, np.int64)
    image_f1_sum = 0.0
    as_float32 = thresholds.astype(np.float32)
    if scores.dtype == np.float32 and np.array_equal(as_float32, thresholds):
        thresholds = as_float32  # same decisions, no float64 copy of every chunk
    for start in range(0, scores.shape[0], ROW_CHUNK):
        pred = scores[start:start + ROW_CHUNK] >= thresholds
        truth = positive[start:start + ROW_CHUNK]
        hit = pred & truth
        tp += np.count_nonzero(hit, axis=0)
        predicted += np.count_nonzero(pred, axis=0)
        row_den = np.count_nonzero(pred, axis=1) + np.count_nonzero(truth, axis=1)
        image_f1_sum += float(_ratio(2 * np.count_nonzero(hit, axis=1), row_den).sum())
    return {"tp": tp, "predicted": predicted, "image_f1_sum": image_f1_sum}


def metrics_from_counts(tp, predicted, support, image_f1_sum: float, num_images: int) -> dict:
    tp = np.asarray(tp, np.int64)
    predicted = np.asarray(predicted, np.int64)
    support = np.asarray(support, np.int64)
    f1 = _ratio(2 * tp, predicted + support)
    return {
        "micro": float(_ratio(2 * tp.sum(), predicted.sum() + support.sum())),
        "macro": float(f1.mean()) if f1.size else 0.0,
        "samples": image_f1_sum / num_images if num_images else 0.0,
        "precision": _ratio(tp, predicted),
        "recall": _ratio(tp, support),
        "f1": f1,
        "support": support,
        "tp": tp,
        "fp": predicted - tp,
        "fn": support - tp,
        "predicted": predicted,
        "num_images": int(num_images),
    }


def f1_scores(scores: np.ndarray, labels: np.ndarray, thresholds) -> dict:
    """micro, macro, samples F1 and per-label arrays (precision, recall, f1, support, tp, fp, fn, predicted)."""
    scores, positive = _check_arrays(scores, labels)
    counts = _count(scores, positive, _as_threshold_vector(thresholds, scores.shape[1]))
    support = np.count_nonzero(positive, axis=0)
    return metrics_from_counts(counts["tp"], counts["predicted"], support, counts["image_f1_sum"], scores.shape[0])


def _check_arrays(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores)
    labels = np.asarray(labels)
    if scores.ndim != 2:
        raise UserError(f"scores must be 2-D [N, C], got shape {scores.shape}")
    if labels.shape != scores.shape:
        raise UserError(f"labels shape {labels.shape} does not match scores shape {scores.shape}")
    if not np.issubdtype(scores.dtype, np.floating):
        raise UserError(f"scores must be floating point, got {scores.dtype}")
    if scores.dtype != np.float32:
        scores = scores.astype(np.float32)
    positive = labels if labels.dtype == bool else labels != 0
    return scores, positive


# ---------------------------------------------------------------------------------------------
# Global (one threshold for all labels) exact sweeps
# ---------------------------------------------------------------------------------------------
@dataclass
class GlobalResult:
    threshold: float
    value: float  # the objective at that threshold (in-sample)


def _largest_below(scores: np.ndarray, value: np.float32) -> float | None:
    best = None
    for start in range(0, scores.shape[0], ROW_CHUNK):
        chunk = scores[start:start + ROW_CHUNK]
        below = chunk[chunk < value]
        if below.size:
            top = float(below.max())
            best = top if best is None else max(best, top)
    return best


def _threshold_for_cut(scores: np.ndarray, cut_value: np.float32) -> float:
    lower = _largest_below(scores, cut_value)
    if lower is None:
        return float(_all_threshold(cut_value))
    return float(_between(np.float32(lower), cut_value))


def _no_cut(scores: np.ndarray) -> GlobalResult:
    return GlobalResult(_none_threshold(scores.max()) if scores.size else 0.5, 0.0)


def _coarse_indices(size: int, count: int) -> np.ndarray:
    """About `count` evenly spaced indices into range(size), both ends included."""
    if size <= count:
        return np.arange(size)
    return np.unique(np.linspace(0, size - 1, count).round().astype(np.int64))


def _counts_at_cuts(scores: np.ndarray, positive: np.ndarray, cuts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-label (tp, predicted) [C, K] at `score >= cut` for ascending float32 cuts, in row chunks.

    Only scores inside [cuts[0], cuts[-1]] are binned (refinement cuts span a narrow band); scores above the
    band are counted for every cut, scores below it for none.
    """
    num_labels, size = scores.shape[1], cuts.size + 1
    lo, hi = cuts[0], cuts[-1]
    hist_all = np.zeros(num_labels * size, np.int64)
    hist_tp = np.zeros(num_labels * size, np.int64)
    above_all = np.zeros(num_labels, np.int64)
    above_tp = np.zeros(num_labels, np.int64)
    for start in range(0, scores.shape[0], ROW_CHUNK):
        chunk = scores[start:start + ROW_CHUNK]
        truth = positive[start:start + ROW_CHUNK]
        above = chunk > hi
        above_all += np.count_nonzero(above, axis=0)
        above_tp += np.count_nonzero(above & truth, axis=0)
        rows, cols = np.nonzero((chunk >= lo) & ~above)
        bins = np.searchsorted(cuts, chunk[rows, cols], side="right")  # the score is >= cuts[j] for j < bins
        flat = cols * size + bins
        hist_all += np.bincount(flat, minlength=hist_all.size)
        hist_tp += np.bincount(flat[truth[rows, cols]], minlength=hist_tp.size)

    def at_or_above(hist, above):
        suffix = np.cumsum(hist.reshape(num_labels, size)[:, ::-1], axis=1)[:, ::-1]
        return above[:, None] + suffix[:, 1:]

    return at_or_above(hist_tp, above_tp), at_or_above(hist_all, above_all)


def _objective_at(objective: str, tp: np.ndarray, predicted: np.ndarray, support: np.ndarray) -> np.ndarray:
    if objective == "micro":
        return _ratio(2 * tp.sum(axis=0), predicted.sum(axis=0) + support.sum())
    return _ratio(2 * tp, predicted + support[:, None]).mean(axis=0)


def _objective_bound(objective: str, tp_low_cut, fp_high_cut, support) -> np.ndarray:
    """Upper bound of the objective for any cut strictly between two neighbouring cuts: no cut in between has
    more TP than the lower cut nor fewer FP than the higher one, and F1 rises with TP and falls with FP."""
    if objective == "micro":
        tp = tp_low_cut.sum(axis=0)
        return _ratio(2 * tp, tp + fp_high_cut.sum(axis=0) + support.sum())
    return _ratio(2 * tp_low_cut, tp_low_cut + fp_high_cut + support[:, None]).mean(axis=0)


def _inside_gaps(size: int, idx: np.ndarray, gaps: np.ndarray) -> np.ndarray:
    """Mask of positions strictly between idx[g] and idx[g + 1] for each gap g."""
    marker = np.zeros(size + 1, np.int64)
    np.add.at(marker, idx[gaps] + 1, 1)
    np.add.at(marker, idx[gaps + 1], -1)
    return np.cumsum(marker[:-1]) > 0


def _global_by_bounds(scores, positive, objective, support, cut_values, first_idx, tp, predicted) -> GlobalResult:
    """Exact global micro/macro optimum over every distinct positive score, by branch and bound.

    Start from exact counts at coarse cuts (cut_values[first_idx]); between two neighbouring cuts the objective
    is bounded (see _objective_bound); only gaps whose bound beats the best exact value so far are opened, at
    a finer (eventually complete) set of cuts counted exactly. Every distinct positive score is either
    evaluated exactly or ruled out by a bound.
    """
    if cut_values.size == 0:
        return _no_cut(scores)
    evaluated = np.zeros(cut_values.size, bool)
    ruled_out = np.zeros(cut_values.size, bool)  # inside a gap whose bound was <= the best value at the time
    best_value, best_idx = -1.0, -1
    idx = first_idx
    while True:
        evaluated[idx] = True
        values = _objective_at(objective, tp, predicted, support)
        top = idx.size - 1 - int(np.argmax(values[::-1]))  # highest cut among equal values
        if values[top] > best_value or (values[top] == best_value and idx[top] > best_idx):
            best_value, best_idx = float(values[top]), int(idx[top])
        if idx.size < 2:
            break
        bound = _objective_bound(objective, tp[:, :-1], (predicted - tp)[:, 1:], support)
        is_open = bound > best_value + 1e-12
        ruled_out |= _inside_gaps(cut_values.size, idx, np.flatnonzero(~is_open))
        candidates = np.flatnonzero(_inside_gaps(cut_values.size, idx, np.flatnonzero(is_open))
                                    & ~evaluated & ~ruled_out)
        if candidates.size == 0:
            break
        idx = candidates[_coarse_indices(candidates.size, REFINE_CUTS)]
        tp, predicted = _counts_at_cuts(scores, positive, cut_values[idx])
    if best_value <= 0:
        return _no_cut(scores)
    return GlobalResult(_threshold_for_cut(scores, cut_values[best_idx]), best_value)


def _pick_global_from_events(scores: np.ndarray, cut_values: np.ndarray, events: np.ndarray, scale: float) -> GlobalResult:
    """events[j]: summed metric change when the cut passes cut_values[j] (ascending); value(j) = suffix sum."""
    if cut_values.size == 0:
        return _no_cut(scores)
    values = np.cumsum(events[::-1])[::-1] / scale
    best = int(np.argmax(values[::-1]))  # first maximum from the top = highest threshold among ties
    best = cut_values.size - 1 - best
    if values[best] <= 0:
        return _no_cut(scores)
    return GlobalResult(_threshold_for_cut(scores, cut_values[best]), float(values[best]))


def _global_samples(scores: np.ndarray, positive: np.ndarray) -> GlobalResult:
    """Exact: each image's F1 steps at its own scores; accumulate the steps on the global cut axis."""
    cut_values = np.unique(scores[positive])
    events = np.zeros(cut_values.size, np.float64)
    num_labels = scores.shape[1]
    rank = np.arange(1, num_labels + 1)
    for start in range(0, scores.shape[0], ROW_CHUNK // 4):
        chunk = scores[start:start + ROW_CHUNK // 4]
        order = np.argsort(chunk, axis=1)[:, ::-1]
        ordered = np.take_along_axis(chunk, order, axis=1)
        tp = np.cumsum(np.take_along_axis(positive[start:start + ROW_CHUNK // 4], order, axis=1), axis=1)
        f1 = 2 * tp / (rank + tp[:, -1:])
        step = np.diff(f1, axis=1, prepend=0.0)
        nonzero = step != 0
        values, weights = ordered[nonzero], step[nonzero]
        by_value = np.argsort(values)  # sorted queries make searchsorted cache friendly
        where = np.searchsorted(cut_values, values[by_value], side="right") - 1
        use = where >= 0
        events += np.bincount(where[use], weights=weights[by_value][use], minlength=cut_values.size)
    return _pick_global_from_events(scores, cut_values, events, scores.shape[0])


# ---------------------------------------------------------------------------------------------
# Per-label search
# ---------------------------------------------------------------------------------------------
def _micro_coordinate_ascent(sweeps: dict, tp, fp, thresholds, total_positives: int, order) -> int:
    """Improve pooled micro F1 one label at a time until a full pass changes nothing; returns passes run."""
    tp_all, fp_all = int(tp.sum()), int(fp.sum())
    for passes in range(1, MAX_ASCENT_PASSES + 1):
        changed = False
        for label in order:
            sweep = sweeps[label]
            tp_rest, fp_rest = tp_all - tp[label], fp_all - fp[label]
            cand_tp = tp_rest + sweep.tp
            cand_f1 = _ratio(2 * cand_tp, cand_tp + fp_rest + sweep.fp + total_positives)
            best = int(np.argmax(cand_f1))
            current = 2 * tp_all / (tp_all + fp_all + total_positives)
            if cand_f1[best] > current * (1 + 1e-12):
                tp_all += int(sweep.tp[best]) - int(tp[label])
                fp_all += int(sweep.fp[best]) - int(fp[label])
                tp[label], fp[label] = sweep.tp[best], sweep.fp[best]
                thresholds[label] = sweep.thresholds[best]
                changed = True
        if not changed:
            return passes
    return MAX_ASCENT_PASSES


def best_thresholds(scores, labels, objective: str = "micro", mode: str = "per_label",
                    min_positives: int = 1, progress: bool = False) -> tuple[np.ndarray, dict]:
    """F1-optimal thresholds [C] (float64) and an info dict (global threshold, fallbacks, warnings)."""
    objective, mode = _check_objective(objective), _check_mode(mode)
    scores, positive = _check_arrays(scores, labels)
    _check_finite(scores)
    num_images, num_labels = scores.shape
    support = np.count_nonzero(positive, axis=0)
    no_positives = np.flatnonzero(support == 0)
    rare = np.flatnonzero(support < max(int(min_positives), 1))
    notes = []

    all_global = mode == "global"
    if mode == "per_label" and objective == "samples":
        notes.append("samples objective with per_label mode: every label uses the global samples threshold")
        all_global = True
    searched = np.zeros(num_labels, bool)
    if not all_global:
        searched[:] = True
        searched[rare] = False
    passes = 0
    glob, sweeps = None, {}
    thresholds = np.zeros(num_labels)
    if objective == "samples":
        glob = _global_samples(scores, positive)
    else:
        # one pass over sorted columns: exact counts at coarse global cuts, and each searched label's sweep
        cut_values = np.unique(scores[positive])  # every distinct positive score, ascending
        first_idx = _coarse_indices(cut_values.size, COARSE_CUTS)
        first_cuts = cut_values[first_idx]
        tp_cut = np.zeros((num_labels, first_idx.size), np.int64)
        predicted_cut = np.zeros((num_labels, first_idx.size), np.int64)
        columns = _label_columns(scores, positive)
        if progress:
            from tqdm import tqdm

            columns = tqdm(columns, total=num_labels, desc="labels", unit="label", leave=False)
        for label, sorted_col, sorted_pos in columns:
            predicted_cut[label] = sorted_col.size - np.searchsorted(sorted_col, first_cuts, side="left")
            tp_cut[label] = sorted_pos.size - np.searchsorted(sorted_pos, first_cuts, side="left")
            if searched[label]:
                sweep = sweep_sorted(sorted_col, sorted_pos)
                if objective == "macro":
                    thresholds[label] = sweep.thresholds[int(np.argmax(sweep.f1()))]
                else:
                    sweeps[label] = sweep
        glob = _global_by_bounds(scores, positive, objective, support, cut_values, first_idx, tp_cut,
                                 predicted_cut)
    thresholds[~searched] = glob.threshold
    if objective == "micro" and searched.any():
        thresholds[searched] = glob.threshold  # coordinate ascent starts from the global optimum
        counts = _count(scores, positive, thresholds)
        tp, fp = counts["tp"], counts["predicted"] - counts["tp"]
        order = np.flatnonzero(searched)
        order = order[np.argsort(-support[order], kind="stable")]
        passes = _micro_coordinate_ascent(sweeps, tp, fp, thresholds, int(support.sum()), order)

    fit = f1_scores(scores, positive, thresholds)
    rate = fit["predicted"] / max(num_images, 1)
    high_rate = np.flatnonzero(rate > HIGH_POSITIVE_RATE)
    switched_off = np.flatnonzero((fit["predicted"] == 0) & (support > 0))
    info = {
        "objective": objective,
        "mode": mode,
        "min_positives": int(min_positives),
        "global_threshold": glob.threshold,
        "global_value": glob.value,
        "value": fit[objective],
        "support": support,
        "rare_labels": rare.tolist(),
        "no_positive_labels": no_positives.tolist(),
        "high_positive_rate_labels": high_rate.tolist(),
        "predicted_positive_rate": rate,
        "switched_off_labels": switched_off.tolist(),
        "ascent_passes": passes,
        "notes": notes,
        "all_global": all_global,
        "fit_metrics": fit,
    }
    return thresholds, info


# ---------------------------------------------------------------------------------------------
# Cross-validation
# ---------------------------------------------------------------------------------------------
def cv_folds(num_rows: int, k: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """K (train, test) index pairs; the test sets partition the rows, each train set is the rest (sorted)."""
    if k < 2:
        raise UserError(f"--cv must be at least 2, got {k}")
    if num_rows < k:
        raise UserError(f"--cv {k} needs at least {k} images, the predictions have {num_rows}")
    order = np.random.default_rng(seed).permutation(num_rows)
    folds = []
    for test in np.array_split(order, k):
        mask = np.ones(num_rows, bool)
        mask[test] = False
        folds.append((np.flatnonzero(mask), np.sort(test)))
    return folds


def _evaluate_on(scores, positive, thresholds_by_setting: dict) -> dict:
    return {name: f1_scores(scores, positive, thr) for name, thr in thresholds_by_setting.items()}


def cross_validate(scores, labels, k: int, objective="micro", mode="per_label", min_positives=1, seed=0,
                   progress=False) -> dict:
    """Choose thresholds on K-1 folds and score the held-out fold; final thresholds are the fold average."""
    scores, positive = _check_arrays(scores, labels)
    folds = cv_folds(scores.shape[0], k, seed)
    fold_thresholds, fold_globals, fold_metrics = [], [], []
    pooled = {name: None for name in SETTINGS}
    iterator = enumerate(folds)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, total=k, desc="cv folds", unit="fold", leave=False)
    for _, (train, test) in iterator:
        thr, info = best_thresholds(scores[train], positive[train], objective, mode, min_positives)
        test_scores, test_positive = scores[test], positive[test]
        metrics = _evaluate_on(test_scores, test_positive, {
            "at_0.5": 0.5, "best_global": info["global_threshold"], "per_label": thr})
        fold_thresholds.append(thr)
        fold_globals.append(info["global_threshold"])
        fold_metrics.append(metrics)
        for name, m in metrics.items():
            counts = np.stack([m["tp"], m["predicted"], m["support"]])
            if pooled[name] is None:
                pooled[name] = {"counts": counts, "image_f1_sum": 0.0}
            else:
                pooled[name]["counts"] += counts
            pooled[name]["image_f1_sum"] += m["samples"] * m["num_images"]
    pooled_metrics = {
        name: metrics_from_counts(*p["counts"], p["image_f1_sum"], scores.shape[0]) for name, p in pooled.items()}
    return {
        "folds": folds,
        "fold_thresholds": np.stack(fold_thresholds),
        "fold_global_thresholds": np.array(fold_globals),
        "fold_metrics": fold_metrics,
        "pooled_metrics": pooled_metrics,
        "thresholds": np.stack(fold_thresholds).mean(axis=0),
        "global_threshold": float(np.mean(fold_globals)),
    }


SETTINGS = ("at_0.5", "best_global", "per_label")
SETTING_TITLES = {"at_0.5": "threshold 0.5", "best_global": "best global threshold", "per_label": "per-label thresholds"}


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------
def find_run_dir(runs_root: str | Path) -> Path:
    """The most recently modified folder under runs_root that holds val_predictions.npz."""
    runs_root = Path(runs_root)
    if not runs_root.is_dir():
        raise UserError(f"{runs_root}: runs folder not found (pass --run-dir or --runs-root)")
    candidates = [p.parent for p in runs_root.rglob(PREDICTIONS_FILE) if p.is_file()]
    if not candidates:
        raise UserError(f"{runs_root}: no run folder with {PREDICTIONS_FILE} found (pass --run-dir)")
    return max(candidates, key=lambda d: (d.stat().st_mtime, str(d)))


def load_predictions(run_dir: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids [N], scores [N, C] float32, labels [N, C] bool) from <run_dir>/val_predictions.npz, validated."""
    path = Path(run_dir) / PREDICTIONS_FILE
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
    _check_finite(scores, f"{path}: 'scores'")
    if labels.dtype != bool:
        if not np.issubdtype(labels.dtype, np.number):
            raise UserError(f"{path}: 'labels' must be 0/1 numbers, got {labels.dtype}")
        if labels.min() < 0 or labels.max() > 1 or not np.issubdtype(labels.dtype, np.integer):
            bad = (labels != 0) & (labels != 1)
            if bad.any():
                row, col = np.argwhere(bad)[0]
                raise UserError(f"{path}: 'labels' must be 0/1, found {labels[row, col]!r} at row {row}, label {col}")
        # 0/1 bytes are valid booleans: a view instead of a 1-byte-per-entry copy
        labels = labels.view(bool) if labels.dtype.itemsize == 1 else labels != 0
    return ids, scores.astype(np.float32, copy=False), labels


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


def _check_finite(scores: np.ndarray, where: str = "scores") -> None:
    if scores.size and np.isfinite(scores.min()) and np.isfinite(scores.max()):  # NaN propagates through min/max
        return
    for start in range(0, scores.shape[0], ROW_CHUNK):
        bad = ~np.isfinite(scores[start:start + ROW_CHUNK])
        if bad.any():
            row, col = np.argwhere(bad)[0]
            value = scores[start + row, col]
            kind = "NaN" if np.isnan(value) else "infinite"
            raise UserError(f"{where} has a non-finite value: {kind} at row {start + row}, label {col}")


@dataclass
class LabelInfo:
    ids: list
    names: list
    groups: list


def load_label_info(run_dir: str | Path, num_labels: int) -> LabelInfo:
    """Label ids/names/groups from <run_dir>/label_map.json, or generic label_<i> names when absent."""
    path = Path(run_dir) / LABEL_MAP_FILE
    if not path.is_file():
        names = [f"label_{i}" for i in range(num_labels)]
        return LabelInfo(ids=[str(i) for i in range(num_labels)], names=names, groups=[FALLBACK_GROUP] * num_labels)
    from fashion_tf.labels import LabelMap

    label_map = LabelMap.from_json(path)
    if len(label_map) != num_labels:
        raise UserError(f"{path}: has {len(label_map)} labels but the scores have {num_labels} columns")
    return LabelInfo(list(label_map.ids), list(label_map.names), list(label_map.groups))


def thresholds_document(thresholds, labels: LabelInfo, objective, mode, global_threshold, cv=None) -> dict:
    return {
        "objective": objective,
        "mode": mode,
        "rule": "score >= threshold",
        "cv_folds": cv,
        "global_threshold": float(global_threshold),
        "num_labels": len(thresholds),
        "labels": [
            {"index": i, "id": labels.ids[i], "name": labels.names[i], "group": labels.groups[i],
             "threshold": float(t)}
            for i, t in enumerate(thresholds)
        ],
    }


def load_thresholds(path: str | Path) -> np.ndarray:
    """Per-label thresholds (float64 [C], by label index) from a thresholds.json."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        entries = sorted(data["labels"], key=lambda e: int(e["index"]))
        if [int(e["index"]) for e in entries] != list(range(len(entries))):
            raise UserError(f"{path}: label indices must be 0..{len(entries) - 1} without gaps")
        values = np.array([float(e["threshold"]) for e in entries], np.float64)
    except FileNotFoundError:
        raise UserError(f"{path}: thresholds file not found") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"{path}: not a thresholds.json ({type(err).__name__}: {err})") from None
    if not np.all(np.isfinite(values)):
        raise UserError(f"{path}: thresholds must be finite numbers")
    return values


# ---------------------------------------------------------------------------------------------
# Curves for the plots
# ---------------------------------------------------------------------------------------------
def global_f1_curves(scores: np.ndarray, positive: np.ndarray, grid: np.ndarray) -> dict:
    """micro, macro and samples F1 at each global threshold of an ascending grid (exact at those points)."""
    grid = np.asarray(grid, np.float64)
    size = grid.size + 1
    num_labels = scores.shape[1]
    label_tp = np.zeros((num_labels, size), np.int64)
    label_all = np.zeros((num_labels, size), np.int64)
    image_f1 = np.zeros(grid.size)
    label_index = np.arange(num_labels)
    for start in range(0, scores.shape[0], ROW_CHUNK // 4):
        chunk = scores[start:start + ROW_CHUNK // 4]
        truth = positive[start:start + ROW_CHUNK // 4]
        # bin b = number of grid points <= score: the score is predicted positive at grid[k] for every k < b
        bins = np.searchsorted(grid, chunk, side="right")
        flat_label = (label_index * size + bins).ravel()
        label_all += np.bincount(flat_label, minlength=num_labels * size).reshape(num_labels, size)
        label_tp += np.bincount(flat_label[truth.ravel()], minlength=num_labels * size).reshape(num_labels, size)
        rows = chunk.shape[0]
        flat_row = (np.arange(rows)[:, None] * size + bins).ravel()
        row_all = np.bincount(flat_row, minlength=rows * size).reshape(rows, size)
        row_tp = np.bincount(flat_row[truth.ravel()], minlength=rows * size).reshape(rows, size)
        row_pred = np.cumsum(row_all[:, ::-1], axis=1)[:, ::-1][:, 1:]  # predicted count at grid[k]
        row_hit = np.cumsum(row_tp[:, ::-1], axis=1)[:, ::-1][:, 1:]
        row_pos = truth.sum(axis=1, keepdims=True)
        image_f1 += _ratio(2 * row_hit, row_pred + row_pos).sum(axis=0)
    pred = np.cumsum(label_all[:, ::-1], axis=1)[:, ::-1][:, 1:]
    hit = np.cumsum(label_tp[:, ::-1], axis=1)[:, ::-1][:, 1:]
    support = np.count_nonzero(positive, axis=0)[:, None]
    per_label = _ratio(2 * hit, pred + support)
    return {
        "threshold": grid,
        "micro": _ratio(2 * hit.sum(axis=0), pred.sum(axis=0) + support.sum()),
        "macro": per_label.mean(axis=0),
        "samples": image_f1 / scores.shape[0],
    }


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------
def _summary(values: list[float]) -> dict:
    arr = np.asarray(values, np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std()) if arr.size > 1 else None,
            "folds": [float(v) for v in arr] if arr.size > 1 else None}


def _group_rows(metrics: dict, thresholds, labels: LabelInfo) -> list[dict]:
    rows = []
    groups = np.asarray(labels.groups)
    for group in dict.fromkeys(labels.groups):
        members = np.flatnonzero(groups == group)
        tp, pred, sup = (int(metrics[k][members].sum()) for k in ("tp", "predicted", "support"))
        rows.append({
            "group": group, "labels": int(members.size), "support": sup,
            "precision": float(_ratio(tp, pred)), "recall": float(_ratio(tp, sup)),
            "f1": float(_ratio(2 * tp, pred + sup)), "macro_f1": float(metrics["f1"][members].mean()),
            "mean_threshold": float(np.mean(np.asarray(thresholds)[members])),
        })
    return rows


def build_report(run_dir, labels: LabelInfo, thresholds, info: dict, headline: dict, per_label_metrics: dict,
                 cv: int | None, num_images: int) -> dict:
    rare = set(info["rare_labels"])
    label_rows = []
    for i, threshold in enumerate(thresholds):
        label_rows.append({
            "index": i, "id": labels.ids[i], "name": labels.names[i], "group": labels.groups[i],
            "support": int(per_label_metrics["support"][i]),
            "precision": float(per_label_metrics["precision"][i]),
            "recall": float(per_label_metrics["recall"][i]),
            "f1": float(per_label_metrics["f1"][i]),
            "threshold": float(threshold),
            "uses_global_threshold": i in rare or info["all_global"],
        })
    name_of = lambda idx: [f"{labels.ids[i]} ({labels.names[i]})" for i in idx]  # noqa: E731
    return {
        "run_dir": str(run_dir),
        "objective": info["objective"],
        "mode": info["mode"],
        "min_positives": info["min_positives"],
        "cv_folds": cv,
        "evaluation": (f"held-out folds of {cv}-fold cross-validation (mean and std over folds)" if cv
                       else "in-sample: thresholds chosen and measured on the same validation set"),
        "num_images": int(num_images),
        "num_labels": len(thresholds),
        "global_threshold": float(info["global_threshold"]),
        "headline": headline,
        "per_label_source": ("pooled held-out fold predictions, each fold with its own thresholds" if cv
                             else "in-sample"),
        "labels": label_rows,
        "groups": _group_rows(per_label_metrics, thresholds, labels),
        "no_positive_labels": name_of(info["no_positive_labels"]),
        "rare_labels_using_global": name_of(info["rare_labels"]),
        "high_positive_rate_labels": name_of(info["high_positive_rate_labels"]),
        "switched_off_labels": name_of(info["switched_off_labels"]),
        "ascent_passes": info["ascent_passes"],
        "notes": info["notes"],
    }


def _fmt(summary: dict) -> str:
    if summary["std"] is None:
        return f"{summary['mean']:.4f}"
    return f"{summary['mean']:.4f} ± {summary['std']:.4f}"


def report_markdown(report: dict) -> str:
    lines = [
        f"# Threshold report: {report['run_dir']}",
        "",
        f"- objective: **{report['objective']}** F1, mode: **{report['mode']}**, "
        f"min positives: {report['min_positives']}",
        f"- images: {report['num_images']}, labels: {report['num_labels']}, "
        f"global threshold: {report['global_threshold']:.6g}",
        f"- measured on: {report['evaluation']}",
        "",
        "## Headline F1",
        "",
        "| thresholds | micro | macro | samples |",
        "|---|---|---|---|",
    ]
    for setting in SETTINGS:
        row = report["headline"][setting]
        lines.append(f"| {SETTING_TITLES[setting]} | " + " | ".join(_fmt(row[m]) for m in OBJECTIVES) + " |")
    lines += ["", f"Per-label and per-group figures: {report['per_label_source']}.", ""]
    for title, key in (("Labels with no validation positives", "no_positive_labels"),
                       ("Rare labels using the global threshold", "rare_labels_using_global"),
                       ("Warning: labels predicted positive on more than 95% of images", "high_positive_rate_labels"),
                       ("Labels switched off (never predicted)", "switched_off_labels")):
        items = report[key]
        lines.append(f"- {title}: {len(items)}" + (f" — {', '.join(items[:50])}" if items else ""))
        if len(items) > 50:
            lines[-1] += f", … ({len(items) - 50} more in threshold_report.json)"
    for note in report["notes"]:
        lines.append(f"- note: {note}")
    lines += ["", "## Groups", "", "| group | labels | support | precision | recall | F1 (micro) | F1 (macro) | mean threshold |",
              "|---|---|---|---|---|---|---|---|"]
    for g in report["groups"]:
        lines.append(f"| {g['group']} | {g['labels']} | {g['support']} | {g['precision']:.4f} | {g['recall']:.4f} | "
                     f"{g['f1']:.4f} | {g['macro_f1']:.4f} | {g['mean_threshold']:.4f} |")
    lines += ["", "## Labels", "", "| index | id | name | group | support | precision | recall | F1 | threshold |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in report["labels"]:
        flag = " (global)" if r["uses_global_threshold"] and report["mode"] == "per_label" else ""
        lines.append(f"| {r['index']} | {r['id']} | {r['name']} | {r['group']} | {r['support']} | "
                     f"{r['precision']:.4f} | {r['recall']:.4f} | {r['f1']:.4f} | {r['threshold']:.6g}{flag} |")
    return "\n".join(lines) + "\n"


def _json_ready(obj):
    if isinstance(obj, dict):
        return {k: _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


CURVE_MAX_IMAGES = 100_000


def write_plots(plots_dir: Path, scores, positive, thresholds, report: dict, labels: LabelInfo,
                fit: dict) -> list[Path]:
    """PNG plots; `fit` holds in-sample metrics at `thresholds` (operating points on the PR curves)."""
    from fashion_tf import plots

    written = []
    f1 = np.array([r["f1"] for r in report["labels"]])
    names = [f"{r['name']} [{r['id']}] n={r['support']}" for r in report["labels"]]
    written.append(plots.sorted_bar_chart(
        f1, names, plots_dir / "per_label_f1.png",
        title=f"Per-label F1 ({report['objective']} objective, {report['mode']}; {report['per_label_source']})",
        xlabel="F1"))

    lo, hi = float(scores.min()), float(scores.max())
    grid = np.linspace(min(lo, 0.0), max(hi, 1.0), 201)
    sample = ""
    if scores.shape[0] > CURVE_MAX_IMAGES:  # the curve is a picture: a large random sample draws the same line
        rows = np.sort(np.random.default_rng(0).choice(scores.shape[0], CURVE_MAX_IMAGES, replace=False))
        curves = global_f1_curves(scores[rows], positive[rows], grid)
        sample = f"; curves on {CURVE_MAX_IMAGES:,} random images"
    else:
        curves = global_f1_curves(scores, positive, grid)
    chosen = report["global_threshold"]
    written.append(plots.line_chart(
        grid, {m: curves[m] for m in OBJECTIVES}, plots_dir / "f1_vs_global_threshold.png",
        title=f"F1 vs one global threshold (chosen for {report['objective']}: {chosen:.4f}{sample})",
        xlabel="global threshold (score >= threshold is positive)", ylabel="F1",
        vlines={f"chosen {chosen:.4f}": chosen}, highlight=report["objective"]))

    support = np.count_nonzero(positive, axis=0)
    top = [int(i) for i in np.argsort(-support, kind="stable")[:8] if support[i] > 0]
    curves_pr = []
    for label in top:
        sweep = sweep_label(scores[:, label], positive[:, label])
        curves_pr.append({
            "name": f"{labels.names[label]} [{labels.ids[label]}] (n={int(support[label])})",
            "recall": sweep.recall()[1:], "precision": sweep.precision()[1:],
            "point": (float(fit["recall"][label]), float(fit["precision"][label])),
            "point_label": f"t={thresholds[label]:.3f}, F1={fit['f1'][label]:.3f}",
        })
    if curves_pr:
        written.append(plots.pr_curves(curves_pr, plots_dir / "pr_curves_top_labels.png",
                                       title="Precision-recall, most frequent labels (dot: chosen threshold)"))
    return written


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
AUTO_CHOICES = ("0.5", "global", "per_label")  # on a tie the simpler comes first


def _best_on_held_out_folds(headline: dict, objective: str, per_label: np.ndarray, global_threshold: float):
    """(choice, mode, thresholds): whichever of the plain 0.5 cut, one fitted global threshold or per-label
    thresholds scored best on the held-out folds. Fitted cuts can lose: per-label ones overfit the few validation
    positives of a label, and on calibrated scores even one global cut may not beat 0.5."""
    scored = {"0.5": headline["at_0.5"], "global": headline["best_global"], "per_label": headline["per_label"]}
    choice = max(AUTO_CHOICES, key=lambda name: scored[name][objective]["mean"])
    if choice == "per_label":
        return choice, "per_label", per_label
    return choice, "global", np.full_like(per_label, 0.5 if choice == "0.5" else global_threshold)


def _check_objective(objective: str) -> str:
    if objective not in OBJECTIVES:
        raise UserError(f"unknown objective {objective!r} (choose from {', '.join(OBJECTIVES)})")
    return objective


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise UserError(f"unknown mode {mode!r} (choose from {', '.join(MODES)})")
    return mode


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fashion_tf.threshold_search",
        description="Exact F1-optimal thresholds from a run's val_predictions.npz.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--run-dir", help="run folder with val_predictions.npz (default: newest under --runs-root)")
    parser.add_argument("--runs-root", default="runs", help="where to look for the newest run folder")
    parser.add_argument("--objective", choices=OBJECTIVES, default="micro", help="F1 average to maximise")
    parser.add_argument("--mode", choices=(*MODES, "auto"), default="per_label",
                        help="one threshold per label, one for all, or (auto, with --cv) whichever of these and the plain 0.5 "
                             "scores best on the held-out folds")
    parser.add_argument("--cv", type=int, default=0, help="K-fold cross-validation of the thresholds (0: off)")
    parser.add_argument("--min-positives", type=int, default=5,
                        help="labels with fewer validation positives use the global threshold")
    parser.add_argument("--seed", type=int, default=0, help="seed of the CV fold split")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    started = time.perf_counter()
    if args.cv and args.cv < 2:
        raise UserError(f"--cv must be 0 (off) or at least 2, got {args.cv}")
    if args.min_positives < 0:
        raise UserError(f"--min-positives must be >= 0, got {args.min_positives}")
    run_dir = Path(args.run_dir) if args.run_dir else find_run_dir(args.runs_root)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: run folder not found")
    ids, scores, positive = load_predictions(run_dir)
    labels = load_label_info(run_dir, scores.shape[1])
    num_images = scores.shape[0]
    progress = sys.stderr.isatty()

    if args.mode == "auto" and not args.cv:
        raise UserError("--mode auto chooses 0.5, global or per_label by their held-out F1: give --cv K (e.g. --cv 5)")
    mode = "per_label" if args.mode == "auto" else args.mode
    chosen = mode
    thresholds, info = best_thresholds(scores, positive, args.objective, mode, args.min_positives, progress)
    if args.cv:
        cv = cross_validate(scores, positive, args.cv, args.objective, mode, args.min_positives, args.seed,
                            progress)
        thresholds = cv["thresholds"]
        info["global_threshold"] = cv["global_threshold"]
        headline = {s: {m: _summary([f[s][m] for f in cv["fold_metrics"]]) for m in OBJECTIVES} for s in SETTINGS}
        per_label_metrics = cv["pooled_metrics"]["per_label"]
        if args.mode == "auto":
            chosen, mode, thresholds = _best_on_held_out_folds(headline, args.objective, thresholds,
                                                                info["global_threshold"])
            info["mode"] = mode
    else:
        evaluated = {"at_0.5": f1_scores(scores, positive, 0.5),
                     "best_global": f1_scores(scores, positive, info["global_threshold"]),
                     "per_label": info["fit_metrics"]}
        headline = {s: {m: _summary([evaluated[s][m]]) for m in OBJECTIVES} for s in SETTINGS}
        per_label_metrics = info["fit_metrics"]

    fit = info["fit_metrics"]
    if args.cv:  # the warnings below concern the thresholds actually written: the fold averages
        fit = f1_scores(scores, positive, thresholds)
        info["predicted_positive_rate"] = fit["predicted"] / num_images
        info["high_positive_rate_labels"] = np.flatnonzero(info["predicted_positive_rate"] > HIGH_POSITIVE_RATE).tolist()
        info["switched_off_labels"] = np.flatnonzero((fit["predicted"] == 0) & (fit["support"] > 0)).tolist()
    report = build_report(run_dir, labels, thresholds, info, headline, per_label_metrics, args.cv or None, num_images)
    write_json_atomic(run_dir / THRESHOLDS_FILE, thresholds_document(
        thresholds, labels, args.objective, mode, info["global_threshold"], args.cv or None))
    write_json_atomic(run_dir / REPORT_JSON, _json_ready(report))
    write_bytes_atomic(run_dir / REPORT_MD, report_markdown(report).encode("utf-8"))
    plots_written = []
    if not args.no_plots:
        plots_written = write_plots(run_dir / PLOTS_DIR, scores, positive, thresholds, report, labels, fit)

    for idx in info["high_positive_rate_labels"]:
        print(f"warning: label {labels.ids[idx]} ({labels.names[idx]}) is predicted positive on "
              f"{info['predicted_positive_rate'][idx]:.1%} of validation images", file=sys.stderr)
    h = headline
    o = args.objective
    print(
        f"Threshold search ({o} F1, {'auto -> ' if args.mode == 'auto' else ''}{chosen}"
        f"{f', {args.cv}-fold CV' if args.cv else ', in-sample'}) on "
        f"{num_images} images x {scores.shape[1]} labels from {run_dir}: {o} F1 {_fmt(h['at_0.5'][o])} at 0.5, "
        f"{_fmt(h['best_global'][o])} at the best global threshold {info['global_threshold']:.4f}, "
        f"{_fmt(h['per_label'][o])} with per-label thresholds; {len(info['rare_labels'])} rare labels use the global "
        f"threshold ({len(info['no_positive_labels'])} without positives), "
        f"{len(info['high_positive_rate_labels'])} predicted on >95% of images; wrote {THRESHOLDS_FILE}, "
        f"{REPORT_MD}, {REPORT_JSON} and {len(plots_written)} plots in {time.perf_counter() - started:.1f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
