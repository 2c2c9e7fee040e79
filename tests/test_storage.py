"""fashion_tf.storage: the same calls on a local path and on a URL of a Beam file system."""

from __future__ import annotations

import pytest

pytest.importorskip("apache_beam")

from fashion_tf import storage  # noqa: E402
from fashion_tf.errors import UserError  # noqa: E402
from object_store import rooted  # noqa: E402


@pytest.mark.parametrize("where", ["local", "url"])
def test_write_read_upload_list(tmp_path, where):
    base = str(tmp_path / "local") if where == "local" else rooted(tmp_path / "store")
    assert storage.is_url(base) == (where == "url")
    target = storage.join(base, "a", "b.json")
    assert not storage.exists(target) and storage.names(storage.join(base, "a")) == []
    storage.write_bytes(target, b'{"x": 1}')
    assert storage.exists(target) and storage.read_bytes(target) == b'{"x": 1}'
    source = tmp_path / "source.bin"
    source.write_bytes(bytes(range(256)) * 1000)
    storage.upload(source, storage.join(base, "a", "c.bin"))
    assert storage.names(storage.join(base, "a")) == ["b.json", "c.bin"]
    storage.download(storage.join(base, "a", "c.bin"), tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == source.read_bytes()


def test_a_url_beam_cannot_open_is_one_line():
    with pytest.raises(UserError, match="nosuch://b/x: Apache Beam has no file system for nosuch://"):
        storage.check_reachable("nosuch://b/x")
    storage.check_reachable("/tmp/anything")  # local paths need no file system of Beam's
