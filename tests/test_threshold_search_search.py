"""search: Options checked in one place; search(options) on a run folder writes what it reports, reads back
exactly, and refuses scores that are not probabilities before writing anything."""

from __future__ import annotations

import json

import numpy as np
import pytest
from threshold_search_cases import make_run

from fashion_tf.errors import UserError
from fashion_tf.run_folder import RunFolder, read_predictions, read_thresholds
from fashion_tf.threshold_search import Options, best_thresholds, search


@pytest.mark.parametrize("fields,message", [
    ({"objective": "f2"}, "unknown objective 'f2'"),
    ({"mode": "each"}, "unknown mode 'each'"),
    ({"cv": 1}, "--cv must be 0 (off) or at least 2, got 1"),
    ({"cv": -2}, "--cv must be 0 (off) or at least 2, got -2"),
    ({"min_positives": -1}, "--min-positives must be >= 0, got -1"),
    ({"mode": "auto"}, "--mode auto chooses 0.5, global or per_label"),
])
def test_options_are_checked_when_made(fields, message):
    with pytest.raises(UserError) as caught:
        Options(run_dir="anywhere", **fields)
    assert message in str(caught.value)


def test_search_writes_what_it_reports_and_the_thresholds_read_back_exactly(tmp_path):
    make_run(tmp_path / "r")
    summary = search(Options(run_dir=tmp_path / "r", objective="macro", min_positives=3, plots=False))
    folder = RunFolder(tmp_path / "r")
    _, scores, positive = read_predictions(folder)
    expected, info = best_thresholds(scores, positive, "macro", "per_label", min_positives=3)
    assert np.array_equal(read_thresholds(folder.thresholds), expected)
    report = json.loads(folder.threshold_report_json.read_text())
    assert summary["f1"]["per_label"]["mean"] == report["headline"]["per_label"]["macro"]["mean"] == info["value"]
    assert summary["global_threshold"] == report["global_threshold"] == info["global_threshold"]
    assert (summary["num_images"], summary["num_labels"]) == (120, 12)
    assert summary["rare_labels"] == len(info["rare_labels"]) > 0
    assert summary["files"] == [folder.thresholds, folder.threshold_report_md, folder.threshold_report_json]
    assert summary["plots"] == [] and not folder.plots.exists()


def test_compressed_and_uncompressed_predictions_give_the_same_thresholds(tmp_path):
    make_run(tmp_path / "plain")
    (tmp_path / "packed").mkdir()
    with np.load(tmp_path / "plain" / "val_predictions.npz") as data:
        np.savez_compressed(tmp_path / "packed" / "val_predictions.npz", **data)
    for name in ("plain", "packed"):
        search(Options(run_dir=tmp_path / name, plots=False))
    plain, packed = (read_thresholds(RunFolder(tmp_path / name).thresholds) for name in ("plain", "packed"))
    assert np.array_equal(plain, packed)


@pytest.mark.parametrize("bad", [1.7, -0.2])
def test_scores_outside_zero_one_are_refused_before_anything_is_written(tmp_path, bad):
    scores = np.full((120, 12), 0.5, np.float32)
    scores[9, 4] = bad
    make_run(tmp_path / "r", scores=scores)
    before = sorted(path.name for path in (tmp_path / "r").iterdir())
    with pytest.raises(UserError) as caught:
        search(Options(run_dir=tmp_path / "r"))
    message = str(caught.value)
    assert "val_predictions.npz" in message and f"{bad:g}, outside [0, 1]" in message and "row 9, label 4" in message
    assert sorted(path.name for path in (tmp_path / "r").iterdir()) == before
