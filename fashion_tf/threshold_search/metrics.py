"""F1 at given thresholds: the `score >= threshold` decision, per-label counts and the three averages.

Edge conventions match sklearn with zero_division=0: F1 of a label (or image) with no positives and no
predictions is 0, and macro averages over all C labels.
"""

from __future__ import annotations

import numpy as np

from fashion_tf.errors import UserError

OBJECTIVES = ("micro", "macro", "samples")
ROW_CHUNK = 16384


def ratio(num, den) -> np.ndarray:
    """num / den elementwise, 0 where den is 0."""
    num = np.asarray(num, np.float64)
    den = np.asarray(den, np.float64)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)


def check_arrays(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    """(scores float32 [N, C], positive bool [N, C]); UserError on shapes or types that cannot be scored."""
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


def threshold_vector(thresholds, num_labels: int) -> np.ndarray:
    """float64 [C] from a scalar or a [C] sequence."""
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
    return scores >= threshold_vector(thresholds, scores.shape[1])


def count_at(scores: np.ndarray, positive: np.ndarray, thresholds: np.ndarray) -> dict:
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
        image_f1_sum += float(ratio(2 * np.count_nonzero(hit, axis=1), row_den).sum())
    return {"tp": tp, "predicted": predicted, "image_f1_sum": image_f1_sum}


def metrics_from_counts(tp, predicted, support, image_f1_sum: float, num_images: int) -> dict:
    tp = np.asarray(tp, np.int64)
    predicted = np.asarray(predicted, np.int64)
    support = np.asarray(support, np.int64)
    f1 = ratio(2 * tp, predicted + support)
    return {
        "micro": float(ratio(2 * tp.sum(), predicted.sum() + support.sum())),
        "macro": float(f1.mean()) if f1.size else 0.0,
        "samples": image_f1_sum / num_images if num_images else 0.0,
        "precision": ratio(tp, predicted),
        "recall": ratio(tp, support),
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
    scores, positive = check_arrays(scores, labels)
    counts = count_at(scores, positive, threshold_vector(thresholds, scores.shape[1]))
    support = np.count_nonzero(positive, axis=0)
    return metrics_from_counts(counts["tp"], counts["predicted"], support, counts["image_f1_sum"], scores.shape[0])
