"""A Beam file system for the tests: URLs fttest://<path> stored under a local folder, with an object store's
semantics (no folders, whole objects). Registered with apache_beam.io.filesystems by being defined (Beam finds
FileSystem subclasses by their scheme); `rooted(folder)` points it at a test's folder."""

from __future__ import annotations

import os

from apache_beam.io.filesystem import FileMetadata
from apache_beam.io.localfilesystem import LocalFileSystem

SCHEME = "fttest"
PREFIX = f"{SCHEME}://"


class RootedFileSystem(LocalFileSystem):
    root = "/nonexistent"

    @classmethod
    def scheme(cls):
        return SCHEME

    def _local(self, url: str) -> str:
        return os.path.join(self.root, url[len(PREFIX):])

    def _url(self, local: str) -> str:
        return PREFIX + os.path.relpath(local, self.root)

    def join(self, basepath, *paths):
        return "/".join([basepath.rstrip("/"), *(p.strip("/") for p in paths)])

    def split(self, path):
        head, _, tail = path.rstrip("/").rpartition("/")
        return head, tail

    def has_dirs(self):
        return False

    def mkdirs(self, path):
        os.makedirs(self._local(path), exist_ok=True)

    def _list(self, dir_or_prefix):
        local = self._local(dir_or_prefix)
        folder = local if os.path.isdir(local) else os.path.dirname(local)
        for dirpath, _, files in os.walk(folder):
            for name in files:
                path = os.path.join(dirpath, name)
                if path.startswith(local):
                    yield FileMetadata(self._url(path), os.path.getsize(path), os.path.getmtime(path))

    def create(self, path, *args, **kwargs):
        os.makedirs(os.path.dirname(self._local(path)), exist_ok=True)
        return super().create(self._local(path), *args, **kwargs)

    def open(self, path, *args, **kwargs):
        return super().open(self._local(path), *args, **kwargs)

    def exists(self, path):
        return os.path.isfile(self._local(path))

    def size(self, path):
        return super().size(self._local(path))

    def last_updated(self, path):
        return super().last_updated(self._local(path))

    def metadata(self, path):
        local = self._local(path)
        return FileMetadata(path, os.path.getsize(local), os.path.getmtime(local))

    def delete(self, paths):
        super().delete([self._local(p) for p in paths])


def rooted(folder) -> str:
    """Store fttest:// objects under `folder`; returns the URL of the store's top."""
    RootedFileSystem.root = str(folder)
    return PREFIX + "bucket"
