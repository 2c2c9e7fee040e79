"""Atomic file writes: write to a temporary name in the same folder, then rename.

A reader never sees a half-written file under the final name, even if the writer is killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from fashion_tf.errors import UserError


def _default_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def temp_path_for(path: str | os.PathLike) -> Path:
    """A unique temporary name beside `path`, recognisable by its `.tmp` suffix.

    mkstemp creates files readable by their owner only; give them the usual umask mode instead.
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, _default_file_mode())
    os.close(fd)
    return Path(name)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is renamed to `path`, on error removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any):
    """open() for writing whose result appears under `path` only when the block completes."""
    with atomic_path(path) as tmp:
        with open(tmp, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    with atomic_open(path, "w", encoding="utf-8") as handle:
        json.dump(obj, handle, indent=indent, sort_keys=False)
        handle.write("\n")


class FolderBusy(Exception):
    """Another process holds the lock; `holder` says who, as far as the lock file tells."""

    def __init__(self, holder: str):
        super().__init__(holder)
        self.holder = holder


class folder_lock:
    """An advisory lock (flock) on `folder/name`, taken at once or FolderBusy; released on exit or when the
    process ends, however it ends (a killed run never leaves a stale lock). Shared locks admit each other."""

    def __init__(self, folder: str | os.PathLike, name: str, exclusive: bool = True):
        import fcntl
        import socket

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / name
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(self._fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 200, 0).decode("utf-8", "replace").strip() or "a running process"
            os.close(self._fd)
            raise FolderBusy(holder) from None
        if exclusive:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> "folder_lock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def check_folder_writable(folder: Path, what: str) -> None:
    """One line, before any work, when `folder` is a file or cannot be created or written."""
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise UserError(f"{folder}: cannot be the {what}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{folder}: cannot write the {what} here: {existing} is not writable")


def read_json(path: str | os.PathLike, what: str) -> Any:
    """The parsed JSON file; a missing file ("{path}: {what} not found") or bad JSON is one UserError naming it."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: {what} not found") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON: {err.msg} at line {err.lineno} column {err.colno}") from None
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not valid JSON (not UTF-8: {err.reason} at byte {err.start})") from None


@contextlib.contextmanager
def fields_of(path: str | os.PathLike, kind: str) -> Iterator[None]:
    """Inside: reading fields of a parsed `kind` file; a missing key or a value of the wrong type is one UserError."""
    try:
        yield
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"{path}: not a {kind} ({type(err).__name__}: {err})") from None
