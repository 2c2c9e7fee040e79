"""fashion_tf.run_folder: names, a run's safe start (refuse, overwrite aside, finish), predictions and thresholds."""

from __future__ import annotations

import os

import numpy as np
import pytest

from fashion_tf.errors import UserError
from fashion_tf.fileio import write_json_atomic
from fashion_tf.run_folder import (PREVIOUS_RUN, RunFolder, newest_run, read_predictions, read_thresholds,
                                   thresholds_document, write_predictions)


def earlier_run(root) -> RunFolder:
    run = RunFolder(root)
    run.checkpoints.mkdir(parents=True)
    run.config.write_text('{"old": true}')
    run.history.write_text("epoch,loss\n0,1.0\n")
    run.epoch_weights(1).write_bytes(b"weights")
    return run


def snapshot(root) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_names_are_those_the_stages_read():
    run = RunFolder("runs/x")
    assert run.model.name == "model.keras" and run.val_predictions.name == "val_predictions.npz"
    assert run.epoch_weights(7).as_posix() == "runs/x/checkpoints/epoch-0007.weights.h5"
    assert run.worker("worker_1").root.as_posix() == "runs/x/workers/worker_1"


def test_a_fresh_start_on_an_earlier_run_is_refused_and_touches_nothing(tmp_path):
    run = earlier_run(tmp_path / "run")
    before = snapshot(run.root)
    with pytest.raises(UserError, match="holds an earlier run .*--resume.*--overwrite"):
        run.begin(resume=False, overwrite=False)
    assert snapshot(run.root) == before
    run.begin(resume=True, overwrite=False)  # resuming keeps everything
    assert snapshot(run.root) == before


def test_overwrite_keeps_the_earlier_run_aside_until_the_new_one_finishes(tmp_path):
    run = earlier_run(tmp_path / "run")
    before = snapshot(run.root)
    run.begin(resume=False, overwrite=True)
    aside = run.root / PREVIOUS_RUN
    assert run.outputs() == [] and snapshot(aside) == before
    run.config.write_text('{"new": 1}')  # the new run starts, then fails: the earlier run is still there
    run.begin(resume=False, overwrite=True)  # a second overwrite replaces the failed attempt only
    assert snapshot(aside) == before and not run.config.exists()
    run.finish()
    assert not aside.exists()


def test_a_folder_that_is_a_file_is_one_line_before_anything(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="is a file, not a folder"):
        RunFolder(blocker / "run").check_can_start(False, False)


def test_predictions_round_trip_and_scores_must_be_probabilities(tmp_path):
    run = RunFolder(tmp_path)
    ids = np.array(["a", "b"])
    scores = np.array([[0.1, 0.9], [0.0, 1.0]], np.float32)
    labels = np.array([[0, 1], [1, 1]], np.uint8)
    write_predictions(run, ids, scores, labels)
    got_ids, got_scores, got_labels = read_predictions(run)
    assert got_ids.tolist() == ["a", "b"] and got_labels.dtype == bool
    np.testing.assert_array_equal(got_scores, scores)
    for bad, what in ((1.7, "1.7, outside"), (-0.2, "-0.2, outside"), (np.nan, "NaN"), (np.inf, "infinite")):
        scores[1, 0] = bad
        write_predictions(run, ids, scores, labels)
        with pytest.raises(UserError, match=rf"val_predictions.npz: 'scores' must be probabilities; found {what}.* row 1, label 0"):
            read_predictions(run)


def test_newest_run_skips_an_overwritten_run_kept_aside(tmp_path):
    for name in ("a", "b"):
        write_predictions(RunFolder(tmp_path / name), np.array(["x"]), np.zeros((1, 1), np.float32), np.zeros((1, 1), np.uint8))
    aside = RunFolder(tmp_path / "a" / PREVIOUS_RUN)
    write_predictions(aside, np.array(["x"]), np.zeros((1, 1), np.float32), np.zeros((1, 1), np.uint8))
    os.utime(tmp_path / "b", (1e9, 1e9))  # the oldest run folder ...
    assert newest_run(tmp_path).root == tmp_path / "a"  # ... and the newest is a, not the copy aside inside it


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
