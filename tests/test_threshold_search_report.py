"""report: headline figures, per-group sums, long lists cut in the markdown, strict-JSON values."""

from __future__ import annotations

import json

import numpy as np
from threshold_search_cases import random_case

from fashion_tf.labels import LabelMap
from fashion_tf.threshold_search import best_thresholds, f1_scores
from fashion_tf.threshold_search.report import build_report, headline, json_ready, report_markdown


def _report(num_labels: int = 6, rare: int = 1):
    scores, labels = random_case(4, n=40, c=num_labels)
    thresholds, info = best_thresholds(scores, labels, "micro", "per_label", min_positives=rare)
    label_map = LabelMap.from_groups([("colour", [f"c{i}" for i in range(num_labels // 2)]),
                                      ("type", [f"t{i}" for i in range(num_labels - num_labels // 2)])])
    in_sample = {"at_0.5": f1_scores(scores, labels, 0.5), "best_global": f1_scores(scores, labels, 0.4),
                 "per_label": info["fit_metrics"]}
    return build_report("RUN", label_map, thresholds, info, headline([in_sample]), info["fit_metrics"], None, 40)


def test_headline_has_mean_and_fold_spread_only_with_folds():
    folds = [{s: {"micro": v, "macro": v, "samples": v} for s in ("at_0.5", "best_global", "per_label")}
             for v in (0.5, 0.7)]
    figures = headline(folds)["per_label"]["micro"]
    assert np.isclose(figures["mean"], 0.6) and np.isclose(figures["std"], 0.1) and figures["folds"] == [0.5, 0.7]
    assert headline(folds[:1])["at_0.5"]["macro"] == {"mean": 0.5, "std": None, "folds": None}


def test_groups_sum_their_labels():
    report = _report()
    for group in report["groups"]:
        members = [row for row in report["labels"] if row["group"] == group["group"]]
        assert group["labels"] == len(members) == 3
        assert group["support"] == sum(row["support"] for row in members)
        assert np.isclose(group["macro_f1"], np.mean([row["f1"] for row in members]))


def test_markdown_cuts_long_lists_and_points_to_the_json():
    report = _report(num_labels=60, rare=10_000)  # every label rare: all 60 listed
    markdown = report_markdown(report, "report.json")
    assert "Rare labels using the global threshold: 60" in markdown
    assert "(10 more in report.json)" in markdown
    table_rows = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert len(table_rows) == (1 + 3) + (1 + 2) + (1 + 60)  # header and rows: headline, groups, labels


def test_json_ready_gives_strict_json():
    value = json_ready({"a": np.float32(0.5), "b": np.arange(3), "c": [float("nan"), np.int64(2)], "d": (1, 2)})
    assert json.loads(json.dumps(value, allow_nan=False)) == {"a": 0.5, "b": [0, 1, 2], "c": [None, 2], "d": [1, 2]}
