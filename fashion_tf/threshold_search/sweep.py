"""Every useful cut of one label's scores, exactly, without a grid.

For one label, sort its scores once. A threshold only matters through the set {score >= t}, which is always
"every score at or above some distinct value u". F1 = 2TP / (TP + FP + P) only drops when the cut moves past
scores that are all negatives, so the optimum sits at a cut whose lowest included value u is the score of at
least one positive. For every distinct positive score u, TP(u) and FP(u) (ties at u included, as `>=` does)
come from two `searchsorted` calls on the sorted arrays: O(n log n) per label, no Python loop per image.

The stored threshold lies between u and the next lower distinct score (the float32 value nearest their midpoint
that is > the lower one, so float32 and float64 comparisons agree). Outer sentinels are 0 and 1 when the scores
lie in [0, 1]: "predict all" is placed midway between the lowest score and 0, "predict none" midway between
the highest score and 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fashion_tf.threshold_search.metrics import ratio

COLUMN_BLOCK = 32

_F32_INF = np.float32(np.inf)


# ---- threshold placement ------------------------------------------------------------------------------
def between(lower, upper) -> np.ndarray:
    """Float32-representable t with lower < t <= upper, nearest the midpoint (inputs float32, lower < upper)."""
    lower = np.asarray(lower, np.float32)
    upper = np.asarray(upper, np.float32)
    mid = ((lower.astype(np.float64) + upper.astype(np.float64)) / 2).astype(np.float32)
    return np.where(mid > lower, mid, np.nextafter(lower, _F32_INF)).astype(np.float64)


def all_threshold(lowest) -> np.ndarray:
    """Threshold that includes `lowest` (and everything above): midway to 0 for positive scores, else itself."""
    lowest = np.asarray(lowest, np.float32)
    safe = np.where(lowest > 0, lowest, np.float32(1))
    return np.where(lowest > 0, between(np.zeros_like(safe), safe), lowest.astype(np.float64))


def none_threshold(highest: float) -> float:
    """Threshold above every score: midway to 1 for scores below 1, else the next float32 up."""
    highest = np.float32(highest)
    if highest < 1:
        return float(between(highest, np.float32(1)))
    return float(np.nextafter(highest, _F32_INF))


# ---- sweeps -------------------------------------------------------------------------------------------
@dataclass
class Sweep:
    """Every useful cut of one score set, highest threshold first; index 0 is 'predict none'."""

    thresholds: np.ndarray  # float64 [K + 1], descending
    tp: np.ndarray  # int64 [K + 1]
    fp: np.ndarray  # int64 [K + 1]
    positives: int
    total: int

    def f1(self) -> np.ndarray:
        return ratio(2 * self.tp, self.tp + self.fp + self.positives)

    def precision(self) -> np.ndarray:
        return ratio(self.tp, self.tp + self.fp)

    def recall(self) -> np.ndarray:
        return ratio(self.tp, np.full_like(self.tp, self.positives))


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
    thresholds = np.where(has_lower, between(lower, cut_values), all_threshold(cut_values))
    top = none_threshold(sorted_scores[-1]) if n else 0.5
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


def label_columns(scores: np.ndarray, positive: np.ndarray, block: int = COLUMN_BLOCK):
    """Yield (label, sorted scores, sorted positive scores), copying a few columns at a time (cache friendly)."""
    for start in range(0, scores.shape[1], block):
        cols = np.ascontiguousarray(scores[:, start:start + block].T)
        truth = np.ascontiguousarray(positive[:, start:start + block].T)
        for offset in range(cols.shape[0]):
            col = cols[offset]
            yield start + offset, np.sort(col), np.sort(col[truth[offset]])
