"""plots: the F1 curves are exact at their grid points; the PNGs are real, readable images."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from threshold_search_cases import random_case

from fashion_tf.labels import LabelMap
from fashion_tf.threshold_search import best_thresholds, f1_scores
from fashion_tf.threshold_search.metrics import OBJECTIVES
from fashion_tf.threshold_search.plots import global_f1_curves, write_plots
from fashion_tf.threshold_search.report import build_report, headline


def test_curves_agree_with_f1_scores_at_every_grid_point():
    scores, labels = random_case(31, n=50, c=6)
    grid = np.linspace(0, 1, 11)
    curves = global_f1_curves(scores, labels.astype(bool), grid)
    for k, t in enumerate(grid):
        at_t = f1_scores(scores, labels, t)
        for average in OBJECTIVES:
            assert curves[average][k] == pytest.approx(at_t[average], abs=1e-12)


def _plots(tmp_path, labels):
    scores = np.random.default_rng(2).random(labels.shape).astype(np.float32)
    thresholds, info = best_thresholds(scores, labels, "macro", "per_label")
    label_map = LabelMap.from_ids(range(labels.shape[1]))
    fit = info["fit_metrics"]
    figures = headline([{"at_0.5": fit, "best_global": fit, "per_label": fit}])
    report = build_report(tmp_path, label_map, thresholds, info, figures, fit, None, labels.shape[0])
    return write_plots(tmp_path / "plots", scores, labels.astype(bool), thresholds, report, label_map, fit)


def test_plots_are_png_images_and_pr_curves_need_positives(tmp_path):
    labels = (np.random.default_rng(1).random((40, 4)) < 0.3).astype(np.uint8)
    written = _plots(tmp_path / "some", labels)
    assert [p.name for p in written] == ["per_label_f1.png", "f1_vs_global_threshold.png", "pr_curves_top_labels.png"]
    for path in written:
        with Image.open(path) as image:
            assert image.format == "PNG"
            image.verify()
    assert [p.name for p in _plots(tmp_path / "none", np.zeros((40, 4), np.uint8))] == [
        "per_label_f1.png", "f1_vs_global_threshold.png"]
