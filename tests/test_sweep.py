"""fashion_tf.sweep: the space file's checks, and tiny studies on the synthetic set (32 px, 2 epochs) that prune,
survive a kill -9 and a rerun, share one study between two processes, and whose best config trains.

Real components throughout: Optuna storages (journal file, SQLite), real training runs, real subprocesses killed
with SIGKILL.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fashion_tf.errors import UserError
from fashion_tf.labels import LabelMap
from fashion_tf.run_folder import RunFolder

REPO = Path(__file__).resolve().parents[1]
optuna = pytest.importorskip("optuna", reason="the sweep extra is not installed (pip install -e '.[sweep]')")

from fashion_tf import sweep  # noqa: E402  (after the importorskip)
from fashion_tf.sweep.__main__ import build_parser, options_from_args  # noqa: E402
from fashion_tf.sweep.options import Setup, prepare  # noqa: E402
from fashion_tf.sweep.space import base_values, load_space  # noqa: E402
from fashion_tf.sweep.stages import load_base_config, trial_config  # noqa: E402
from fashion_tf.sweep.study import SURPLUS_ATTR, open_study, state_counts  # noqa: E402
from fashion_tf.sweep.trial import TrialRunner  # noqa: E402

SUBPROCESS_TIMEOUT = 480  # generous: TF start-up alone takes minutes on 2 cores shared with other jobs
GOOD_LR, BAD_LR = 0.02, 1e-6  # after one epoch the bad rate's validation PR-AUC stays at the untrained model's
BASE_CONFIG = {
    "data": {"image_size": 32, "batch_size": 16, "augment": [], "cache": True, "shuffle_buffer": 256},
    "model": {"backbone": "small_cnn", "weights": None, "width": 8, "dropout": 0.0},
    "loss": {"name": "bce"},
    "train": {"epochs": 2, "learning_rate": GOOD_LR, "base_batch_size": 16, "warmup_epochs": 0,
              "mixed_precision": "off", "monitor": "val_pr_auc"},
}
SPACE = {
    "train.learning_rate": {"choice": [GOOD_LR, BAD_LR]},
    "loss.label_smoothing": {"uniform": [0, 0.1]},
    "data.augment": {"choice": [[], ["flip"]]},
}


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """Shards of the synthetic set (fashion_tf.synthetic, 24 labels) at 32 px: 240 images, a quarter for validation."""
    from fashion_tf import synthetic
    from fashion_tf.make_tfrecords.cli import main as make_tfrecords_main

    root = tmp_path_factory.mktemp("synthetic")
    synthetic.generate(root / "set", n=240, seed=0, size=32)
    assert make_tfrecords_main(["--input", str(root / "set" / "train.json"), "--images", str(root / "set" / "images"),
                                "--label-map", str(root / "set" / "label_map.csv"), "--output-dir",
                                str(root / "shards"), "--val-fraction", "0.25", "--shard-size-mb", "1"]) == 0
    return root / "shards"


def write_inputs(folder: Path, shards: Path | None, space: dict | None = None) -> tuple[Path, Path]:
    config = json.loads(json.dumps(BASE_CONFIG))
    config["data"]["tfrecords"] = str(shards or folder / "no-shards-here")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "space.json").write_text(json.dumps(SPACE if space is None else space))
    return folder / "config.json", folder / "space.json"


def sweep_args(config: Path, space: Path, out: Path, storage: str, trials: int, *extra: str) -> list[str]:
    return ["--config", str(config), "--space", str(space), "--study", "tiny", "--trials", str(trials),
            "--out", str(out), "--storage", storage, *extra]


def start_sweep(args: list[str], log: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    return subprocess.Popen([sys.executable, "-m", "fashion_tf.sweep", *args], cwd=REPO, env=env,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)


def load_trials(storage):
    return optuna.load_study(study_name="tiny", storage=storage).get_trials(deepcopy=False)


def journal(path: Path):
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    return JournalStorage(JournalFileBackend(str(path)))


def wait_for(condition, what: str, timeout: float = SUBPROCESS_TIMEOUT, poll: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}")


def finished_count(trials) -> int:
    return sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials)


def assert_one_folder_per_trial(trials, out: Path) -> None:
    """Every trial that started trained in its own folder, named by its number, and no folder is shared."""
    started = [t for t in trials if "run_dir" in t.user_attrs]
    folders = [t.user_attrs["run_dir"] for t in started]
    assert len(set(folders)) == len(folders), folders
    for trial in started:
        assert Path(trial.user_attrs["run_dir"]).name == f"trial-{trial.number:04d}"
    assert sorted(p.name for p in (out / "trials").iterdir()) == sorted(Path(f).name for f in folders)


# ---- the space file ---------------------------------------------------------------------------------------------
BAD_SPACES = [
    ({"train.learnin_rate": {"log_uniform": [1e-4, 1e-2]}}, "train.learnin_rate", "unknown key"),
    ({"train.epochs": {"uniform": [1, 5]}}, "train.epochs", "expected integer"),
    ({"data.image_size": {"log_uniform": [32, 128]}}, "data.image_size", "expected integer"),
    ({"data.image_size": {"int": [32.5, 128]}}, "data.image_size", "two integers"),
    ({"model.weights": {"choice": [None, 3]}}, "model.weights", "expected string or null"),
    ({"model.weights": {"choice": [None, "imagenet"]}}, "model.weights", "no ImageNet weights"),  # with small_cnn
    ({"model.head": {"choice": ["sigmoid", "softmaxx"]}}, "model.head", "softmaxx"),
    ({"data.augment": {"choice": [["flip"], ["blur"]]}}, "data.augment", "blur"),
    ({"loss.label_smoothing": {"uniform": [0.3, 0.1]}}, "loss.label_smoothing", "low < high"),
    ({"loss.label_smoothing": {"uniform": [0.1, 0.1]}}, "loss.label_smoothing", "low < high"),
    ({"train.learning_rate": {"log_uniform": [0, 0.1]}}, "train.learning_rate", "low > 0"),
    ({"model.width": {"int": [8, 32], "step": 0}}, "model.width", "step"),
    ({"model.dropout": {"choice": []}}, "model.dropout", "non-empty list"),
    ({"model.dropout": {"uniform": [0, 0.5], "choice": [0.1]}}, "model.dropout", "exactly one"),
    ({"model.dropout": {"normal": [0, 1]}}, "model.dropout", "one of"),
    ({"model.dropout": [0, 0.5]}, "model.dropout", "one of"),
    ({"train": {"choice": [{"epochs": 3}]}}, "train", "section"),
    ({"output_dir": {"choice": ["a", "b"]}}, "output_dir", "set by the sweep"),
]


@pytest.mark.parametrize("space, key, words", BAD_SPACES, ids=[f"{i}-{s[1]}" for i, s in enumerate(BAD_SPACES)])
def test_bad_space_is_one_error_naming_file_and_key(tmp_path, space, key, words):
    config, space_file = write_inputs(tmp_path, None, space)
    base = load_base_config(str(config), ())
    with pytest.raises(UserError) as caught:
        load_space(space_file, base)
    message = str(caught.value)
    assert str(space_file) in message and f"[{key}]" in message and "\n" not in message, message
    assert words in message, message


def test_space_values_are_typed_and_checked_like_the_config(tmp_path):
    config, space_file = write_inputs(tmp_path, None, {
        "loss.label_smoothing": {"choice": [0, 0.1]},  # the float field widens 0 to 0.0
        "model.width": {"int": [8, 32], "step": 8},
        "train.learning_rate": {"log_uniform": [1e-3, 0.1]},
        "model.pooling": {"choice": ["avg", "max"]},
        "data.augment": {"choice": [[], ["crop", "flip"]]},
    })
    base = load_base_config(str(config), ())
    dims = {d.key: d for d in load_space(space_file, base)}
    assert dims["loss.label_smoothing"].options == (0.0, 0.1)
    assert isinstance(dims["loss.label_smoothing"].options[0], float)
    assert (dims["model.width"].low, dims["model.width"].high, dims["model.width"].step) == (8, 32, 8)
    assert dims["model.pooling"].options == ("avg", "max")

    # the base config is the baseline trial when the space holds every one of its values
    params, _ = base_values(list(dims.values()), trial_config(base, {}, tmp_path / "run", "test"))
    assert params == {"loss.label_smoothing": 0.0, "model.width": 8, "train.learning_rate": GOOD_LR,
                      "model.pooling": "avg", "data.augment": "[]"}
    off_step = trial_config(base, {"model.width": 12}, tmp_path / "run", "test")
    params, why_not = base_values(list(dims.values()), off_step)
    assert params is None and "model.width" in why_not


@pytest.mark.parametrize("config, space", [("configs/fashion_products.json", "configs/sweeps/fashion_products.json"),
                                           ("configs/demo.json", "configs/sweeps/demo.json")])
def test_shipped_space_files_hold_their_configs(config, space):
    """The shipped spaces load, and hold every value of the config they are for: its baseline trial is the recipe."""
    base = load_base_config(str(REPO / config), ())
    dimensions = load_space(REPO / space, base)
    params, why_not = base_values(dimensions, trial_config(base, {}, "runs/x", config))
    assert params is not None, why_not


def test_cli_rejects_a_bad_space_before_writing_anything(tmp_path):
    config, space_file = write_inputs(tmp_path / "in", None, {"train.epochs": {"uniform": [1, 3]}})
    out = tmp_path / "out"
    args = sweep_args(config, space_file, out, f"sqlite:///{tmp_path / 'db' / 'tiny.db'}", 3)
    result = subprocess.run([sys.executable, "-m", "fashion_tf.sweep", *args], capture_output=True, text=True,
                            cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=SUBPROCESS_TIMEOUT)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "train.epochs" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists() and not (tmp_path / "db").exists()

    (space_file).write_text(json.dumps(SPACE))  # a good space, but data.tfrecords names no shard folder
    result = subprocess.run([sys.executable, "-m", "fashion_tf.sweep", *args], capture_output=True, text=True,
                            cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=SUBPROCESS_TIMEOUT)
    assert result.returncode == 2 and "no-shards-here" in result.stderr, result.stderr
    assert not out.exists() and not (tmp_path / "db").exists()


def setup_for(tmp_path: Path, *extra: str, space: dict | None = None) -> "Setup":
    """A checked setup over a stand-in shard folder (enough for the checks before training; nothing trains here)."""
    shards = tmp_path / "shards"
    shards.mkdir(exist_ok=True)
    if not (shards / "label_map.json").exists():
        LabelMap.from_ids(["1", "2"]).to_json(shards / "label_map.json")
        (shards / "shard_info.json").write_text(json.dumps({"num_labels": 2, "splits": {}}))
    config, space_file = write_inputs(tmp_path / "in", shards, space)
    args = sweep_args(config, space_file, tmp_path / "out", str(tmp_path / "study.journal"), 1, *extra)
    return prepare(options_from_args(build_parser().parse_args(args)))


def test_a_rerun_with_another_space_metric_or_config_is_refused(tmp_path):
    study = open_study(setup_for(tmp_path))
    assert [t.state.name for t in study.trials] == ["WAITING"]  # the baseline, queued by the study's creator
    open_study(setup_for(tmp_path))  # the same command again: accepted

    for extra, space, words in ((("--metric", "mAP"), None, "metric"),
                                (("--prune-on", "val_loss"), None, "prune on"),
                                ((), {"loss.label_smoothing": {"uniform": [0, 0.2]}}, "space"),
                                (("--override", "train.epochs=3"), None, "train.epochs")):
        with pytest.raises(UserError, match=words):
            open_study(setup_for(tmp_path, *extra, space=space))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "sweep.json").write_text(json.dumps({"study": "other"}))
    with pytest.raises(UserError, match="holds study 'other'"):
        setup_for(tmp_path)


def test_a_trial_started_past_the_target_by_a_racing_process_is_given_back(tmp_path):
    """Two processes can both see N-1 finished trials and ask for one more; the later trial number stands down,
    and a queued trial (a retry, here) goes back to the queue."""
    setup = setup_for(tmp_path, "--no-baseline")
    study = open_study(setup)
    study.ask({"loss.label_smoothing": optuna.distributions.FloatDistribution(0, 0.1)})  # the racing process's
    study.enqueue_trial({"loss.label_smoothing": 0.05}, user_attrs={"retry_of": 7})
    runner = TrialRunner(setup, study)
    study.optimize(runner, n_trials=1, catch=(Exception,), callbacks=[runner.after_trial])

    trials = study.get_trials(deepcopy=False)
    stood_down = trials[1]
    assert stood_down.state.name == "FAIL" and stood_down.user_attrs[SURPLUS_ATTR]
    assert not (setup.out / "trials").exists()  # it never started a run
    assert trials[2].state.name == "WAITING" and trials[2].system_attrs["fixed_params"] == {"loss.label_smoothing": 0.05}
    assert trials[2].user_attrs == {"retry_of": 7}
    assert state_counts(study) == {"RUNNING": 1, "WAITING": 1} and runner.ran == []


# ---- studies on the synthetic set ----------------------------------------------------------------------------------
def test_study_prunes_continues_to_the_total_and_its_best_config_trains(shards, tmp_path):
    from fashion_tf.config import load_config
    from fashion_tf.threshold_search.__main__ import main as threshold_main
    from fashion_tf.train import main as train_main

    config, space = write_inputs(tmp_path / "in", shards)
    out = tmp_path / "out"
    options = options_from_args(build_parser().parse_args(sweep_args(
        config, space, out, str(out / "optuna.journal"), 4,
        "--seed", "3", "--prune-startup-trials", "1", "--prune-warmup-epochs", "0")))
    assert sweep.run(options) == 0

    trials = load_trials(journal(out / "optuna.journal"))
    states = [t.state.name for t in trials]
    assert finished_count(trials) == 4 and len(trials) == 4, states
    baseline = trials[0]
    assert baseline.user_attrs.get("baseline") and baseline.state.name == "COMPLETE"
    assert baseline.params == {"train.learning_rate": GOOD_LR, "loss.label_smoothing": 0.0, "data.augment": "[]"}
    pruned = [t for t in trials if t.state.name == "PRUNED"]
    assert pruned, states
    for trial in pruned:  # stopped after its first epoch, the weak learning rate, resumable from its checkpoint
        assert trial.params["train.learning_rate"] == BAD_LR
        run = RunFolder(trial.user_attrs["run_dir"])
        with open(run.history, newline="") as handle:
            assert len(list(csv.DictReader(handle))) == trial.user_attrs["epochs_run"] == 1  # of 2
        assert run.last_checkpoint.is_file() and not run.model.exists()
    assert_one_folder_per_trial(trials, out)
    for trial in trials:  # each run folder's config is the trial's: re-runnable with fashion_tf.train --config
        cfg = load_config(RunFolder(trial.user_attrs["run_dir"]).config)
        assert cfg.output_dir == trial.user_attrs["run_dir"]
        assert cfg.train.learning_rate == trial.params["train.learning_rate"]
        assert cfg.data.augment == json.loads(trial.params["data.augment"])

    with open(out / "leaderboard.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["trial"]) for r in rows][0] == max((t for t in trials if t.state.name == "COMPLETE"),
                                                     key=lambda t: t.value).number
    assert sorted(r["state"] for r in rows) == sorted(s.lower() for s in states)
    assert all(float(r["cpu_seconds"]) > 0 and r["run_dir"] for r in rows)
    assert "| rank | trial | state | score |" in (out / "leaderboard.md").read_text()
    for name in ("optimization_history", "param_importances", "parallel_coordinate", "intermediate_values"):
        assert (out / "plots" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name

    best = max((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    # its score is what `threshold_search --cv 5 --mode auto` reports for that run: the best held-out setting
    best_run = RunFolder(best.user_attrs["run_dir"])
    assert best_run.thresholds.is_file()  # the sweep ran the threshold search in the trial's folder
    assert threshold_main(["--run-dir", str(best_run.root), "--cv", "5", "--mode", "auto", "--no-plots"]) == 0
    headline = json.loads(best_run.threshold_report_json.read_text())["headline"]
    assert best.value == pytest.approx(max(setting["micro"]["mean"] for setting in headline.values()))

    best_cfg = load_config(out / "best_config.json")
    assert best_cfg.train.learning_rate == best.params["train.learning_rate"]
    assert best_cfg.loss.label_smoothing == best.params["loss.label_smoothing"]
    assert best_cfg.output_dir == str(out / "best")
    assert train_main(["--config", str(out / "best_config.json")]) == 0  # as is, as a user would
    summary = json.loads(RunFolder(out / "best").summary.read_text())
    assert summary["epochs_run"] == 2 and summary["val_examples_predicted"] > 0

    # --trials is the study's total: the same command again runs nothing, a larger N runs only the difference
    assert sweep.run(options) == 0
    assert len(load_trials(journal(out / "optuna.journal"))) == 4
    assert sweep.run(dataclasses.replace(options, trials=5)) == 0
    assert finished_count(load_trials(journal(out / "optuna.journal"))) == 5


def test_kill_9_mid_trial_then_rerun_fails_it_and_retries_its_parameters(shards, tmp_path):
    config, space = write_inputs(tmp_path / "in", shards)
    out = tmp_path / "out"
    storage = f"sqlite:///{tmp_path / 'tiny.db'}"
    args = sweep_args(config, space, out, storage, 3, "--pruner", "none", "--heartbeat", "1", "--grace", "3")
    first = start_sweep(args, tmp_path / "first.log")
    try:  # kill it when trial 1 has a checkpoint of its first epoch: mid-way through the trial
        wait_for(lambda: RunFolder(out / "trials" / "trial-0001").last_checkpoint.is_file() or first.poll(),
                 "trial 1's first epoch")
        assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        os.killpg(first.pid, signal.SIGKILL)
    finally:
        first.wait()
    killed = load_trials(storage)[1]
    assert killed.state.name == "RUNNING"

    rerun = start_sweep(args, tmp_path / "rerun.log")
    assert rerun.wait(timeout=SUBPROCESS_TIMEOUT) == 0, (tmp_path / "rerun.log").read_text()[-3000:]

    trials = load_trials(storage)
    assert finished_count(trials) == 3, [t.state.name for t in trials]
    assert trials[1].state.name == "FAIL"
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == 1]
    assert len(retries) == 1 and retries[0].state.name == "COMPLETE"
    assert retries[0].params == killed.params and retries[0].number > 1
    assert_one_folder_per_trial(trials, out)
    assert RunFolder(out / "trials" / "trial-0001").last_checkpoint.is_file()  # the dead run is left as it was
    with open(out / "leaderboard.csv", newline="") as handle:
        notes = {int(r["trial"]): r["note"] for r in csv.DictReader(handle)}
    assert "no heartbeat" in notes[1] and "retry of trial 1" in notes[retries[0].number]
    assert "3 of 3 trials finished" in (tmp_path / "rerun.log").read_text()


def test_two_processes_share_a_journal_study_and_one_takes_over_the_others_dead_trial(shards, tmp_path):
    config, space = write_inputs(tmp_path / "in", shards)
    out = tmp_path / "out"
    storage_file = tmp_path / "tiny.journal"
    args = sweep_args(config, space, out, str(storage_file), 4, "--pruner", "none", "--heartbeat", "1", "--grace", "3")
    first, second = start_sweep(args, tmp_path / "a.log"), start_sweep(args, tmp_path / "b.log")
    try:
        def first_mid_trial():
            if not storage_file.is_file():
                return None
            for trial in load_trials(journal(storage_file)):
                run = RunFolder(trial.user_attrs.get("run_dir", "-"))
                if trial.user_attrs.get("pid") == first.pid and trial.state.name == "RUNNING" \
                        and run.last_checkpoint.is_file():
                    return trial
            return None

        victim = wait_for(first_mid_trial, "a trial of the first process past its first epoch")
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        assert second.wait(timeout=SUBPROCESS_TIMEOUT) == 0, (tmp_path / "b.log").read_text()[-3000:]
    finally:
        for process in (first, second):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    trials = load_trials(journal(storage_file))
    assert finished_count(trials) == 4, [t.state.name for t in trials]
    assert trials[victim.number].state.name == "FAIL"
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retry) == 1 and retry[0].params == victim.params
    assert retry[0].user_attrs["pid"] == second.pid and retry[0].state.name == "COMPLETE"
    by_process = {pid: sum(t.user_attrs.get("pid") == pid for t in trials) for pid in (first.pid, second.pid)}
    assert by_process[first.pid] >= 1 and by_process[second.pid] >= 3, by_process
    assert len({t.number for t in trials}) == len(trials)
    assert_one_folder_per_trial(trials, out)
