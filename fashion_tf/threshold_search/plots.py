"""The threshold search's pictures: per-label F1, F1 against one global threshold, PR curves of top labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fashion_tf.threshold_search.metrics import OBJECTIVES, ROW_CHUNK, ratio
from fashion_tf.threshold_search.sweep import sweep_label

CURVE_MAX_IMAGES = 100_000
PR_CURVE_LABELS = 8


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
        image_f1 += ratio(2 * row_hit, row_pred + row_pos).sum(axis=0)
    pred = np.cumsum(label_all[:, ::-1], axis=1)[:, ::-1][:, 1:]
    hit = np.cumsum(label_tp[:, ::-1], axis=1)[:, ::-1][:, 1:]
    support = np.count_nonzero(positive, axis=0)[:, None]
    per_label = ratio(2 * hit, pred + support)
    return {
        "threshold": grid,
        "micro": ratio(2 * hit.sum(axis=0), pred.sum(axis=0) + support.sum()),
        "macro": per_label.mean(axis=0),
        "samples": image_f1 / scores.shape[0],
    }


def write_plots(plots_dir: Path, scores, positive, thresholds, report: dict, label_map, fit: dict) -> list[Path]:
    """PNG plots; `fit` holds in-sample metrics at `thresholds` (operating points on the PR curves)."""
    return [
        _per_label_f1(plots_dir, report),
        _f1_vs_global_threshold(plots_dir, scores, positive, report),
        *_pr_curves(plots_dir, scores, positive, thresholds, label_map, fit),
    ]


def _per_label_f1(plots_dir: Path, report: dict) -> Path:
    from fashion_tf import plots as charts

    f1 = np.array([r["f1"] for r in report["labels"]])
    names = [f"{r['name']} [{r['id']}] n={r['support']}" for r in report["labels"]]
    return charts.sorted_bar_chart(
        f1, names, plots_dir / "per_label_f1.png",
        title=f"Per-label F1 ({report['objective']} objective, {report['mode']}; {report['per_label_source']})",
        xlabel="F1")


def _f1_vs_global_threshold(plots_dir: Path, scores, positive, report: dict) -> Path:
    from fashion_tf import plots as charts

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
    return charts.line_chart(
        grid, {m: curves[m] for m in OBJECTIVES}, plots_dir / "f1_vs_global_threshold.png",
        title=f"F1 vs one global threshold (chosen for {report['objective']}: {chosen:.4f}{sample})",
        xlabel="global threshold (score >= threshold is positive)", ylabel="F1",
        vlines={f"chosen {chosen:.4f}": chosen}, highlight=report["objective"])


def _pr_curves(plots_dir: Path, scores, positive, thresholds, label_map, fit: dict) -> list[Path]:
    """Precision-recall of the most frequent labels, with the chosen operating point; none without positives."""
    from fashion_tf import plots as charts

    support = np.count_nonzero(positive, axis=0)
    top = [int(i) for i in np.argsort(-support, kind="stable")[:PR_CURVE_LABELS] if support[i] > 0]
    curves = []
    for label in top:
        sweep = sweep_label(scores[:, label], positive[:, label])
        curves.append({
            "name": f"{label_map.names[label]} [{label_map.ids[label]}] (n={int(support[label])})",
            "recall": sweep.recall()[1:], "precision": sweep.precision()[1:],
            "point": (float(fit["recall"][label]), float(fit["precision"][label])),
            "point_label": f"t={thresholds[label]:.3f}, F1={fit['f1'][label]:.3f}",
        })
    if not curves:
        return []
    return [charts.pr_curves(curves, plots_dir / "pr_curves_top_labels.png",
                             title="Precision-recall, most frequent labels (dot: chosen threshold)")]
