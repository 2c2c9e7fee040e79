"""The exact best single threshold for all labels.

micro/macro: exact over every distinct positive score of all labels, by branch and bound: exact counts at
~16,000 coarse cuts (from the sorted columns, `CoarseCounts`), an upper bound of F1 between neighbouring cuts
(no cut in between has more TP than the lower one nor fewer FP than the higher one), and exact counts at every
cut inside the gaps whose bound beats the best value found (one row pass over the narrow band of scores).

samples (mean per-image F1): exact sweep; each image's F1 steps at its own scores, and the steps are
accumulated as events on the global score axis.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fashion_tf.threshold_search.metrics import ROW_CHUNK, ratio
from fashion_tf.threshold_search.sweep import all_threshold, between, none_threshold

COARSE_CUTS = 16384  # first level of the branch and bound (from the sorted columns)
REFINE_CUTS = 65536  # later levels (one row pass each over the narrow band of surviving scores)


@dataclass
class GlobalResult:
    threshold: float
    value: float  # the objective at that threshold (in-sample)


# ---- placing the threshold of a cut ------------------------------------------------------------------
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
        return float(all_threshold(cut_value))
    return float(between(np.float32(lower), cut_value))


def _no_cut(scores: np.ndarray) -> GlobalResult:
    return GlobalResult(none_threshold(scores.max()) if scores.size else 0.5, 0.0)


# ---- micro and macro: branch and bound -----------------------------------------------------------------
def coarse_indices(size: int, count: int) -> np.ndarray:
    """About `count` evenly spaced indices into range(size), both ends included."""
    if size <= count:
        return np.arange(size)
    return np.unique(np.linspace(0, size - 1, count).round().astype(np.int64))


class CoarseCounts:
    """Exact per-label counts at the first level's cuts, filled one sorted column at a time (the columns that
    the per-label search sorts anyway)."""

    def __init__(self, scores: np.ndarray, positive: np.ndarray):
        self.cut_values = np.unique(scores[positive])  # every distinct positive score, ascending
        self.first_idx = coarse_indices(self.cut_values.size, COARSE_CUTS)
        self._first_cuts = self.cut_values[self.first_idx]
        num_labels = scores.shape[1]
        self.tp = np.zeros((num_labels, self.first_idx.size), np.int64)
        self.predicted = np.zeros((num_labels, self.first_idx.size), np.int64)

    def add_column(self, label: int, sorted_scores: np.ndarray, sorted_positive_scores: np.ndarray) -> None:
        self.predicted[label] = sorted_scores.size - np.searchsorted(sorted_scores, self._first_cuts, side="left")
        self.tp[label] = sorted_positive_scores.size - np.searchsorted(sorted_positive_scores, self._first_cuts,
                                                                       side="left")


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
        return ratio(2 * tp.sum(axis=0), predicted.sum(axis=0) + support.sum())
    return ratio(2 * tp, predicted + support[:, None]).mean(axis=0)


def _objective_bound(objective: str, tp_low_cut, fp_high_cut, support) -> np.ndarray:
    """Upper bound of the objective for any cut strictly between two neighbouring cuts: no cut in between has
    more TP than the lower cut nor fewer FP than the higher one, and F1 rises with TP and falls with FP."""
    if objective == "micro":
        tp = tp_low_cut.sum(axis=0)
        return ratio(2 * tp, tp + fp_high_cut.sum(axis=0) + support.sum())
    return ratio(2 * tp_low_cut, tp_low_cut + fp_high_cut + support[:, None]).mean(axis=0)


def _inside_gaps(size: int, idx: np.ndarray, gaps: np.ndarray) -> np.ndarray:
    """Mask of positions strictly between idx[g] and idx[g + 1] for each gap g."""
    marker = np.zeros(size + 1, np.int64)
    np.add.at(marker, idx[gaps] + 1, 1)
    np.add.at(marker, idx[gaps + 1], -1)
    return np.cumsum(marker[:-1]) > 0


def global_by_bounds(scores, positive, objective: str, support, coarse: CoarseCounts) -> GlobalResult:
    """Exact global micro/macro optimum over every distinct positive score, by branch and bound.

    Start from exact counts at the coarse cuts; between two neighbouring cuts the objective is bounded (see
    _objective_bound); only gaps whose bound beats the best exact value so far are opened, at a finer
    (eventually complete) set of cuts counted exactly. Every distinct positive score is either evaluated
    exactly or ruled out by a bound.
    """
    cut_values = coarse.cut_values
    if cut_values.size == 0:
        return _no_cut(scores)
    evaluated = np.zeros(cut_values.size, bool)
    ruled_out = np.zeros(cut_values.size, bool)  # inside a gap whose bound was <= the best value at the time
    best_value, best_idx = -1.0, -1
    idx, tp, predicted = coarse.first_idx, coarse.tp, coarse.predicted
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
        idx = candidates[coarse_indices(candidates.size, REFINE_CUTS)]
        tp, predicted = _counts_at_cuts(scores, positive, cut_values[idx])
    if best_value <= 0:
        return _no_cut(scores)
    return GlobalResult(_threshold_for_cut(scores, cut_values[best_idx]), best_value)


# ---- samples: per-image F1 events ----------------------------------------------------------------------
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


def global_samples(scores: np.ndarray, positive: np.ndarray) -> GlobalResult:
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
