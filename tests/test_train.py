"""Training end to end on tiny learnable shards: outputs, loss falling, --resume after SIGKILL, distribution.

The shards are written here with schema.serialize_example (label k brightens quadrant k in channel k % 3,
so a small CNN learns them in a few steps) and read by the real fashion_tf.data pipeline.
"""

from __future__ import annotations

import csv
import hashlib
import shutil
import io
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
NUM_LABELS = 4
SIZE = 32
# Generous: on 2 cores shared with other jobs (load ~10) TF start-up plus tracing alone take 1-2 minutes.
SUBPROCESS_TIMEOUT = 480


def tiny_image(labels, rng, size=SIZE):
    image = rng.normal(100, 15, (size, size, 3))
    half = size // 2
    for k in labels:
        row, col = divmod(k, 2)
        image[row * half:(row + 1) * half, col * half:(col + 1) * half, k % 3] += 110
    return np.clip(image, 0, 255).astype(np.uint8)


def draw_labels(rng, single_choice_pair: bool) -> list[int]:
    """Each label with probability 0.4; with single_choice_pair exactly one of labels 0 and 1 (a single-choice group)."""
    if single_choice_pair:
        return [int(rng.integers(2))] + [k for k in range(2, NUM_LABELS) if rng.random() < 0.4]
    return [k for k in range(NUM_LABELS) if rng.random() < 0.4]


def write_tiny_shards(folder: Path, n_train=64, n_val=20, seed=0, single_choice_pair=False) -> Path:
    import tensorflow as tf

    from fashion_tf import schema
    from fashion_tf.labels import LabelMap
    from fashion_tf.shard_folder import ShardFolder

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    info = {"num_labels": NUM_LABELS, "splits": {}}
    for split, count in (("train", n_train), ("validation", n_val)):
        counts = np.zeros(NUM_LABELS, np.int64)
        name = f"{split}-00000-of-00001.tfrecord"
        with tf.io.TFRecordWriter(str(folder / name)) as writer:
            for i in range(count):
                labels = draw_labels(rng, single_choice_pair)
                counts[labels] += 1
                encoded = tf.io.encode_jpeg(tiny_image(labels, rng), quality=95).numpy()
                writer.write(schema.serialize_example(
                    encoded, "jpeg", SIZE, SIZE, labels, f"{split}-{i}", hashlib.sha256(encoded).hexdigest()))
        info["splits"][split] = {"num_examples": count, "label_counts": counts.tolist(), "shards": [name]}
    if single_choice_pair:
        info["groups"] = {"pair": {"labels": [0, 1], "exclusive": True}, "rest": {"labels": [2, 3], "exclusive": False}}
    shard_folder = ShardFolder(folder)
    shard_folder.info_path.write_text(json.dumps(info))
    LabelMap.from_ids([str(k + 1) for k in range(NUM_LABELS)]).to_json(shard_folder.label_map_path)
    return folder


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return write_tiny_shards(tmp_path_factory.mktemp("tiny") / "shards")


def overrides(shards: Path, out: Path, **extra) -> list[str]:
    settings = {
        "data.tfrecords": str(shards), "data.image_size": SIZE, "data.batch_size": 8, "data.augment": [],
        "data.shuffle_buffer": 64, "data.cache": True,
        "model.backbone": "small_cnn", "model.weights": None, "model.width": 8, "model.dropout": 0.0,
        "loss.name": "bce", "train.learning_rate": 0.02, "train.base_batch_size": 8, "train.warmup_epochs": 0,
        "train.mixed_precision": "off", "output_dir": str(out),
    }
    settings.update({key.replace("__", "."): value for key, value in extra.items()})
    return [f"{key}={json.dumps(value)}" for key, value in settings.items()]


def cli_args(shards, out, **extra) -> list[str]:
    args = []
    for text in overrides(shards, out, **extra):
        args += ["--override", text]
    return args


def subprocess_env(**extra) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.update(extra)
    return env


def history_rows(run: Path) -> list[dict]:
    with open(run / "history.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def saved_weights(path: Path) -> list[np.ndarray]:
    """Model variables from a .keras or .weights.h5 file, in file order (the optimizer excluded)."""
    import h5py
    import zipfile

    if str(path).endswith(".keras"):
        with zipfile.ZipFile(path) as archive:
            tmp = path.parent / f"{path.stem}.extracted.weights.h5"
            tmp.write_bytes(archive.read("model.weights.h5"))
            path = tmp
    arrays = []
    with h5py.File(path, "r") as handle:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and not name.startswith("optimizer"):
                arrays.append((name, obj[()]))
        handle.visititems(visit)
    return [array for _, array in sorted(arrays, key=lambda item: item[0])]


# ---- in-process: outputs and learning ----------------------------------------------------
def test_training_writes_run_folder_and_loss_falls(shards, tmp_path):
    import keras
    import tensorflow as tf

    from fashion_tf.config import load_config
    from fashion_tf.train import Options, train

    run = tmp_path / "run"
    cfg = load_config(None, overrides(shards, run, train__epochs=3, train__steps_per_epoch=8))
    summary = train(Options(cfg, verbose=0))

    rows = history_rows(run)
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    losses = [float(r["loss"]) for r in rows]
    assert losses[-1] < 0.85 * losses[0], losses
    assert summary["epochs_run"] == 3 and summary["train_images_per_second"] > 0
    assert 0.0 <= summary["val_micro_f1"] <= 1.0 and 0.0 <= summary["val_pr_auc"] <= 1.0

    for name in ("config.json", "label_map.json", "model.keras", "saved_model/saved_model.pb", "summary.json",
                 "plots/loss.png", "plots/micro_f1.png", "plots/pr_auc.png", "checkpoints/last.json",
                 "checkpoints/best.weights.h5", "checkpoints/epoch-0003.weights.h5"):
        assert (run / name).is_file(), name
    assert json.loads((run / "config.json").read_text())["train"]["epochs"] == 3

    predictions = np.load(run / "val_predictions.npz")
    assert predictions["ids"].shape == (20,) and predictions["ids"][0] == "validation-0"
    assert predictions["scores"].shape == (20, NUM_LABELS) and predictions["scores"].dtype == np.float32
    assert predictions["labels"].dtype == np.uint8
    rng = np.random.default_rng(0)  # the label draws of write_tiny_shards: train first, then validation
    expected = []
    for split, count in (("train", 64), ("validation", 20)):
        for _ in range(count):
            labels = draw_labels(rng, False)
            tiny_image(labels, rng)
            if split == "validation":
                expected.append([int(k in labels) for k in range(NUM_LABELS)])
    np.testing.assert_array_equal(predictions["labels"], np.array(expected, np.uint8))

    # The saved model and the SavedModel give the scores that val_predictions.npz holds.
    reloaded = keras.models.load_model(run / "model.keras")
    images = np.stack([tiny_image([k for k in range(NUM_LABELS) if e[k]], np.random.default_rng(1)) for e in expected[:2]])
    direct = keras.ops.convert_to_numpy(reloaded(images.astype(np.float32), training=False))
    exported = tf.saved_model.load(str(run / "saved_model"))
    served = exported.serve(tf.constant(images, tf.float32)).numpy()
    np.testing.assert_allclose(direct, served, atol=1e-5)
    assert reloaded.optimizer.iterations.numpy() > 0


def test_group_softmax_head_trains_on_a_single_choice_group(tmp_path):
    from fashion_tf.config import load_config
    from fashion_tf.train import Options, train

    shards = write_tiny_shards(tmp_path / "pair_shards", single_choice_pair=True)
    run = tmp_path / "run"
    cfg = load_config(None, overrides(shards, run, model__head="group_softmax", train__epochs=3, train__steps_per_epoch=8))
    train(Options(cfg, verbose=0))

    losses = [float(r["loss"]) for r in history_rows(run)]
    assert losses[-1] < 0.85 * losses[0], losses
    scores = np.load(run / "val_predictions.npz")["scores"]
    np.testing.assert_allclose(scores[:, :2].sum(axis=1), 1.0, rtol=1e-5)  # one softmax over the pair
    assert not np.allclose(scores[:, 2:].sum(axis=1), 1.0)  # the other labels stay independent sigmoids


def test_group_softmax_needs_shards_that_describe_their_groups(shards, tmp_path):
    from fashion_tf.config import load_config
    from fashion_tf.errors import UserError
    from fashion_tf.train import Options, train

    cfg = load_config(None, overrides(shards, tmp_path / "run", model__head="group_softmax", train__epochs=1))
    with pytest.raises(UserError, match="no 'groups'"):
        train(Options(cfg, verbose=0))


def test_cli_reports_bad_input_in_one_line(tmp_path):
    from fashion_tf.errors import run_cli
    from fashion_tf.train import main

    assert run_cli(main, ["--override", f"data.tfrecords={tmp_path / 'missing'}",
                          "--override", f"output_dir={tmp_path / 'run'}"]) == 2


# ---- subprocess: --resume after SIGKILL -----------------------------------------------------
def test_resume_after_sigkill_restores_epoch_and_optimizer_step(shards, tmp_path):
    run = tmp_path / "run"
    steps = 2
    base = [sys.executable, "-m", "fashion_tf.train"]
    common = dict(train__steps_per_epoch=steps, train__restore_best=False)
    log = open(tmp_path / "first.log", "w")
    first = subprocess.Popen(base + cli_args(shards, run, train__epochs=40, **common), cwd=REPO,
                             env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT)
    state_file = run / "checkpoints" / "last.json"
    deadline = time.time() + SUBPROCESS_TIMEOUT
    try:
        while time.time() < deadline and first.poll() is None:
            if state_file.is_file() and json.loads(state_file.read_text())["epoch"] >= 2:
                break
            time.sleep(0.1)
        assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        os.kill(first.pid, signal.SIGKILL)
    finally:
        if first.poll() is None:
            first.kill()
        first.wait()
        log.close()
    assert first.returncode == -signal.SIGKILL
    state = json.loads(state_file.read_text())
    done = state["epoch"]
    assert done >= 2 and state["iterations"] == done * steps

    resumed = subprocess.run(base + cli_args(shards, run, train__epochs=done + 2, **common) + ["--resume"],
                             cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
    output = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, output[-3000:]
    assert f"resuming after epoch {done}" in output
    assert f"optimizer step {done * steps}" in output
    assert [int(r["epoch"]) for r in history_rows(run)] == list(range(done + 2))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs_run"] == 2 and summary["resumed_from_epoch"] == done
    assert json.loads(state_file.read_text())["iterations"] == (done + 2) * steps


# ---- subprocess: distribution ------------------------------------------------------------------
def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def test_multi_worker_mirrored_two_local_workers_end_with_same_weights(shards, tmp_path):
    run = tmp_path / "run"
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    args = [sys.executable, "-m", "fashion_tf.train"] + cli_args(
        shards, run, train__strategy="multi_worker", data__batch_size=4, train__epochs=1, train__steps_per_epoch=3)
    procs, logs = [], []
    for index in range(2):
        tf_config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})
        logs.append(open(tmp_path / f"worker{index}.log", "w"))
        procs.append(subprocess.Popen(args, cwd=REPO, env=subprocess_env(TF_CONFIG=tf_config),
                                      stdout=logs[-1], stderr=subprocess.STDOUT))
    try:
        codes = [p.wait(timeout=SUBPROCESS_TIMEOUT) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for handle in logs:
            handle.close()
    output = "\n".join((tmp_path / f"worker{i}.log").read_text()[-2000:] for i in range(2))
    assert codes == [0, 0], output
    assert "2 replica(s), global batch 8" in (tmp_path / "worker0.log").read_text()
    chief = saved_weights(run / "model.keras")
    other = saved_weights(run / "workers" / "worker_1" / "final.weights.h5")
    assert len(chief) == len(other) > 0
    for a, b in zip(chief, other):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert (run / "val_predictions.npz").is_file() and not (run / "workers" / "worker_1" / "model.keras").exists()


MIRRORED_SCRIPT = """
import json, sys
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path.insert(0, {tests!r})
from test_train import overrides, saved_weights
from pathlib import Path
from fashion_tf.config import load_config
from fashion_tf.train import Options, train
import keras
from fashion_tf.models import build_model

shards, out = Path({shards!r}), Path({out!r})
init = out / "init.weights.h5"
common = dict(model__dense_units=16, train__optimizer="sgd", train__momentum=0.0, train__weight_decay=0.0,
              train__learning_rate=0.2, train__epochs=1, train__steps_per_epoch=4, train__freeze_backbone_epochs=1,
              train__restore_best=False, data__deterministic=True, data__cache=False)
cfg = load_config(None, overrides(shards, out / "x", **common))
out.mkdir(parents=True, exist_ok=True)
build_model(cfg.model, 4, cfg.data.image_size).save_weights(init)
results = {{}}
for name, strategy, batch in (("mirrored", "mirrored", 4), ("one_device", "one_device", 8)):
    cfg = load_config(None, overrides(shards, out / name, train__strategy=strategy, data__batch_size=batch,
                                      model__weights=str(init), **common))
    summary = train(Options(cfg, verbose=0))
    results[name] = summary["replicas"]
    results[name + "_history"] = (out / name / "history.csv").read_text()
a, b = saved_weights(out / "mirrored" / "model.keras"), saved_weights(out / "one_device" / "model.keras")
results["max_abs_diff"] = max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))
results["max_abs_change"] = max(float(np.max(np.abs(x - y))) for x, y in zip(a, saved_weights(init)))
print("RESULT " + json.dumps(results))
"""


def test_mirrored_two_cpus_matches_one_device_for_same_global_batch(shards, tmp_path):
    script = MIRRORED_SCRIPT.format(tests=str(Path(__file__).parent), shards=str(shards), out=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=REPO, env=subprocess_env(),
                          capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    result = json.loads(done.stdout.split("RESULT ", 1)[1])
    assert result["mirrored"] == 2 and result["one_device"] == 1
    assert result["max_abs_change"] > 1e-3  # the head did train
    assert result["max_abs_diff"] < 1e-4, result
    mirrored, one_device = (list(csv.DictReader(io.StringIO(result[f"{name}_history"]))) for name in ("mirrored", "one_device"))
    for key in ("val_loss", "val_micro_f1", "val_pr_auc"):  # validation: split over replicas, same figures
        assert float(mirrored[0][key]) == pytest.approx(float(one_device[0][key]), abs=1e-5), key


# ---- an earlier run is never lost to a command that fails ---------------------------------------
def folder_bytes(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(shards, tmp_path_factory) -> Path:
    """A complete 2-epoch run (checkpoints of epochs 1 and 2), for re-runs to try to spoil."""
    from fashion_tf.errors import run_cli
    from fashion_tf.train import main

    run = tmp_path_factory.mktemp("earlier") / "run"
    assert run_cli(main, cli_args(shards, run, train__epochs=2, train__steps_per_epoch=2)) == 0
    return run


def one_line_error(capsys, argv: list) -> str:
    from fashion_tf.errors import run_cli
    from fashion_tf.train import main

    code = run_cli(main, [str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err


@pytest.mark.parametrize("change, flags, message", [
    ({"model__backbone": "resnet5"}, [], "model.backbone: unknown backbone 'resnet5'"),
    ({"model__dropout": 1.5}, ["--overwrite"], r"model.dropout: must be in [0, 1), got 1.5"),
    ({"model__weights": "/nowhere/w.weights.h5"}, ["--overwrite"], "model.weights: weights file not found"),
    ({"train__learning_rate": -0.01}, ["--resume"], "train.learning_rate: must be > 0"),
    ({"train__epochs": 0}, ["--overwrite"], "train.epochs: must be >= 1"),
    ({}, [], "holds an earlier run"),
    ({}, ["--resume", "--overwrite"], "give one of them"),
])
def test_a_failing_rerun_leaves_the_earlier_run_untouched(finished_run, shards, capsys, change, flags, message):
    """Defect: a re-run with a typo'd backbone (or a missing weights file, or dropout 1.5) exited 2 but had already
    deleted checkpoints/ and history.csv and rewritten config.json; a plain re-run started over silently."""
    before = folder_bytes(finished_run)
    settings = dict(train__epochs=2, train__steps_per_epoch=2)
    settings.update(change)
    err = one_line_error(capsys, cli_args(shards, finished_run, **settings) + flags)
    assert message in err
    assert folder_bytes(finished_run) == before


def test_resume_gets_past_a_torn_last_json_and_a_truncated_checkpoint(finished_run, shards, tmp_path):
    """Defect: a torn checkpoints/last.json told the user to start without --resume, deleting intact checkpoints."""
    from fashion_tf.config import load_config
    from fashion_tf.train import Options, train

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    (run / "checkpoints" / "last.json").write_text('{"epoch": 2, "weigh')
    newest = run / "checkpoints" / "epoch-0002.weights.h5"
    newest.write_bytes(newest.read_bytes()[:500])
    cfg = load_config(None, overrides(shards, run, train__epochs=3, train__steps_per_epoch=2))
    summary = train(Options(cfg, resume=True, verbose=0))
    assert summary["resumed_from_epoch"] == 1 and summary["epochs_run"] == 2
    assert [int(r["epoch"]) for r in history_rows(run)] == [0, 1, 2]
    assert json.loads((run / "checkpoints" / "last.json").read_text())["epoch"] == 3


def test_overwrite_keeps_the_earlier_run_aside_until_the_new_one_has_its_model(finished_run, shards, tmp_path):
    from fashion_tf.config import load_config
    from fashion_tf.train import Options, train

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    earlier = (run / "model.keras").read_bytes()
    cfg = load_config(None, overrides(shards, run, train__epochs=1, train__steps_per_epoch=1))
    train(Options(cfg, overwrite=True, verbose=0))
    assert not (run / ".previous-run").exists()
    assert [int(r["epoch"]) for r in history_rows(run)] == [0]
    assert (run / "model.keras").read_bytes() != earlier and (run / "val_predictions.npz").is_file()


def test_a_full_disk_during_training_is_one_line(shards, small_disk, capsys):
    err = one_line_error(capsys, cli_args(shards, small_disk / "run", train__epochs=2, train__steps_per_epoch=1,
                                          model__width=16))
    assert "cannot write (" in err and "--resume" in err


def test_bad_input_is_one_line_before_anything_is_written(shards, tmp_path, capsys):
    """Table of bad inputs to the train command: exit 2, one `error:` line, nothing written."""
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    short_map = tmp_path / "short_map"
    shutil.copytree(shards, short_map)
    label_map = json.loads((short_map / "label_map.json").read_text())
    label_map["labels"] = label_map["labels"][:2]
    (short_map / "label_map.json").write_text(json.dumps(label_map))
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"data": ')
    run = tmp_path / "run"
    cases = [
        (["--config", tmp_path / "missing.json"], "config file not found"),
        (["--config", bad_json], "not valid JSON"),
        (cli_args(shards, run) + ["--override", "data.imagesize=3"], "unknown key 'data.imagesize'"),
        (cli_args(shards, run) + ["--override", "train.epochs"], "expected key=value"),
        (cli_args(tmp_path / "no_shards", run), "TFRecord folder not found"),
        (cli_args(short_map, run), "label_map.json: lists 2 labels but shard_info.json says the shards use 4"),
        (cli_args(shards, blocker / "run"), "is a file, not a folder"),
        (cli_args(shards, run, model__head="group_softmax"), "no 'groups'"),
        (cli_args(shards, run, train__strategy="multi_worker"), "TF_CONFIG"),
        (cli_args(shards, run, data__val_split="test"), "no split 'test'"),
    ]
    for argv, message in cases:
        err = one_line_error(capsys, argv)
        assert message in err, (argv, err)
        assert not run.exists(), argv


def test_a_bad_config_fails_fast_without_tensorflow_as_a_user_sees_it(tmp_path):
    """Defect: a missing config file took TensorFlow's start-up (~5 s and its log lines) to report."""
    missing = tmp_path / "missing.json"
    done = subprocess.run([sys.executable, "-m", "fashion_tf.train", "--config", str(missing)], cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True,
                          timeout=SUBPROCESS_TIMEOUT)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [f"error: {missing}: config file not found"]
    probe = ("import sys; from fashion_tf.errors import run_cli; from fashion_tf.train import main; "
             f"assert run_cli(main, ['--config', {str(missing)!r}]) == 2; assert 'tensorflow' not in sys.modules")
    assert subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True).returncode == 0
