"""The input of make_tfrecords: which kind it is, and its images (id, file, label ids) and label map.

Kinds, detected from the path: a download folder (manifest.jsonl + images/, read by fashion_tf.manifest), an
iMaterialist JSON or id,url,labels CSV (read by fashion_tf.sources) with an images folder, an attribute CSV such
as Kaggle's styles.csv with an images folder, or a class-per-folder tree.
"""

from __future__ import annotations

import csv
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from fashion_tf.errors import UserError
from fashion_tf.labels import LabelMap
from fashion_tf.make_tfrecords.skipped import Skipped
from fashion_tf.manifest import OK, images_dir, manifest_path, read_manifest

MANIFEST, IMATERIALIST, ATTRIBUTE_CSV, CLASS_FOLDERS = "manifest", "imaterialist", "attribute_csv", "class_folders"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"}
SUFFIX_PREFERENCE = (".jpg", ".jpeg", ".png")  # when <id>.jpg and <id>.png both exist
DEFAULT_EXCLUDED_COLUMNS = ("id", "year", "productdisplayname")


@dataclass
class RawRecord:
    image_id: str
    path: str | None  # the image file; None: none found
    label_ids: tuple[str, ...]


@dataclass
class LoadedInput:
    kind: str
    records: Iterable[RawRecord]
    label_map: LabelMap
    source_files: list[Path]  # hashed into the plan fingerprint
    pre_skipped: Skipped = field(default_factory=Skipped)


def detect_input_kind(path: Path) -> str:
    if not path.exists():
        raise UserError(f"{path}: no such file or directory")
    if path.is_dir():
        if manifest_path(path).is_file():
            return MANIFEST
        if any(child.is_dir() and not child.name.startswith(".") for child in path.iterdir()):
            return CLASS_FOLDERS
        raise UserError(f"{path}: folder has neither a {manifest_path(path).name} nor class subfolders")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: file is empty")
    if path.suffix.lower() == ".jsonl":
        return MANIFEST
    with open(path, "rb") as handle:
        head = handle.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    if not head:
        raise UserError(f"{path}: file is empty")
    if head[:1] in (b"{", b"["):
        return IMATERIALIST
    header = [c.strip().lower() for c in next(csv.reader([head.split(b"\n", 1)[0].decode("utf-8", "replace")]))]
    if "url" in header:
        return IMATERIALIST  # id,url,labels CSV: read by fashion_tf.sources
    return ATTRIBUTE_CSV


class ImageIndex:
    """<image id> -> file in an images folder, from one directory listing (no per-id stat)."""

    def __init__(self, folder: Path):
        if not folder.is_dir():
            raise UserError(f"{folder}: images folder not found")
        self.folder = folder
        self._by_stem: dict[str, str] = {}
        with os.scandir(folder) as entries:
            for entry in entries:
                stem, dot, suffix = entry.name.rpartition(".")
                if not dot or f".{suffix.lower()}" not in IMAGE_SUFFIXES:
                    continue
                current = self._by_stem.get(stem)
                if current is None or _suffix_rank(entry.name) < _suffix_rank(current):
                    self._by_stem[stem] = entry.name

    def find(self, image_id: str) -> str | None:
        name = self._by_stem.get(image_id)
        return os.path.join(self.folder, name) if name else None


def _suffix_rank(name: str) -> int:
    suffix = Path(name).suffix.lower()
    return SUFFIX_PREFERENCE.index(suffix) if suffix in SUFFIX_PREFERENCE else len(SUFFIX_PREFERENCE)


def _images_folder(images: Path | None, input_path: Path) -> ImageIndex:
    if images is None:
        guess = images_dir(input_path.parent)
        if not guess.is_dir():
            raise UserError(f"{input_path.name}: --images DIR is required (folder holding <imageId>.jpg files)")
        images = guess
    return ImageIndex(images)


def _read_manifest(path: Path) -> tuple[list[RawRecord], Skipped]:
    """The last row per image id; only status "ok" rows become records. A torn line (a download killed while
    writing it) is skipped and counted, as every reader of the manifest does."""
    manifest = read_manifest(path)
    if not manifest.entries:
        torn = f" ({manifest.torn_lines} unreadable lines)" if manifest.torn_lines else ""
        raise UserError(f"{manifest.path}: no rows{torn}")
    records, skipped = [], Skipped()
    if manifest.torn_lines:
        skipped.add("torn_manifest_line", manifest.path.name, f"{manifest.torn_lines} lines not valid JSON",
                    count=manifest.torn_lines)
    folder = os.fspath(manifest.path.parent)
    for image_id, entry in manifest.entries.items():
        if entry.status != OK:
            skipped.add("download_failed", image_id, str(entry.status))
            continue
        if not entry.path:
            raise UserError(f"{manifest.path}: line {entry.line}: image {image_id}: status ok but no \"path\"")
        records.append(RawRecord(image_id, os.path.join(folder, entry.path), entry.labels))
    return records, skipped


def _read_imaterialist(path: Path, images: Path | None) -> Iterator[RawRecord]:
    from fashion_tf.sources import iter_source_records

    index = _images_folder(images, path)
    for record in iter_source_records(path):
        yield RawRecord(record.image_id, index.find(record.image_id), tuple(record.labels))


def _attribute_columns(path: Path, header: list[str], groups: Sequence[str] | None) -> tuple[int, list[int]]:
    lowered = [h.strip().lower() for h in header]
    id_candidates = [i for i, h in enumerate(lowered) if h in ("id", "image_id", "imageid")]
    if not id_candidates:
        raise UserError(f"{path}: no id column (expected a column named id, image_id or imageId)")
    if groups:
        columns = []
        for group in groups:
            if group not in header:
                raise UserError(f"{path}: --groups column {group!r} not in the header ({', '.join(header)})")
            columns.append(header.index(group))
    else:
        columns = [i for i, h in enumerate(lowered) if h not in DEFAULT_EXCLUDED_COLUMNS and i != id_candidates[0]]
    if not columns:
        raise UserError(f"{path}: no attribute columns to use as label groups")
    return id_candidates[0], columns


def _read_attribute_rows(path: Path, groups: Sequence[str] | None) -> tuple[list[str], list[tuple[str, tuple[str, ...]]]]:
    """(group names, [(image id, one value per group)]) of an attribute CSV."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header:
            raise UserError(f"{path}: file is empty")
        id_col, columns = _attribute_columns(path, header, groups)
        rows: list[tuple[str, tuple[str, ...]]] = []
        for line_no, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) < len(header):
                # Kaggle's styles.csv has unquoted commas in its last column; short rows are broken.
                raise UserError(f"{path}: line {line_no}: {len(row)} fields, header has {len(header)}")
            image_id = row[id_col].strip()
            if not image_id:
                raise UserError(f"{path}: line {line_no}: empty id")
            rows.append((image_id, tuple(sys.intern(row[c].strip()) for c in columns)))
    if not rows:
        raise UserError(f"{path}: no rows")
    return [header[c] for c in columns], rows


def _read_attribute_csv(
    path: Path, images: Path | None, groups: Sequence[str] | None, label_map_path: Path | None
) -> tuple[list[RawRecord], LabelMap]:
    """Each chosen column is a label group; each distinct value of it a label."""
    index = _images_folder(images, path)
    group_names, rows = _read_attribute_rows(path, groups)
    if label_map_path is not None:
        label_map = read_label_map(label_map_path)
    else:
        values = [sorted({r[1][g] for r in rows if r[1][g]}) for g in range(len(group_names))]
        label_map = LabelMap.from_groups(list(zip(group_names, values)))
    by_group_value = {(g, n): i for i, g, n in zip(label_map.ids, label_map.groups, label_map.names)}
    records = []
    for image_id, values in rows:
        label_ids = []
        for group, value in zip(group_names, values):
            if not value:
                continue
            label_id = by_group_value.get((group, value))
            if label_id is None:
                raise UserError(f"{path}: image {image_id}: unknown label {group}={value!r} (not in the label map)")
            label_ids.append(label_id)
        records.append(RawRecord(image_id, index.find(image_id), tuple(label_ids)))
    return records, label_map


def _read_class_folders(path: Path) -> tuple[list[RawRecord], LabelMap]:
    records = []
    classes = sorted(child.name for child in path.iterdir() if child.is_dir() and not child.name.startswith("."))
    for class_name in classes:
        for file in sorted((path / class_name).iterdir()):
            if file.is_file() and file.suffix.lower() in IMAGE_SUFFIXES:
                records.append(RawRecord(f"{class_name}/{file.stem}", os.fspath(file), (class_name,)))
    if not records:
        raise UserError(f"{path}: class folders hold no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return records, LabelMap.from_ids(classes, group="class")


def read_label_map(path: Path) -> LabelMap:
    return LabelMap.from_json(path) if path.suffix.lower() == ".json" else LabelMap.from_csv(path)


def load_input(
    path: Path, images: Path | None = None, label_map_path: Path | None = None, groups: Sequence[str] | None = None
) -> LoadedInput:
    kind = detect_input_kind(path)
    sources = [path] if path.is_file() else []
    if label_map_path is not None:
        sources.append(label_map_path)
    if kind == CLASS_FOLDERS:
        records, label_map = _read_class_folders(path)
        if label_map_path is not None:
            label_map = read_label_map(label_map_path)
        return LoadedInput(kind, records, label_map, sources)
    if kind == ATTRIBUTE_CSV:
        records, label_map = _read_attribute_csv(path, images, groups, label_map_path)
        return LoadedInput(kind, records, label_map, sources)
    if kind == MANIFEST:
        records, skipped = _read_manifest(path)
        if path.is_dir():
            sources.insert(0, manifest_path(path))
    else:
        records, skipped = list(_read_imaterialist(path, images)), Skipped()
    if not records and not skipped.counts:
        raise UserError(f"{path}: no images listed")
    if label_map_path is not None:
        label_map = read_label_map(label_map_path)
    else:
        label_map = LabelMap.from_ids(x for r in records for x in r.label_ids)
    return LoadedInput(kind, records, label_map, sources, skipped)
