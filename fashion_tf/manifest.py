"""manifest.jsonl, the download folder's record: one reader and one writer, shared by download and make_tfrecords.

    DIR/images/<id>.jpg
    DIR/manifest.jsonl   one JSON object per line: image_id, status ("ok" | "failed"), path, labels, width,
                         height, sha256, bytes, url, source_format, error, error_detail. The last row of an
                         id wins (a retried image gets a new row).
    DIR/manifest.parts/part-NNNNN-of-NNNNN.jsonl
                         the same rows, one file per work shard of a distributed (Beam) download. Reading a
                         folder reads the parts, then manifest.jsonl; across files an ok row is never undone
                         by a failed one.

Rows are appended whole, one write() per row, so appenders never interleave a line. A line torn by a killed
writer is sealed by the next writer and skipped (and counted) by every reader. A folder lock keeps two runs of
the same job from writing one folder at once; runs of different shares of a job (--shard-index/--num-shards)
may share it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from fashion_tf.errors import UserError
from fashion_tf.fileio import FolderBusy, folder_lock

MANIFEST_NAME = "manifest.jsonl"
PARTS_DIR = "manifest.parts"
IMAGES_DIR = "images"
OK, FAILED = "ok", "failed"


def manifest_path(folder: str | os.PathLike) -> Path:
    return Path(folder) / MANIFEST_NAME


def images_dir(folder: str | os.PathLike) -> Path:
    return Path(folder) / IMAGES_DIR


def part_name(index: int, count: int) -> str:
    """A work shard's manifest part, relative to its download folder."""
    return f"{PARTS_DIR}/part-{index:05d}-of-{count:05d}.jsonl"


def part_path(folder: str | os.PathLike, index: int, count: int) -> Path:
    return Path(folder) / part_name(index, count)


def manifest_files(folder: str | os.PathLike) -> list[Path]:
    """The files that hold a download folder's rows, in reading order: the parts, then manifest.jsonl."""
    folder = Path(folder)
    files = sorted((folder / PARTS_DIR).glob("part-*.jsonl")) if (folder / PARTS_DIR).is_dir() else []
    return files + ([manifest_path(folder)] if manifest_path(folder).is_file() else [])


def describe_files(folder: str | os.PathLike) -> str:
    """Where a folder's rows are, for summaries: manifest.jsonl and/or the parts folder."""
    files = manifest_files(folder)
    parts = [f for f in files if f.parent.name == PARTS_DIR]
    shown = ([f"{parts[0].parent}/ ({len(parts)} parts)"] if parts else []) + [str(f) for f in files if f not in parts]
    return " and ".join(shown) or "none yet"


@dataclass(frozen=True)
class Entry:
    """The last row of one image id: what later stages need of it."""

    status: str
    path: str  # relative to the download folder; "" when failed
    labels: tuple[str, ...] = ()
    line: int = 0  # 1-based line number of the row, for messages
    file: int = 0  # which of the folder's manifest files it came from


@dataclass
class Manifest:
    """The last row per image id, in the order ids were last written, and the lines that could not be read."""

    path: Path
    entries: dict[str, Entry] = field(default_factory=dict)
    torn_lines: int = 0

    def ok_ids(self) -> Iterator[str]:
        return (image_id for image_id, entry in self.entries.items() if entry.status == OK)


def read_manifest(path: str | os.PathLike, with_labels: bool = True) -> Manifest:
    """Read a download folder's rows (manifest.jsonl and any parts), or one manifest file. Unreadable lines (a row
    torn by a killed writer) are skipped and counted, never fatal: the rows after them are whole. A folder
    without rows reads as empty."""
    path = Path(path)
    files = manifest_files(path) if path.is_dir() or not path.suffix else [path]
    manifest = Manifest(manifest_path(path) if path.is_dir() or not path.suffix else path)
    for file_index, file in enumerate(files):
        if file.exists():
            _read_rows(file, file_index, manifest, with_labels)
    return manifest


def _read_rows(file: Path, file_index: int, manifest: Manifest, with_labels: bool) -> None:
    entries = manifest.entries
    with open(file, "rb") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                image_id = str(row["image_id"])
                status = row["status"]
                labels = tuple(str(x) for x in row.get("labels") or ()) if with_labels else ()
            except (ValueError, KeyError, TypeError):
                manifest.torn_lines += 1
                continue
            earlier = entries.pop(image_id, None)  # re-inserted, so the order follows each id's last row
            if earlier is not None and earlier.file < file_index and earlier.status == OK and status != OK:
                entries[image_id] = earlier  # another file's ok row stands
                continue
            entries[image_id] = Entry(status, row.get("path") or "", labels, line_no, file_index)


class ManifestWriter:
    """Appends one row per write() call: a single write() on an O_APPEND file (atomic against other appenders on
    a local file system)."""

    def __init__(self, path: str | os.PathLike):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "ab", buffering=0)
        if self._file.tell() > 0 and not _ends_with_newline(path):
            self._file.write(b"\n")  # seal a torn last line so the next row starts clean

    def write(self, row: dict) -> None:
        self._file.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "ManifestWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"


def lock_for_writing(folder: str | os.PathLike, shard_index: int = 0, num_shards: int = 1):
    """Context manager: this process writes `folder` for share shard_index of num_shards.

    The whole job (num_shards == 1) holds the folder exclusively; a share holds the folder shared and its own
    share exclusively. A second run of the same job or share gets a one-line UserError instead of downloading
    everything again into a duplicated manifest.
    """
    folder = Path(folder)
    try:
        if num_shards == 1:
            return folder_lock(folder, ".download.lock", exclusive=True)
        return _share_lock(folder, shard_index, num_shards)
    except FolderBusy as busy:
        raise _busy_error(folder, busy) from None


class _share_lock:
    def __init__(self, folder: Path, shard_index: int, num_shards: int):
        self._whole = folder_lock(folder, ".download.lock", exclusive=False)
        try:
            self._share = folder_lock(folder, f".download-{shard_index}-of-{num_shards}.lock", exclusive=True)
        except FolderBusy:
            self._whole.release()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._share.release()
        self._whole.release()


def _busy_error(folder: Path, busy: FolderBusy) -> UserError:
    return UserError(f"{folder}: another download is writing this folder ({busy.holder}); wait for it to end, or "
                     "give each machine its own --shard-index of the same --num-shards")
