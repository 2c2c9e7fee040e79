"""fashion_tf.beam.shards: make_tfrecords as a Beam pipeline writes the local engine's shards byte for byte,
on the DirectRunner in-process and with 2 worker processes, and a killed pipeline's rerun completes them."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

beam = pytest.importorskip("apache_beam")

from make_tfrecords_fixtures import TOOL_ENV, make_download_folder, tool_command  # noqa: E402
from fashion_tf.beam.shards import make_tfrecords as beam_make_tfrecords  # noqa: E402
from fashion_tf.make_tfrecords import Options, make_tfrecords  # noqa: E402
from fashion_tf.shard_folder import ShardFolder  # noqa: E402

IN_PROCESS = ["--runner=DirectRunner"]
TWO_WORKER_PROCESSES = ["--runner=DirectRunner", "--direct_num_workers=2", "--direct_running_mode=multi_processing"]


def outputs(folder: Path) -> dict[str, bytes]:
    """Every file a reader uses: shards, label map, shard_info.json, TFDS metadata (not the write state)."""
    shards = ShardFolder(folder)
    return {path.name: path.read_bytes() for path in shards.outputs() if path.is_file()}


def options(source: Path, out: Path) -> Options:
    return Options(input=source, output_dir=out, val_fraction=0.25, shard_size_mb=0.0004, min_shards=1, workers=2,
                   name="tiny")


@pytest.fixture(scope="module")
def downloaded(tmp_path_factory) -> tuple[Path, dict[str, bytes]]:
    root = tmp_path_factory.mktemp("beam_shards")
    make_download_folder(root / "dl", n=40)
    make_tfrecords(options(root / "dl", root / "local"))
    return root / "dl", outputs(root / "local")


@pytest.mark.parametrize("runner", [IN_PROCESS, TWO_WORKER_PROCESSES], ids=["in_process", "two_worker_processes"])
def test_the_pipeline_writes_the_local_engines_shards_byte_for_byte(downloaded, tmp_path, runner):
    source, local = downloaded
    info = beam_make_tfrecords(options(source, tmp_path / "beam"), runner)
    assert outputs(tmp_path / "beam") == local
    assert sum(name.endswith(".tfrecord") for name in local) == info["summary"]["shards_written"] > 4
    again = beam_make_tfrecords(options(source, tmp_path / "beam"), runner)  # all complete: nothing to run
    assert again["summary"]["shards_written"] == 0 and outputs(tmp_path / "beam") == local


def test_a_killed_pipeline_rerun_completes_the_same_shards(downloaded, tmp_path):
    source, local = downloaded
    out = tmp_path / "beam"
    argv = tool_command("--input", source, "--output-dir", out, "--val-fraction", "0.25", "--shard-size-mb", "0.0004",
                        "--min-shards", "1", "--name", "tiny", "--engine", "beam", "--", *TWO_WORKER_PROCESSES)
    first = subprocess.Popen(argv, env=TOOL_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    receipts = ShardFolder(out).state_dir / "shards"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and first.poll() is None and not list(receipts.glob("*.json")):
        time.sleep(0.02)
    assert first.poll() is None, "the first run should still be writing"
    os.killpg(first.pid, signal.SIGKILL)  # the driver and its worker processes
    first.wait(timeout=30)
    done = subprocess.run(argv, env=TOOL_ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert outputs(out) == local
    kept = int(re.search(r"kept (\d+) complete shards", done.stdout).group(1))
    assert 1 <= kept < sum(name.endswith(".tfrecord") for name in local)


def test_options_after_the_separator_need_the_beam_engine(downloaded, tmp_path, capsys):
    from fashion_tf.errors import run_cli
    from fashion_tf.make_tfrecords.cli import main

    code = run_cli(main, ["--input", str(downloaded[0]), "--output-dir", str(tmp_path / "x"), "--", *IN_PROCESS])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "give --engine beam as well" in err
    assert not (tmp_path / "x").exists()


def test_the_shard_writer_imports_no_tensorflow():
    probe = ("import sys, fashion_tf.make_tfrecords, fashion_tf.beam.shards; "
             "assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0
