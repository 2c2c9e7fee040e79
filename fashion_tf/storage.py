"""Where a distributed job keeps what every worker must see: a local (or shared) path, or the URL of a file system
Apache Beam knows (gs://, s3://, hdfs://, ...; `pip install 'apache-beam[gcp]'` for gs://).

Local paths go through os (and fashion_tf.fileio's atomic writes); URLs through apache_beam.io.filesystems, whose
object stores publish an object whole when its writer closes, so a reader never sees half an object either.
Only the Beam engines use URLs; everything else works on local paths.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from fashion_tf.errors import UserError
from fashion_tf.fileio import write_bytes_atomic

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_URL_OR_COLLAPSED = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/")  # pathlib turns gs://b into gs:/b


def is_url(path: str | os.PathLike) -> bool:
    return bool(_URL.match(str(path)))


def check_path(path: str | os.PathLike, what: str, instead: str) -> None:
    """One line when `path`, which must be a file system path here, is a URL; `instead` says what to do."""
    if _URL_OR_COLLAPSED.match(str(path)):
        raise UserError(f"{path}: the {what} must be a file system path, not a URL; {instead}")


def join(base: str | os.PathLike, *parts: str) -> str:
    if is_url(base):
        return "/".join([str(base).rstrip("/"), *(part.strip("/") for part in parts)])
    return os.path.join(base, *parts)


def _filesystems():
    from fashion_tf.beam.pipeline import import_beam

    import_beam()
    from apache_beam.io.filesystems import FileSystems

    return FileSystems


def check_reachable(path: str) -> None:
    """A URL whose file system Beam cannot open (no such scheme, or its extra not installed): one line, now."""
    if is_url(path):
        try:
            _filesystems().get_filesystem(path)
        except ValueError:
            scheme = str(path).split("://", 1)[0]
            raise UserError(f"{path}: Apache Beam has no file system for {scheme}:// here (for gs:// install "
                            "'apache-beam[gcp]')") from None


def exists(path: str) -> bool:
    return _filesystems().exists(path) if is_url(path) else os.path.exists(path)


def read_bytes(path: str) -> bytes:
    if not is_url(path):
        return Path(path).read_bytes()
    with _filesystems().open(path, compression_type="uncompressed") as handle:
        return handle.read()


def write_bytes(path: str, data: bytes) -> None:
    """The whole file at once: a temporary name and a rename on a local disk, one object write on a URL."""
    if not is_url(path):
        write_bytes_atomic(path, data)
        return
    with _filesystems().create(path, compression_type="uncompressed") as handle:
        handle.write(data)


def upload(local_path: str | os.PathLike, path: str) -> None:
    """Copy a local file to `path` (a local path or a URL), complete or not at all."""
    if not is_url(path):
        with open(local_path, "rb") as source:
            write_bytes_atomic(path, source.read())
        return
    with open(local_path, "rb") as source, _filesystems().create(path, compression_type="uncompressed") as target:
        shutil.copyfileobj(source, target, 1 << 20)


def download(path: str, local_path: str | os.PathLike) -> None:
    with open(local_path, "wb") as target:
        target.write(read_bytes(path))


def names(folder: str) -> list[str]:
    """The names of the files directly in `folder` ([] when there is none)."""
    if not is_url(folder):
        return sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    pattern = join(folder, "*")
    matched = _filesystems().match([pattern])[0].metadata_list
    return sorted(meta.path.rsplit("/", 1)[-1] for meta in matched)
