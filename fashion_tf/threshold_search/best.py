"""best_thresholds: the F1-optimal thresholds of one objective, one per label or one for all.

Objectives and modes:
- macro: mean of per-label F1. per_label: each label's own optimum (sweep.py). global: global_threshold.py.
- micro: F1 of the pooled TP/FP/FN. per_label: coordinate ascent on the pooled counts, starting from the global
  optimum; each step sets one label to its best cut given the others, passes repeat until none improves (a local
  optimum: no single-label change helps). A label may end "switched off" (threshold above all its scores) when
  any prediction of it lowers micro F1.
- samples: mean per-image F1 (Kaggle iMaterialist metric). global: exact sweep. per_label: falls back to the
  global samples threshold for every label (a per-label search on a per-image metric couples all labels of an
  image; documented, reported).

Labels with fewer than `min_positives` positives (and always those with none) get the global threshold of the
same objective.
"""

from __future__ import annotations

import numpy as np

from fashion_tf.errors import UserError
from fashion_tf.run_folder import check_probabilities
from fashion_tf.threshold_search.global_threshold import CoarseCounts, global_by_bounds, global_samples
from fashion_tf.threshold_search.metrics import OBJECTIVES, check_arrays, count_at, f1_scores, ratio
from fashion_tf.threshold_search.sweep import label_columns, sweep_sorted

MODES = ("per_label", "global")
HIGH_POSITIVE_RATE = 0.95
MAX_ASCENT_PASSES = 25


def check_objective(objective: str) -> str:
    if objective not in OBJECTIVES:
        raise UserError(f"unknown objective {objective!r} (choose from {', '.join(OBJECTIVES)})")
    return objective


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise UserError(f"unknown mode {mode!r} (choose from {', '.join(MODES)})")
    return mode


def _micro_coordinate_ascent(sweeps: dict, tp, fp, thresholds, total_positives: int, order) -> int:
    """Improve pooled micro F1 one label at a time until a full pass changes nothing; returns passes run."""
    tp_all, fp_all = int(tp.sum()), int(fp.sum())
    for passes in range(1, MAX_ASCENT_PASSES + 1):
        changed = False
        for label in order:
            sweep = sweeps[label]
            tp_rest, fp_rest = tp_all - tp[label], fp_all - fp[label]
            cand_tp = tp_rest + sweep.tp
            cand_f1 = ratio(2 * cand_tp, cand_tp + fp_rest + sweep.fp + total_positives)
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


def _with_progress(columns, total: int, progress: bool):
    if not progress:
        return columns
    from tqdm import tqdm

    return tqdm(columns, total=total, desc="labels", unit="label", leave=False)


def best_thresholds(scores, labels, objective: str = "micro", mode: str = "per_label",
                    min_positives: int = 1, progress: bool = False) -> tuple[np.ndarray, dict]:
    """F1-optimal thresholds [C] (float64) and an info dict (global threshold, fallbacks, warnings).

    Scores must be probabilities (finite, in [0, 1]); UserError naming the row and label otherwise.
    """
    objective, mode = check_objective(objective), check_mode(mode)
    scores, positive = check_arrays(scores, labels)
    check_probabilities(scores)
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
    sweeps = {}
    thresholds = np.zeros(num_labels)
    if objective == "samples":
        glob = global_samples(scores, positive)
    else:
        # one pass over sorted columns: exact counts at coarse global cuts, and each searched label's sweep
        coarse = CoarseCounts(scores, positive)
        for label, sorted_col, sorted_pos in _with_progress(label_columns(scores, positive), num_labels, progress):
            coarse.add_column(label, sorted_col, sorted_pos)
            if searched[label]:
                sweep = sweep_sorted(sorted_col, sorted_pos)
                if objective == "macro":
                    thresholds[label] = sweep.thresholds[int(np.argmax(sweep.f1()))]
                else:
                    sweeps[label] = sweep
        glob = global_by_bounds(scores, positive, objective, support, coarse)
    thresholds[~searched] = glob.threshold
    if objective == "micro" and searched.any():
        thresholds[searched] = glob.threshold  # coordinate ascent starts from the global optimum
        counts = count_at(scores, positive, thresholds)
        tp, fp = counts["tp"], counts["predicted"] - counts["tp"]
        order = np.flatnonzero(searched)
        order = order[np.argsort(-support[order], kind="stable")]
        passes = _micro_coordinate_ascent(sweeps, tp, fp, thresholds, int(support.sum()), order)

    fit = f1_scores(scores, positive, thresholds)
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
        "ascent_passes": passes,
        "notes": notes,
        "all_global": all_global,
        "fit_metrics": fit,
        **decision_warnings(fit, num_images),
    }
    return thresholds, info


def decision_warnings(fit: dict, num_images: int) -> dict:
    """Labels predicted on almost every image, and labels with positives that are never predicted."""
    rate = fit["predicted"] / max(num_images, 1)
    return {
        "predicted_positive_rate": rate,
        "high_positive_rate_labels": np.flatnonzero(rate > HIGH_POSITIVE_RATE).tolist(),
        "switched_off_labels": np.flatnonzero((fit["predicted"] == 0) & (fit["support"] > 0)).tolist(),
    }
