"""make_tfrecords.catalog: images resolved to files and label indices, in image-id order, problems counted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fashion_tf.errors import UserError
from fashion_tf.labels import LabelMap
from fashion_tf.make_tfrecords.catalog import Catalog, build_catalog
from fashion_tf.make_tfrecords.inputs import LoadedInput, RawRecord
from fashion_tf.make_tfrecords.skipped import Skipped


def loaded(tmp_path: Path, records: list[RawRecord], pre_skipped: Skipped | None = None) -> LoadedInput:
    return LoadedInput("manifest", records, LabelMap.from_ids(["1", "2", "3"]), [], pre_skipped or Skipped())


def test_rows_come_in_image_id_order_with_sizes_and_label_indices(tmp_path):
    for name, size in (("b", 3), ("a", 5), ("c", 7)):
        (tmp_path / name).write_bytes(b"x" * size)
    records = [RawRecord("b", tmp_path / "b", ("3", "1")), RawRecord("a", tmp_path / "a", ()),
               RawRecord("c", tmp_path / "c", ("2", "2"))]
    catalog, skipped = build_catalog(loaded(tmp_path, records), "input")
    assert catalog.ids == ["a", "b", "c"] and catalog.sizes == [5, 3, 7]
    assert [labels.tolist() for labels in catalog.labels] == [[], [0, 2], [1]]
    assert catalog.labels[1].dtype == np.int16
    assert skipped.counts == {}
    rows, labels = catalog.label_pairs()
    assert rows.tolist() == [1, 1, 2] and labels.tolist() == [0, 2, 1]


def test_missing_files_and_repeated_ids_are_counted_not_fatal(tmp_path):
    (tmp_path / "a").write_bytes(b"x")
    pre = Skipped()
    pre.add("download_failed", "z", "failed")
    records = [RawRecord("a", tmp_path / "a", ("1",)), RawRecord("a", tmp_path / "a", ("1",)),
               RawRecord("b", None, ("1",)), RawRecord("c", tmp_path / "gone.jpg", ("1",))]
    catalog, skipped = build_catalog(loaded(tmp_path, records, pre), "input")
    assert catalog.ids == ["a"]
    assert skipped.counts == {"download_failed": 1, "duplicate_id": 1, "missing_file": 2}
    assert skipped.examples["missing_file"] == ["b: no image file", f"c: {tmp_path / 'gone.jpg'} (No such file or directory)"]


def test_an_unknown_label_id_names_the_input_and_the_image(tmp_path):
    (tmp_path / "a").write_bytes(b"x")
    with pytest.raises(UserError, match="input.csv: image a: unknown label id '9'"):
        build_catalog(loaded(tmp_path, [RawRecord("a", tmp_path / "a", ("1", "9"))]), "input.csv")


def test_an_empty_catalog_has_no_label_pairs():
    rows, labels = Catalog().label_pairs()
    assert rows.size == labels.size == 0
