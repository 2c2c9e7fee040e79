"""fashion_tf.checkpoints: epoch checkpoints, resume fallbacks, a full disk in one line, history.csv."""

from __future__ import annotations

import json
import numpy as np
import pytest

keras = pytest.importorskip("keras")

from fashion_tf.checkpoints import (load_first_loadable, monitor_history, resume_candidates, save_epoch,  # noqa: E402
                                    trim_history)
from fashion_tf.errors import UserError  # noqa: E402
from fashion_tf.run_folder import RunFolder  # noqa: E402


def tiny_model(seed: int = 0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(64), keras.layers.Dense(2)])
    model.compile("adam", "mse")
    model.fit(np.ones((8, 4)), np.ones((8, 2)), verbose=0)
    return model


def weights_of(model) -> list[np.ndarray]:
    return [np.asarray(w) for w in model.get_weights()]


def test_save_epoch_keeps_the_two_newest_and_last_json_names_the_newest(tmp_path):
    run, model = RunFolder(tmp_path), tiny_model()
    for epoch in (1, 2, 3):
        save_epoch(model, run, epoch, best=0.1 * epoch, monitor="val_micro_f1")
    assert [p.name for p in run.epoch_weight_files()] == ["epoch-0002.weights.h5", "epoch-0003.weights.h5"]
    state = json.loads(run.last_checkpoint.read_text())
    assert state["epoch"] == 3 and state["weights"] == "epoch-0003.weights.h5" and state["best"] == pytest.approx(0.3)
    assert not list(run.checkpoints.glob(".tmp-*"))


def test_a_torn_last_json_falls_back_to_the_newest_epoch_file_and_history(tmp_path):
    """Defect: a torn last.json said 'start without --resume', which deletes the intact epoch checkpoints."""
    run, model = RunFolder(tmp_path), tiny_model()
    save_epoch(model, run, 4, best=0.7, monitor="val_micro_f1")
    save_epoch(model, run, 5, best=0.7, monitor="val_micro_f1")
    run.history.write_text("epoch,val_micro_f1\n0,0.5\n1,0.7\n2,0.6\n3,0.65\n4,0.66\n")
    run.last_checkpoint.write_text('{"epoch": 5, "weig')  # torn
    candidates = resume_candidates(run, "val_micro_f1")
    assert [(c.epoch, c.weights.name, c.best) for c in candidates] == [
        (5, "epoch-0005.weights.h5", 0.7), (4, "epoch-0004.weights.h5", 0.7)]


def test_a_truncated_weights_file_falls_back_to_the_older_one_then_fails_in_one_line(tmp_path):
    run, model = RunFolder(tmp_path), tiny_model(seed=1)
    save_epoch(model, run, 1, best=None, monitor="val_loss")
    expected = weights_of(model)
    save_epoch(tiny_model(seed=2), run, 2, best=None, monitor="val_loss")
    newest = run.epoch_weights(2)
    newest.write_bytes(newest.read_bytes()[:300])  # truncated by a crash of the disk, say
    fresh = tiny_model(seed=3)
    state = load_first_loadable(fresh, resume_candidates(run, "val_loss"), run)
    assert state.epoch == 1
    for a, b in zip(weights_of(fresh), expected):
        np.testing.assert_array_equal(a, b)
    run.epoch_weights(1).write_bytes(b"garbage")
    with pytest.raises(UserError, match="no checkpoint loads .*--overwrite"):
        load_first_loadable(tiny_model(), resume_candidates(run, "val_loss"), run)


def test_a_full_disk_while_saving_is_one_line_and_keeps_the_last_checkpoint(small_disk, capfd):
    run = RunFolder(small_disk / "run")
    save_epoch(tiny_model(), run, 1, best=None, monitor="val_loss")
    big = keras.Sequential([keras.Input((512,)), keras.layers.Dense(512), keras.layers.Dense(2)])
    big.compile("adam", "mse")
    big.fit(np.ones((2, 512)), np.ones((2, 2)), verbose=0)  # ~3 MB with its optimizer state
    with pytest.raises(UserError, match=r"epoch-0002.weights.h5: cannot write \(3.\d MB needed, \d.\d MB free on its disk\).*--resume"):
        save_epoch(big, run, 2, best=None, monitor="val_loss")
    assert json.loads(run.last_checkpoint.read_text())["epoch"] == 1
    assert sorted(p.name for p in run.checkpoints.iterdir()) == ["epoch-0001.weights.h5", "last.json"]
    assert "Traceback" not in capfd.readouterr().err  # h5py's destructor complaints are kept quiet


def test_monitor_history_reads_the_phase_epochs_of_history_csv(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("epoch,loss,val_micro_f1\n0,1.0,0.4\n1,0.9,\n2,0.8,0.6\n3,0.7,0.65\n", encoding="utf-8")
    assert monitor_history(path, "val_micro_f1", 0, 4)[0] == 0.4
    assert [round(v, 2) for v in monitor_history(path, "val_micro_f1", 2, 3)] == [0.6]
    assert monitor_history(tmp_path / "missing.csv", "val_micro_f1", 0, 4) == []


def test_trim_history_keeps_the_checkpointed_epochs_and_drops_a_torn_row(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("epoch,loss\n0,1.0\n1,0.9\n2,0.8\n3,0.")
    trim_history(path, 2)
    assert path.read_text() == "epoch,loss\n0,1.0\n1,0.9\n"
