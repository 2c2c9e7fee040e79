"""make_tfrecords.writer: one shard and its receipt, images made ready, skipped images, a full disk."""

from __future__ import annotations

import hashlib
import io
import os
import re
import resource
import signal
import subprocess

import numpy as np
import pytest
from make_tfrecords_fixtures import TOOL_ENV, image_bytes, one_line_error, parsed_records, run, tool_command
from PIL import Image

from fashion_tf import schema
from fashion_tf.make_tfrecords.plan import ShardJob, ShardTarget
from fashion_tf.make_tfrecords.writer import file_sha256, write_shard
from fashion_tf.manifest import ManifestWriter, images_dir, manifest_path
from fashion_tf.shard_folder import ShardFolder, shard_names


def job_of_files(folder, files: dict[str, bytes], labels=(0, 2)) -> ShardJob:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    names = list(files)
    return ShardJob(shard_names("train", 1)[0], "train", tuple(n.split(".")[0] for n in names),
                    tuple(str(folder / n) for n in names), tuple(np.asarray(labels, dtype=np.int16) for _ in names))


def records_by_id(path) -> dict[str, dict]:
    import tensorflow as tf

    records = {}
    for raw in tf.data.TFRecordDataset(str(path)):
        parsed = {k: v.numpy() for k, v in schema.parse_example(raw).items()}
        records[parsed[schema.SOURCE_ID].decode()] = parsed
    return records


def test_a_shard_and_its_receipt(tmp_path):
    files = {f"{i}.jpg": image_bytes(i) for i in range(5)}
    job = job_of_files(tmp_path / "images", files)
    target = ShardTarget(tmp_path / "out", num_labels=4, max_size=None, max_pixels=10**6)
    receipt = write_shard(target, job)
    folder = ShardFolder(target.output_dir)
    shard = folder.shard_path(job.name)
    assert receipt == folder.read_receipt(job.name)
    assert receipt["sha256"] == file_sha256(shard) == hashlib.sha256(shard.read_bytes()).hexdigest()
    assert (receipt["length"], receipt["num_bytes"], receipt["label_counts"]) == (5, shard.stat().st_size, [5, 0, 5, 0])
    assert receipt["image_bytes"] == sum(len(d) for d in files.values())
    records = records_by_id(shard)
    assert list(records) == ["0", "1", "2", "3", "4"]  # the job's order
    for image_id, record in records.items():
        data = files[f"{image_id}.jpg"]
        assert record[schema.ENCODED] == data and record[schema.LABEL].tolist() == [0, 2]
        assert record[schema.SHA256].decode() == hashlib.sha256(data).hexdigest()
        assert (record[schema.WIDTH], record[schema.HEIGHT], record[schema.FORMAT]) == (12, 8, b"jpeg")
    first = parsed_records(shard)
    assert write_shard(target, job) == receipt  # a repeated job: the same shard, the same receipt
    assert parsed_records(shard) == first and not folder.temp_shards()


def test_unreadable_images_and_decompression_bombs_are_skipped_not_written(tmp_path):
    from conftest import png_bomb

    files = {"good.jpg": image_bytes(1), "bad.jpg": b"\xff\xd8\xff not really a jpeg", "bomb.png": png_bomb()}
    job = job_of_files(tmp_path / "images", files)
    job = ShardJob(job.name, job.split, job.image_ids + ("gone",), job.paths + (str(tmp_path / "gone.jpg"),),
                   job.labels + (job.labels[0],))
    receipt = write_shard(ShardTarget(tmp_path / "out", 3, None, 10**7), job)
    assert receipt["length"] == 1 and receipt["label_counts"] == [1, 0, 1]
    assert receipt["skipped"]["by_reason"] == {"unreadable_image": 1, "too_many_pixels": 1, "unreadable_file": 1}
    assert list(records_by_id(tmp_path / "out" / job.name)) == ["good"]


def test_max_size_downscales_only_big_images_and_other_formats_become_png(tmp_path):
    small = image_bytes(1, "JPEG", size=(12, 8))
    files = {"small.jpg": small, "wide.jpg": image_bytes(2, "JPEG", size=(40, 20)),
             "tall.png": image_bytes(3, "PNG", size=(20, 40)), "anim.gif": image_bytes(4, "GIF", size=(10, 10))}
    job = job_of_files(tmp_path / "images", files)
    write_shard(ShardTarget(tmp_path / "out", 3, 16, 10**6), job)
    records = records_by_id(tmp_path / "out" / job.name)
    assert records["small"][schema.ENCODED] == small  # under the limit: bytes as they were
    for image_id, fmt, size in [("wide", "jpeg", (16, 8)), ("tall", "png", (8, 16)), ("anim", "png", (10, 10))]:
        record = records[image_id]
        image = Image.open(io.BytesIO(record[schema.ENCODED]))
        assert (record[schema.FORMAT].decode(), image.format.lower(), image.size) == (fmt, fmt, size)
        assert (record[schema.WIDTH], record[schema.HEIGHT]) == size
        assert record[schema.SHA256].decode() == hashlib.sha256(record[schema.ENCODED]).hexdigest()


# ---------------------------------------------------------------------------- a full disk


def big_download_folder(root, n: int = 40) -> None:
    """n noise JPEGs of ~80 KB (noise does not compress) in a download folder."""
    images_dir(root).mkdir(parents=True)
    with ManifestWriter(manifest_path(root)) as manifest:
        for i in range(n):
            path = images_dir(root) / f"{i}.jpg"
            path.write_bytes(image_bytes(i, "JPEG", size=(400, 320)))
            manifest.write({"image_id": str(i), "status": "ok", "path": os.fspath(path.relative_to(root)),
                            "labels": [str(i % 3)]})


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs: writes beyond it fail with ENOSPC, as on a full disk."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (the file-size-limit test covers a full disk without it)")
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_defect_a_full_disk_is_one_line_keeps_the_complete_shards_and_a_rerun_resumes(tmp_path, small_disk, capsys):
    """Issue #17: disk full in make_tfrecords was a crash (a traceback). Now: one line naming the shard and the
    folder, exit 2, the partial shard's temporary file removed, the complete shards kept for a re-run."""
    big_download_folder(tmp_path / "dl")  # ~4 MB of images for a 2 MB disk
    out = small_disk / "out"
    argv = ["--input", tmp_path / "dl", "--output-dir", out, "--val-fraction", "0", "--shard-size-mb", "0.3",
            "--workers", "2", "--no-tfds"]
    err = one_line_error(capsys, argv)
    assert re.search(rf"train-\d{{5}}-of-\d{{5}}\.tfrecord: No space left on device while writing into {out};", err)
    assert "the complete shards are kept and a re-run of the same command resumes" in err
    folder = ShardFolder(out)
    assert folder.temp_shards() == []
    complete = {p.name: p.stat().st_mtime_ns for p in sorted(out.glob("train-*")) if folder.read_receipt(p.name)}
    assert complete, "no shard was complete before the disk filled; make the shards smaller"
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)  # room again
    assert run(argv + ["--verify"]) == 0
    assert {name: (out / name).stat().st_mtime_ns for name in complete} == complete  # kept, not rewritten
    assert "kept %d complete shards" % len(complete) in capsys.readouterr().out


def _file_size_limit() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit then fail with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (250_000, 250_000))


def test_the_file_size_limit_counts_as_a_full_disk(tmp_path):
    big_download_folder(tmp_path / "dl", n=12)
    out = tmp_path / "out"
    done = subprocess.run(tool_command("--input", tmp_path / "dl", "--output-dir", out, "--val-fraction", "0",
                                       "--shard-size-mb", "0.5", "--workers", "1", "--no-tfds"),
                          preexec_fn=_file_size_limit, capture_output=True, text=True, env=TOOL_ENV, timeout=300)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert len(errors) == 1 and f"File too large while writing into {out};" in errors[0]
    assert ShardFolder(out).temp_shards() == []
