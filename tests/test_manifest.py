"""fashion_tf.manifest: one reader for manifest.jsonl and its parts, whole-line appends, the folder lock."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO
from fashion_tf.errors import UserError
from fashion_tf.manifest import ManifestWriter, lock_for_writing, manifest_path, part_path, read_manifest


def row(image_id: str, status: str = "ok", **extra) -> dict:
    return {"image_id": image_id, "status": status, "path": f"images/{image_id}.jpg" if status == "ok" else None,
            "labels": ["1"], **extra}


def test_last_row_wins_torn_lines_are_counted_and_a_writer_seals_them(tmp_path):
    with ManifestWriter(manifest_path(tmp_path)) as writer:
        writer.write(row("a", "failed"))
        writer.write(row("b"))
        writer.write(row("a"))
    with open(manifest_path(tmp_path), "a") as handle:
        handle.write('{"image_id": "c", "sta')  # a writer killed mid-line
    with ManifestWriter(manifest_path(tmp_path)) as writer:
        writer.write(row("d"))
    manifest = read_manifest(tmp_path)
    assert list(manifest.entries) == ["b", "a", "d"] and manifest.torn_lines == 1
    assert manifest.entries["a"].status == "ok" and manifest.entries["d"].path == "images/d.jpg"
    assert manifest.entries["b"].labels == ("1",) and read_manifest(tmp_path, with_labels=False).entries["b"].labels == ()


def test_parts_are_read_with_the_main_manifest_and_an_ok_row_is_not_undone_by_another_file(tmp_path):
    for index, rows in enumerate([[row("a"), row("b", "failed")], [row("c")]]):
        with ManifestWriter(part_path(tmp_path, index, 2)) as writer:
            for item in rows:
                writer.write(item)
    with ManifestWriter(manifest_path(tmp_path)) as writer:
        writer.write(row("a", "failed", error="http_503"))  # a later local run failed where a part had it ok
        writer.write(row("b"))  # ... and got one that had failed
    entries = read_manifest(tmp_path).entries
    assert {k: e.status for k, e in entries.items()} == {"a": "ok", "b": "ok", "c": "ok"}
    assert read_manifest(part_path(tmp_path, 0, 2)).entries["b"].status == "failed"  # one file on its own


def test_an_empty_or_missing_folder_reads_as_empty(tmp_path):
    assert read_manifest(tmp_path / "nowhere").entries == {}
    assert read_manifest(tmp_path).entries == {}


def test_the_lock_admits_shares_of_one_job_and_refuses_a_second_run_in_another_process(tmp_path):
    with lock_for_writing(tmp_path, 0, 2), lock_for_writing(tmp_path, 1, 2):
        with pytest.raises(UserError, match="another download is writing this folder"):
            lock_for_writing(tmp_path, 1, 2)
        with pytest.raises(UserError, match="another download is writing this folder"):
            lock_for_writing(tmp_path)
    probe = (f"from fashion_tf.manifest import lock_for_writing; lock_for_writing({str(tmp_path)!r}); "
             "import sys; sys.stdout.write('locked'); sys.stdout.flush(); sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", probe], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.read(6) == "locked"
        with pytest.raises(UserError, match=r"\(pid \d+ on "):
            lock_for_writing(tmp_path)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    with lock_for_writing(tmp_path):  # released when its process ended
        pass
