import json
import os
import stat

import pytest

from fashion_tf.fileio import atomic_open, write_bytes_atomic, write_json_atomic


def test_written_file_appears_whole_with_umask_mode(tmp_path):
    write_json_atomic(tmp_path / "sub" / "a.json", {"x": 1})
    assert json.loads((tmp_path / "sub" / "a.json").read_text()) == {"x": 1}
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "sub" / "a.json").stat().st_mode) == 0o666 & ~umask


def test_failure_leaves_old_content_and_no_temp_file(tmp_path):
    target = tmp_path / "b.bin"
    write_bytes_atomic(target, b"old")
    with pytest.raises(RuntimeError):
        with atomic_open(target, "wb") as handle:
            handle.write(b"half")
            raise RuntimeError("killed")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.bin"]
