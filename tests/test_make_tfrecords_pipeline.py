"""make_tfrecords.pipeline: prepare / write_shard / finalize, resuming, a truncated shard, one writer per folder."""

from __future__ import annotations

import errno
import json
import os
import pickle
import signal
import subprocess
import time

import pytest
from make_tfrecords_fixtures import (
    TOOL_ENV, image_bytes, make_download_folder, one_line_error, parsed_records, read_split, run, tool_command, tree,
)

from fashion_tf.errors import UserError
from fashion_tf.make_tfrecords import Options, finalize, make_tfrecords, prepare, write_shard
from fashion_tf.manifest import images_dir
from fashion_tf.shard_folder import ShardFolder


def test_prepare_write_shard_finalize_give_what_make_tfrecords_gives(tmp_path):
    make_download_folder(tmp_path / "dl", n=30, failed=1)
    options = dict(input=tmp_path / "dl", shard_size_mb=0.002, tfds=False, name="set")
    with prepare(Options(output_dir=tmp_path / "steps", **options)) as plan:
        assert plan.kept == {} and len(plan.pending()) == len(plan.jobs) > 3
        target, jobs = pickle.loads(pickle.dumps((plan.target, plan.pending())))  # as shipped to workers
        receipts = [write_shard(target, job) for job in reversed(jobs)]  # any order
        info = finalize(plan, receipts)
    whole = make_tfrecords(Options(output_dir=tmp_path / "whole", **options))
    summary = whole.pop("summary")
    assert summary["shards_written"] == len(jobs) and summary["shards_kept"] == 0
    for made in (info, whole):
        made["stratification"].pop("seconds")  # the split's time
    assert info == whole
    for job in jobs:
        assert parsed_records(tmp_path / "steps" / job.name) == parsed_records(tmp_path / "whole" / job.name)
    with prepare(Options(output_dir=tmp_path / "steps", **options)) as again:  # the lock was released
        assert again.resumed and again.pending() == [] and set(again.kept) == {job.name for job in jobs}
        assert finalize(again, [])["splits"] == info["splits"]


def test_finalize_refuses_a_plan_with_unwritten_shards(tmp_path):
    make_download_folder(tmp_path / "dl", n=12, failed=0)
    with prepare(Options(input=tmp_path / "dl", output_dir=tmp_path / "out", shard_size_mb=0.002)) as plan:
        receipts = [write_shard(plan.target, job) for job in plan.jobs[1:]]
        with pytest.raises(UserError, match=f"{plan.jobs[0].name}: not written \\(1 of {len(plan.jobs)} shards"):
            finalize(plan, receipts)
    assert not ShardFolder(tmp_path / "out").info_path.exists()


def test_resume_after_sigkill_keeps_complete_shards_and_matches_a_clean_run(tmp_path):
    make_download_folder(tmp_path / "dl", n=240, failed=0)
    out = tmp_path / "out"
    proc = subprocess.Popen(tool_command("--input", tmp_path / "dl", "--output-dir", out, "--shard-size-mb", "0.002",
                                         "--workers", "1", "--no-tfds"),
                            env=TOOL_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    folder = ShardFolder(out)
    receipts = folder.receipt_path("x").parent
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if receipts.is_dir() and len(list(receipts.iterdir())) >= 3:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    plan = json.loads(folder.plan_path.read_text())
    names = [s["name"] for s in plan["shards"]]
    complete = [n for n in names if (out / n).exists()]
    assert 0 < len(complete) < len(names), "the run was not killed mid-write; make the test input bigger"
    for name, shard in zip(names, plan["shards"]):  # whatever has a final name is a whole shard
        if (out / name).exists():
            assert len(parsed_records(out / name)) == len(shard["rows"])
    kept = {n: (out / n).stat().st_mtime_ns for n in complete if folder.read_receipt(n)}
    assert run(["--input", tmp_path / "dl", "--output-dir", out, "--shard-size-mb", "0.002", "--no-tfds",
                "--verify"]) == 0
    assert {n: (out / n).stat().st_mtime_ns for n in kept} == kept  # not rewritten
    assert not folder.temp_shards()
    clean = tmp_path / "clean"
    assert run(["--input", tmp_path / "dl", "--output-dir", clean, "--shard-size-mb", "0.002", "--no-tfds"]) == 0
    for name in names:  # same records in the same order (bytes may differ: protobuf map order is per process)
        assert parsed_records(out / name) == parsed_records(clean / name)


def test_defect_a_truncated_complete_shard_is_rewritten_on_rerun(tmp_path, capsys):
    """Issue #17: re-running after a complete shard was truncated reported "kept N complete shards" and exit 0."""
    make_download_folder(tmp_path / "dl", n=30, failed=0)
    argv = ["--input", tmp_path / "dl", "--shard-size-mb", "0.002", "--no-tfds"]
    out, clean = tmp_path / "out", tmp_path / "clean"
    assert run(argv + ["--output-dir", out]) == 0
    assert run(argv + ["--output-dir", clean]) == 0
    names = json.loads(ShardFolder(out).plan_path.read_text())["shards"]
    victim = out / names[2]["name"]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    capsys.readouterr()
    assert run(argv + ["--output-dir", out]) == 0
    assert "This run wrote 1 shards" in capsys.readouterr().out
    for shard in names:
        assert parsed_records(out / shard["name"]) == parsed_records(clean / shard["name"])
    receipt = ShardFolder(out).read_receipt(victim.name)
    assert receipt["num_bytes"] == victim.stat().st_size
    assert run(["--output-dir", out, "--verify"]) == 0


def _feed_fifo(fifo, data: bytes, reader: subprocess.Popen) -> None:
    """Write `data` into `fifo` once `reader` has opened it (or give up when it has ended)."""
    deadline = time.monotonic() + 300
    while True:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError as err:
            if err.errno != errno.ENXIO or reader.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    os.set_blocking(fd, True)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def test_defect_a_second_run_is_refused_while_another_writes_the_folder(tmp_path):
    """Issue #17: two make_tfrecords processes could write one output folder at once. The first run here blocks
    on an image that is a FIFO, so it is surely still writing while the second one starts."""
    make_download_folder(tmp_path / "dl", n=10, failed=0)
    fifo = images_dir(tmp_path / "dl") / "1004.jpg"
    fifo.unlink()
    os.mkfifo(fifo)
    out = tmp_path / "out"
    argv = tool_command("--input", tmp_path / "dl", "--output-dir", out, "--val-fraction", "0", "--workers", "1",
                        "--no-tfds")
    first = subprocess.Popen(argv, env=TOOL_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not ShardFolder(out).temp_shards() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # until the first run has its shard open: it then waits on the FIFO
        before = tree(out)
        second = subprocess.run(argv, env=TOOL_ENV, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2 and "Traceback" not in second.stderr
        assert second.stderr.startswith(f"error: {out}: another make_tfrecords run is writing this folder (pid "
                                        f"{first.pid} on ") and second.stderr.count("\n") == 1
        assert tree(out) == before
        _feed_fifo(fifo, image_bytes(99), first)
        assert first.wait(timeout=300) == 0, first.stderr.read()[-2000:]
    finally:
        if first.poll() is None:
            first.kill()
    assert read_split(out, "train")["1004"]["image/encoded"] == image_bytes(99)
    assert run(["--input", tmp_path / "dl", "--output-dir", out, "--val-fraction", "0", "--no-tfds"]) != 2


def test_a_run_where_every_image_fails_does_not_succeed(tmp_path, capsys):
    make_download_folder(tmp_path / "dl", n=4, failed=0)
    for image in images_dir(tmp_path / "dl").iterdir():
        image.write_bytes(b"not an image")
    err = one_line_error(capsys, ["--input", tmp_path / "dl", "--output-dir", tmp_path / "out", "--no-tfds"])
    assert "no image could be written (skipped: {'unreadable_image': 4})" in err
