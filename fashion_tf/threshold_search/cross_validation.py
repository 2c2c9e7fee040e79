"""Honest F1 of fitted thresholds: choose them on K-1 folds, score the held-out fold.

Three settings are scored on every held-out fold (SETTINGS): the plain 0.5 cut, the fold's best global
threshold and its per-label thresholds. `--mode auto` keeps whichever of them scored best (`auto_choice`).
"""

from __future__ import annotations

import numpy as np

from fashion_tf.errors import UserError
from fashion_tf.threshold_search.best import best_thresholds
from fashion_tf.threshold_search.metrics import check_arrays, f1_scores, metrics_from_counts

SETTINGS = ("at_0.5", "best_global", "per_label")
AUTO_CHOICES = ("0.5", "global", "per_label")  # on a tie the simpler comes first


def check_fold_count(num_rows: int, k: int) -> None:
    if k < 2:
        raise UserError(f"--cv must be at least 2, got {k}")
    if num_rows < k:
        raise UserError(f"--cv {k} needs at least {k} images, the predictions have {num_rows}")


def cv_folds(num_rows: int, k: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """K (train, test) index pairs; the test sets partition the rows, each train set is the rest (sorted)."""
    check_fold_count(num_rows, k)
    order = np.random.default_rng(seed).permutation(num_rows)
    folds = []
    for test in np.array_split(order, k):
        mask = np.ones(num_rows, bool)
        mask[test] = False
        folds.append((np.flatnonzero(mask), np.sort(test)))
    return folds


def _with_progress(folds, progress: bool):
    if not progress:
        return folds
    from tqdm import tqdm

    return tqdm(folds, desc="cv folds", unit="fold", leave=False)


def _pool(pooled: dict, metrics: dict) -> None:
    """Add one fold's counts to the running totals of each setting."""
    for name, m in metrics.items():
        counts = np.stack([m["tp"], m["predicted"], m["support"]])
        if name not in pooled:
            pooled[name] = {"counts": counts, "image_f1_sum": 0.0}
        else:
            pooled[name]["counts"] += counts
        pooled[name]["image_f1_sum"] += m["samples"] * m["num_images"]


def cross_validate(scores, labels, k: int, objective="micro", mode="per_label", min_positives=1, seed=0,
                   progress=False) -> dict:
    """Choose thresholds on K-1 folds and score the held-out fold; final thresholds are the fold average."""
    scores, positive = check_arrays(scores, labels)
    folds = cv_folds(scores.shape[0], k, seed)
    fold_thresholds, fold_globals, fold_metrics = [], [], []
    pooled: dict = {}
    for train, test in _with_progress(folds, progress):
        thr, info = best_thresholds(scores[train], positive[train], objective, mode, min_positives)
        test_scores, test_positive = scores[test], positive[test]
        settings = {"at_0.5": 0.5, "best_global": info["global_threshold"], "per_label": thr}
        metrics = {name: f1_scores(test_scores, test_positive, t) for name, t in settings.items()}
        fold_thresholds.append(thr)
        fold_globals.append(info["global_threshold"])
        fold_metrics.append(metrics)
        _pool(pooled, metrics)
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


def auto_choice(headline: dict, objective: str, per_label: np.ndarray, global_threshold: float):
    """(choice, mode, thresholds): whichever of the plain 0.5 cut, one fitted global threshold or per-label
    thresholds scored best on the held-out folds. Fitted cuts can lose: per-label ones overfit the few validation
    positives of a label, and on calibrated scores even one global cut may not beat 0.5."""
    scored = {"0.5": headline["at_0.5"], "global": headline["best_global"], "per_label": headline["per_label"]}
    choice = max(AUTO_CHOICES, key=lambda name: scored[name][objective]["mean"])
    if choice == "per_label":
        return choice, "per_label", per_label
    return choice, "global", np.full_like(per_label, 0.5 if choice == "0.5" else global_threshold)
