"""make_tfrecords.options: every bad value refused in one place, before anything is read or written."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from fashion_tf.errors import UserError
from fashion_tf.make_tfrecords.options import Options


@pytest.mark.parametrize("changes, message", [
    ({"val_fraction": 1.0}, "--val-fraction and --test-fraction must be in"),
    ({"val_fraction": -0.1}, "--val-fraction and --test-fraction must be in"),
    ({"test_fraction": math.nan}, "--val-fraction and --test-fraction must be in"),
    ({"val_fraction": 0.6, "test_fraction": 0.4}, "--val-fraction \\+ --test-fraction must be < 1"),
    ({"shard_size_mb": 0}, "--shard-size-mb must be > 0"),
    ({"shard_size_mb": math.nan}, "--shard-size-mb must be > 0"),
    ({"shard_size_mb": math.inf}, "--shard-size-mb must be > 0"),
    ({"min_shards": 0}, "--min-shards and --workers must be >= 1"),
    ({"workers": 0}, "--min-shards and --workers must be >= 1"),
    ({"max_size": 4}, "--max-size must be >= 8"),
    ({"max_pixels": 0}, "--max-pixels must be >= 1"),
    ({"groups": (" ",)}, "--groups is empty"),
])
def test_bad_values_name_the_flag(tmp_path, changes, message):
    options = Options(input=tmp_path, output_dir=tmp_path / "out", **changes)
    with pytest.raises(UserError, match=message):
        options.check()
    assert not (tmp_path / "out").exists()


def test_an_output_dir_that_cannot_be_a_folder_is_refused_before_the_input_is_looked_at(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    for out in (tmp_path / "file", tmp_path / "file" / "below"):
        with pytest.raises(UserError, match="is a file, not a folder"):
            Options(input=tmp_path / "no such input", output_dir=out).check()
    assert (tmp_path / "file").read_text() == "not a folder"


def test_paths_and_groups_are_normalised_and_good_options_pass(tmp_path):
    options = Options(input=str(tmp_path), output_dir=str(tmp_path / "Out-2"), groups=["gender", "usage"])
    assert isinstance(options.input, Path) and isinstance(options.output_dir, Path)
    assert options.groups == ("gender", "usage")
    options.check()
    assert options.dataset_name == "out_2"
    assert Options(input=tmp_path, output_dir=tmp_path / "2026", name="My Set").dataset_name == "my_set"
    assert Options(input=tmp_path, output_dir=tmp_path / "2026").dataset_name == "ds_2026"
