"""run_folder: the thresholds.json and val_predictions.npz contracts (moved here from the threshold search's
tests when their readers moved to run_folder)."""

from __future__ import annotations

import numpy as np
import pytest

from fashion_tf.errors import UserError
from fashion_tf.fileio import write_json_atomic
from fashion_tf.run_folder import RunFolder, read_predictions, read_thresholds, thresholds_document, write_predictions


def test_thresholds_json_round_trip_is_exact_and_bad_files_are_named(tmp_path):
    thresholds = np.array([0.1, 1 / 3, np.nextafter(0.5, 1), 0.9])
    doc = thresholds_document(thresholds, ["1", "2", "3", "4"], ["red", "blue", "shirt", "dress"],
                              ["colour", "colour", "type", "type"], "micro", "per_label", 0.4)
    write_json_atomic(tmp_path / "thresholds.json", doc)
    assert np.array_equal(read_thresholds(tmp_path / "thresholds.json"), thresholds)
    (tmp_path / "bad.json").write_text('{"labels": [{"index": 1, "threshold": 0.5}]}')
    with pytest.raises(UserError, match="bad.json"):
        read_thresholds(tmp_path / "bad.json")
    with pytest.raises(UserError, match="not found"):
        read_thresholds(tmp_path / "missing.json")


def test_compressed_and_uncompressed_npz_read_the_same(tmp_path):
    rng = np.random.default_rng(0)
    ids, scores = np.arange(30), rng.random((30, 4)).astype(np.float32)
    labels = (rng.random((30, 4)) < 0.3).astype(np.uint8)
    packed = RunFolder(tmp_path / "packed")
    packed.root.mkdir()
    write_predictions(packed, ids, scores, labels)  # compressed
    plain = RunFolder(tmp_path / "plain")
    plain.root.mkdir()
    np.savez(plain.val_predictions, ids=ids, scores=scores, labels=labels)
    for a, b in zip(read_predictions(plain), read_predictions(packed)):
        assert np.array_equal(a, b)
    _, scores_read, labels_read = read_predictions(plain)
    assert scores_read.dtype == np.float32 and labels_read.dtype == bool
