"""Images + labels -> sharded TFRecords with a stratified validation split, resumable and verifiable.

    python tools/make_tfrecords.py --input PATH --output-dir OUT [--images DIR] [--label-map CSV] ...
    python tools/make_tfrecords.py --output-dir OUT --verify

Inputs (detected from PATH): a download folder (manifest.jsonl + images/), an iMaterialist JSON or
id,url,labels CSV with --images DIR, an attribute CSV such as Kaggle's styles.csv with --images DIR,
or a class-per-folder tree. See tfrecords/README.md for the output layout.

How it works: every image is resolved and stat'ed first (compact metadata only, never image bytes),
the split and the shard membership are computed and written to a plan file, then shards are written
in parallel threads (TFRecordWriter and file reads release the GIL), each under a temporary name that
is renamed when complete. A re-run with the same inputs and options keeps the complete shards.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import math
import os
import shutil
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from fashion_tf import schema
from fashion_tf.errors import UserError, run_cli
from fashion_tf.fileio import atomic_path, write_json_atomic
from fashion_tf.image_guard import DEFAULT_MAX_PIXELS, UnsafeImage, check_image
from fashion_tf.labels import LabelMap
from fashion_tf.shard_folder import SPLITS, ShardFolder, shard_names

CREATED_BY = "fashion_tf.make_tfrecords"
PLAN_VERSION = 1
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"}
SUFFIX_PREFERENCE = (".jpg", ".jpeg", ".png")  # when <id>.jpg and <id>.png both exist
DEFAULT_EXCLUDED_COLUMNS = ("id", "year", "productdisplayname")
FULL_SHARDING_FROM = 100_000  # from this many images on, every split gets --min-shards shards
MIN_EXAMPLES_PER_SHARD = 6250  # below: one shard per 6,250 images of the split (tiny sets: 1)
EXAMPLES_PER_REASON = 5


# ============================================================================ records


@dataclass
class Catalog:
    """Compact per-image metadata: no image bytes (~200 bytes per image)."""

    ids: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)  # 0-based indices, int16/int32

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, image_id: str, path: str, size: int, label_indices: np.ndarray) -> None:
        self.ids.append(image_id)
        self.paths.append(path)
        self.sizes.append(size)
        self.labels.append(label_indices)

    def in_id_order(self) -> "Catalog":
        """The same rows sorted by image id, so the split and the shard plan do not depend on the input's row
        order: a download manifest lists images in the order their downloads finished."""
        order = sorted(range(len(self.ids)), key=self.ids.__getitem__)
        return Catalog([self.ids[i] for i in order], [self.paths[i] for i in order],
                       [self.sizes[i] for i in order], [self.labels[i] for i in order])


@dataclass
class Skipped:
    """Images left out, by reason, with a few example ids each."""

    counts: Counter = field(default_factory=Counter)
    examples: dict = field(default_factory=dict)

    def add(self, reason: str, image_id: str, detail: str = "") -> None:
        self.counts[reason] += 1
        examples = self.examples.setdefault(reason, [])
        if len(examples) < EXAMPLES_PER_REASON:
            examples.append(f"{image_id}: {detail}" if detail else image_id)

    def merge(self, other: "Skipped") -> None:
        for reason, count in other.counts.items():
            self.counts[reason] += count
            room = EXAMPLES_PER_REASON - len(self.examples.setdefault(reason, []))
            self.examples[reason].extend(other.examples.get(reason, [])[: max(room, 0)])

    def to_dict(self) -> dict:
        return {"total": sum(self.counts.values()), "by_reason": dict(self.counts), "examples": self.examples}

    @classmethod
    def from_dict(cls, data: dict) -> "Skipped":
        return cls(Counter(data.get("by_reason", {})), {k: list(v) for k, v in data.get("examples", {}).items()})


@dataclass
class RawRecord:
    image_id: str
    path: Path | None  # None: no image file found
    label_ids: tuple[str, ...]


@dataclass
class LoadedInput:
    kind: str
    records: Iterable[RawRecord]
    label_map: LabelMap
    source_files: list[Path]  # hashed into the plan fingerprint
    pre_skipped: Skipped = field(default_factory=Skipped)


# ============================================================================ input kinds


def detect_input_kind(path: Path) -> str:
    if not path.exists():
        raise UserError(f"{path}: no such file or directory")
    if path.is_dir():
        if (path / "manifest.jsonl").is_file():
            return "manifest"
        if any(child.is_dir() and not child.name.startswith(".") for child in path.iterdir()):
            return "class_folders"
        raise UserError(f"{path}: folder has neither a manifest.jsonl nor class subfolders")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: file is empty")
    if path.suffix.lower() == ".jsonl":
        return "manifest"
    with open(path, "rb") as handle:
        head = handle.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    if not head:
        raise UserError(f"{path}: file is empty")
    if head[:1] in (b"{", b"["):
        return "imaterialist"
    header = [c.strip().lower() for c in next(csv.reader([head.split(b"\n", 1)[0].decode("utf-8", "replace")]))]
    if "url" in header:
        return "imaterialist"  # id,url,labels CSV: read by fashion_tf.sources
    return "attribute_csv"


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

    def find(self, image_id: str) -> Path | None:
        name = self._by_stem.get(image_id)
        return self.folder / name if name else None


def _suffix_rank(name: str) -> int:
    suffix = Path(name).suffix.lower()
    return SUFFIX_PREFERENCE.index(suffix) if suffix in SUFFIX_PREFERENCE else len(SUFFIX_PREFERENCE)


def _images_folder(images: Path | None, input_path: Path) -> ImageIndex:
    if images is None:
        guess = input_path.parent / "images"
        if not guess.is_dir():
            raise UserError(f"{input_path.name}: --images DIR is required (folder holding <imageId>.jpg files)")
        images = guess
    return ImageIndex(images)


def _read_manifest(path: Path) -> tuple[list[RawRecord], Skipped]:
    """Last row per image id wins; only status "ok" rows become records."""
    folder = path.parent if path.is_file() else path
    manifest = path if path.is_file() else path / "manifest.jsonl"
    latest: dict[str, dict] = {}
    with open(manifest, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                image_id = str(row["image_id"])
            except json.JSONDecodeError as err:
                raise UserError(f"{manifest}: line {line_no}: not valid JSON ({err.msg})") from None
            except (KeyError, TypeError):
                raise UserError(f"{manifest}: line {line_no}: missing \"image_id\"") from None
            latest.pop(image_id, None)  # re-insert so input order follows the last row
            latest[image_id] = {k: row.get(k) for k in ("status", "path", "labels", "sha256")}
            latest[image_id]["line"] = line_no
    if not latest:
        raise UserError(f"{manifest}: no rows")
    records, skipped = [], Skipped()
    for image_id, row in latest.items():
        if row["status"] != "ok":
            skipped.add("download_failed", image_id, str(row["status"]))
            continue
        if not row["path"]:
            raise UserError(f"{manifest}: line {row['line']}: image {image_id}: status ok but no \"path\"")
        labels = row["labels"] or []
        if not isinstance(labels, list):
            raise UserError(f"{manifest}: line {row['line']}: image {image_id}: \"labels\" must be a list")
        records.append(RawRecord(image_id, folder / row["path"], tuple(str(x) for x in labels)))
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


def _read_attribute_csv(
    path: Path, images: Path | None, groups: Sequence[str] | None, label_map_path: Path | None
) -> tuple[list[RawRecord], LabelMap]:
    """Each chosen column is a label group; each distinct value of it a label."""
    index = _images_folder(images, path)
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
    group_names = [header[c] for c in columns]
    if label_map_path is not None:
        label_map = read_label_map(label_map_path)
    else:
        values = [sorted({r[1][g] for r in rows if r[1][g]}) for g in range(len(columns))]
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
                records.append(RawRecord(f"{class_name}/{file.stem}", file, (class_name,)))
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
    if kind == "class_folders":
        records, label_map = _read_class_folders(path)
        if label_map_path is not None:
            label_map = read_label_map(label_map_path)
        return LoadedInput(kind, records, label_map, sources)
    if kind == "attribute_csv":
        records, label_map = _read_attribute_csv(path, images, groups, label_map_path)
        return LoadedInput(kind, records, label_map, sources)
    if kind == "manifest":
        records, skipped = _read_manifest(path)
        if path.is_dir():
            sources.insert(0, path / "manifest.jsonl")
    else:
        records, skipped = list(_read_imaterialist(path, images)), Skipped()
    if not records and not skipped.counts:
        raise UserError(f"{path}: no images listed")
    if label_map_path is not None:
        label_map = read_label_map(label_map_path)
    else:
        label_map = LabelMap.from_ids(x for r in records for x in r.label_ids)
    return LoadedInput(kind, records, label_map, sources, skipped)


def build_catalog(loaded: LoadedInput, source_name: str) -> tuple[Catalog, Skipped]:
    """Resolve labels to indices and stat every image file (missing files are skipped, not fatal); rows in
    image-id order."""
    catalog, skipped = Catalog(), Skipped()
    skipped.merge(loaded.pre_skipped)
    index_dtype = np.int16 if len(loaded.label_map) < 2**15 else np.int32
    seen: set[str] = set()
    for record in loaded.records:
        try:
            indices = loaded.label_map.indices(record.label_ids).astype(index_dtype)
        except UserError as err:
            raise UserError(f"{source_name}: image {record.image_id}: {err}") from None
        if record.image_id in seen:
            skipped.add("duplicate_id", record.image_id)
            continue
        seen.add(record.image_id)
        if record.path is None:
            skipped.add("missing_file", record.image_id, "no image file")
            continue
        try:
            size = os.stat(record.path).st_size
        except OSError as err:
            skipped.add("missing_file", record.image_id, f"{record.path} ({err.strerror})")
            continue
        catalog.add(record.image_id, os.fspath(record.path), size, indices)
    return catalog.in_id_order(), skipped


# ============================================================================ splits


def read_split_ids(path: Path) -> set[str]:
    """Validation ids from a challenge JSON (either shape) or a text file of ids, one per line."""
    if not path.is_file():
        raise UserError(f"{path}: --split-from file not found")
    with open(path, "rb") as handle:
        head = handle.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"{"):
        from fashion_tf.sources import iter_source_records

        ids = {record.image_id for record in iter_source_records(path)}
    else:
        text = path.read_text(encoding="utf-8-sig")
        ids = {line.strip().split(",")[0].strip() for line in text.splitlines() if line.strip()}
        ids.discard("id")
        ids.discard("image_id")
    if not ids:
        raise UserError(f"{path}: --split-from lists no image ids")
    return ids


def stratified_assignment(label_matrix: np.ndarray, fractions: Sequence[float], seed: int) -> np.ndarray:
    """Fold per row (0 = train, 1 = validation, 2 = test) by iterative stratification (Sechidis et al.).

    Runs iterstrat's IterativeStratification on a bool matrix (1 byte per cell, 228 MB at 1M x 228)
    after a seeded shuffle, as MultilabelStratifiedShuffleSplit does, then moves single examples so
    that every label with at least one example per fold appears in every fold.
    """
    from iterstrat.ml_stratifiers import IterativeStratification

    n = label_matrix.shape[0]
    rng = np.random.RandomState(seed)
    order = rng.permutation(n)
    used = np.flatnonzero(label_matrix.any(axis=0))
    shuffled = label_matrix[np.ix_(order, used)]  # one copy; a 0/1 uint8 matrix views as bool for free
    shuffled = shuffled.view(bool) if shuffled.dtype == np.uint8 and shuffled.max(initial=0) <= 1 else shuffled != 0
    r = np.asarray(fractions, dtype=np.float64)
    folds_shuffled = IterativeStratification(labels=shuffled, r=r, random_state=rng)
    del shuffled
    folds = np.empty(n, dtype=np.int8)
    folds[order] = folds_shuffled
    _ensure_labels_in_every_fold(label_matrix, folds, len(fractions), rng)
    return folds


def _ensure_labels_in_every_fold(label_matrix: np.ndarray, folds: np.ndarray, n_folds: int, rng) -> None:
    """A label with >= n_folds examples but none in some fold takes one example from the fold richest in it.

    The example moved is one whose every label keeps at least one example in the fold it leaves.
    """
    counts = np.stack([label_matrix[folds == f].sum(axis=0, dtype=np.int64) for f in range(n_folds)])
    totals = counts.sum(axis=0)
    for label in np.argsort(totals, kind="stable"):
        if totals[label] < n_folds:
            continue
        for target in range(n_folds):
            if counts[target, label]:
                continue
            source = int(np.argmax(counts[:, label]))
            candidates = np.flatnonzero((folds == source) & (label_matrix[:, label] > 0))
            for row in rng.permutation(candidates):
                row_labels = np.flatnonzero(label_matrix[row])
                if np.all(counts[source, row_labels] >= 2):
                    folds[row] = target
                    counts[source, row_labels] -= 1
                    counts[target, row_labels] += 1
                    break


def assign_splits(
    catalog: Catalog, label_map: LabelMap, val_fraction: float, test_fraction: float, seed: int,
    split_ids: set[str] | None,
) -> tuple[np.ndarray, dict]:
    """Split index per image (into SPLITS) and a description of how it was made."""
    n = len(catalog)
    if split_ids is not None:
        folds = np.fromiter((1 if i in split_ids else 0 for i in catalog.ids), dtype=np.int8, count=n)
        matched = int(folds.sum())
        if matched == 0:
            raise UserError("--split-from: none of its ids is among the input images")
        return folds, {"method": "split_from", "listed": len(split_ids), "matched": matched}
    if val_fraction <= 0 and test_fraction <= 0:
        return np.zeros(n, dtype=np.int8), {"method": "none"}
    fractions = [1.0 - val_fraction - test_fraction, val_fraction] + ([test_fraction] if test_fraction > 0 else [])
    label_matrix = label_map.encode_many(catalog.labels)
    started = time.perf_counter()
    folds = stratified_assignment(label_matrix, fractions, seed)
    return folds, {
        "method": "iterative_stratification",
        "library": "iterstrat.ml_stratifiers.IterativeStratification",
        "seed": seed,
        "seconds": round(time.perf_counter() - started, 2),
    }


def stratification_summary(split_counts: dict[str, np.ndarray], label_map: LabelMap, method: dict) -> dict:
    """Per-label share of each non-train split, plus its spread; labels with >= 2 examples missing a split."""
    totals = sum(split_counts.values())
    n_total = sum(int(c.sum()) for c in split_counts.values()) or 1
    summary = dict(method)
    summary["label_fraction"] = {}
    summary["labels_missing"] = {}
    for split, counts in split_counts.items():
        has = totals > 0
        fraction = np.where(has, counts / np.maximum(totals, 1), np.nan)
        if split != "train":
            values = fraction[totals >= len(split_counts)]  # labels with enough images to be in every split
            summary["label_fraction"][split] = {
                "overall": round(float(counts.sum() / n_total), 4),
                "min": round(float(values.min()), 4) if values.size else None,
                "median": round(float(np.median(values)), 4) if values.size else None,
                "max": round(float(values.max()), 4) if values.size else None,
                "per_label": [None if np.isnan(v) else round(float(v), 4) for v in fraction],
            }
        missing = [label_map.ids[i] for i in np.flatnonzero((totals >= 2) & (counts == 0))]
        if missing:
            summary["labels_missing"][split] = missing
    return summary


# ============================================================================ plan


@dataclass
class ShardJob:
    name: str
    split: str
    rows: list[int]


def plan_shards(
    catalog: Catalog, folds: np.ndarray, seed: int, shard_size_mb: float, min_shards: int
) -> list[ShardJob]:
    """Seeded shuffle per split, then contiguous chunks of about shard_size_mb each.

    Never fewer shards than parallel readers want: --min-shards per split once the data set has 100k
    images, fewer for small sets (one per 6,250 images of the split).
    """
    jobs = []
    sizes = np.asarray(catalog.sizes, dtype=np.int64)
    large = len(folds) >= FULL_SHARDING_FROM
    for split_index, split in enumerate(SPLITS):
        rows = np.flatnonzero(folds == split_index)
        if rows.size == 0:
            continue
        rows = rows[np.random.default_rng([seed, split_index]).permutation(rows.size)]
        by_size = math.ceil(int(sizes[rows].sum()) / (shard_size_mb * 2**20))
        by_readers = min_shards if large else min(min_shards, math.ceil(rows.size / MIN_EXAMPLES_PER_SHARD))
        count = max(1, min(rows.size, max(by_size, by_readers)))
        for name, chunk in zip(shard_names(split, count), np.array_split(rows, count)):
            jobs.append(ShardJob(name, split, chunk.tolist()))
    return jobs


def fingerprint(catalog: Catalog, label_map: LabelMap, options: dict, source_files: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps(options, sort_keys=True).encode())
    digest.update(json.dumps(label_map.to_dict(), sort_keys=True).encode())
    for path in source_files:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    for image_id, path, size, labels in zip(catalog.ids, catalog.paths, catalog.sizes, catalog.labels):
        digest.update(f"{image_id}\0{path}\0{size}\0{labels.tobytes().hex()}\n".encode())
    return digest.hexdigest()


def existing_plan(out: Path, fp: str) -> dict | None:
    """The plan on disk when it was made from these inputs and options."""
    plan_file = ShardFolder(out).plan_path
    if not plan_file.is_file():
        return None
    try:
        plan = json.loads(plan_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return plan if plan.get("fingerprint") == fp and plan.get("version") == PLAN_VERSION else None


def start_plan(out: Path, plan: dict, overwrite: bool) -> None:
    """Write a fresh plan; refuse to mix with another plan's shards unless --overwrite."""
    if not overwrite:
        if ShardFolder(out).plan_path.is_file():
            raise UserError(
                f"{out}: holds shards planned from other inputs or options (seed, fractions, shard size, images); "
                "pass --overwrite to replace them, or choose another --output-dir"
            )
        if any(p.suffix == ".tfrecord" for p in ShardFolder(out).outputs()):
            raise UserError(f"{out}: holds .tfrecord shards without a plan; pass --overwrite to replace them")
    ShardFolder(out).remove_outputs()
    write_json_atomic(ShardFolder(out).plan_path, plan, indent=None)


# ============================================================================ writing


class ImageProblem(Exception):
    """An image that cannot go into a shard: skipped and reported, not fatal."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def prepare_image(data: bytes, max_size: int | None, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[bytes, str, int, int]:
    """(bytes, format, height, width); bytes unchanged unless a resize is asked or the format is not JPEG/PNG.

    The header is checked first (image_guard): a decompression bomb is skipped, never decoded or written.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        header = check_image(data, max_pixels)
    except UnsafeImage as err:
        raise ImageProblem("too_many_pixels" if err.reason == "too_many_pixels" else "unreadable_image", str(err)) from None
    fmt = header.format if header.format in ("jpeg", "png") else None
    if fmt is not None and (max_size is None or max(header.height, header.width) <= max_size):
        return data, fmt, header.height, header.width
    try:
        image = Image.open(io.BytesIO(data), formats=[fmt.upper()] if fmt else None)
        if fmt == "jpeg":
            image.draft("RGB", (max_size, max_size))  # decode at 1/2, 1/4, 1/8 scale: much faster
        image.load()
        if max_size is not None and max(image.size) > max_size:
            image.thumbnail((max_size, max_size), Image.Resampling.LANCZOS)
        fmt = fmt or "png"  # GIF/BMP/WebP/TIFF become lossless PNG
        if fmt == "jpeg" and image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG" if fmt == "jpeg" else "PNG", **({"quality": 95} if fmt == "jpeg" else {}))
        return buffer.getvalue(), fmt, image.height, image.width
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
        raise ImageProblem("unreadable_image", f"{type(err).__name__}: {err}"[:200]) from None


def write_shard(
    job: ShardJob, catalog: Catalog, out: Path, num_labels: int, max_size: int | None, progress
) -> dict:
    import tensorflow as tf

    label_counts = np.zeros(num_labels, dtype=np.int64)
    skipped, length, image_bytes = Skipped(), 0, 0
    final = out / job.name
    with atomic_path(final) as tmp:
        with tf.io.TFRecordWriter(os.fspath(tmp)) as writer:
            for row in job.rows:
                image_id = catalog.ids[row]
                try:
                    try:
                        with open(catalog.paths[row], "rb") as handle:
                            data = handle.read()
                    except OSError as err:
                        raise ImageProblem("unreadable_file", f"{catalog.paths[row]}: {err.strerror}") from None
                    data, fmt, height, width = prepare_image(data, max_size)
                except ImageProblem as problem:
                    skipped.add(problem.reason, image_id, str(problem))
                    progress(1, 0)
                    continue
                labels = catalog.labels[row]
                writer.write(
                    schema.serialize_example(
                        data, fmt, height, width, labels.tolist(), image_id, hashlib.sha256(data).hexdigest()
                    )
                )
                label_counts[labels] += 1
                length += 1
                image_bytes += len(data)
                progress(1, len(data))
    receipt = {
        "name": job.name,
        "split": job.split,
        "length": length,
        "num_bytes": final.stat().st_size,
        "image_bytes": image_bytes,
        "label_counts": label_counts.tolist(),
        "skipped": skipped.to_dict(),
    }
    # The receipt is written after the rename: a shard without a receipt is rewritten on resume.
    write_json_atomic(ShardFolder(out).receipt_path(job.name), receipt, indent=None)
    return receipt


def write_all_shards(
    jobs: Sequence[ShardJob], catalog: Catalog, out: Path, num_labels: int, max_size: int | None, workers: int
) -> tuple[dict[str, dict], dict]:
    """Write missing shards in parallel threads; return every shard's receipt and write statistics."""
    import tensorflow  # noqa: F401  (imported here, not in the threads, and not timed)
    from tqdm import tqdm

    folder = ShardFolder(out)
    for stale in folder.temp_shards():  # left by a killed run
        stale.unlink()
    receipts = {job.name: folder.read_receipt(job.name) for job in jobs}
    pending = [job for job in jobs if receipts[job.name] is None]
    total_images = sum(len(job.rows) for job in pending)
    lock = threading.Lock()
    written = {"images": 0, "bytes": 0}
    bar = tqdm(total=total_images, unit="img", desc="writing shards", disable=None, smoothing=0.1)

    def progress(images: int, nbytes: int) -> None:
        with lock:
            written["images"] += images
            written["bytes"] += nbytes
            bar.update(images)

    started = time.perf_counter()
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="shard") as pool:
            futures = [pool.submit(write_shard, job, catalog, out, num_labels, max_size, progress) for job in pending]
            for future in futures:
                receipt = future.result()
                receipts[receipt["name"]] = receipt
    finally:
        bar.close()
    seconds = time.perf_counter() - started
    stats = {
        "shards_written": len(pending),
        "shards_kept": len(jobs) - len(pending),
        "seconds": seconds,
        "image_bytes_written": written["bytes"],
        "shard_bytes_written": sum(receipts[job.name]["num_bytes"] for job in pending),
    }
    return receipts, stats


# ============================================================================ metadata


def dataset_info(
    name: str, label_map: LabelMap, jobs: Sequence[ShardJob], receipts: dict, label_matrix_groups: dict,
    stratification: dict, skipped: Skipped,
) -> dict:
    splits: dict[str, dict] = {}
    for job in jobs:
        receipt = receipts[job.name]
        split = splits.setdefault(
            job.split,
            {"num_examples": 0, "num_bytes": 0, "shards": [], "shard_lengths": [],
             "label_counts": np.zeros(len(label_map), dtype=np.int64)},
        )
        split["num_examples"] += receipt["length"]
        split["num_bytes"] += receipt["num_bytes"]
        split["shards"].append(job.name)
        split["shard_lengths"].append(receipt["length"])
        split["label_counts"] += np.asarray(receipt["label_counts"], dtype=np.int64)
    for split in splits.values():
        split["label_counts"] = split["label_counts"].tolist()
    return {
        "name": name,
        "num_labels": len(label_map),
        "created_by": CREATED_BY,
        "splits": splits,
        "groups": label_matrix_groups,
        "stratification": stratification,
        "skipped": skipped.to_dict(),
    }


def group_info(label_map: LabelMap, catalog: Catalog) -> dict:
    """Label indices of each group and whether it is single-choice (no image has two of its labels)."""
    group_of = np.asarray([label_map.group_names().index(g) for g in label_map.groups], dtype=np.int64)
    max_per_group = np.zeros(len(label_map.group_names()), dtype=np.int64)
    for labels in catalog.labels:
        if labels.size:
            np.maximum(max_per_group, np.bincount(group_of[labels], minlength=max_per_group.size), out=max_per_group)
    return {
        group: {"labels": label_map.group_members(group).tolist(), "exclusive": bool(max_per_group[g] <= 1)}
        for g, group in enumerate(label_map.group_names())
    }


def write_tfds_metadata(out: Path, name: str, num_labels: int, info: dict) -> Path:
    """TFDS metadata beside the shards, so that tfds.builder_from_directory(OUT) loads them."""
    import tensorflow_datasets as tfds
    from etils import epath

    template = tfds.core.ShardedFileTemplate(
        data_dir=epath.Path(out),
        template="{SPLIT}-{SHARD_X_OF_Y}.{FILEFORMAT}",
        dataset_name=name,
        filetype_suffix="tfrecord",
    )
    split_infos = [
        tfds.core.SplitInfo(
            name=split, shard_lengths=data["shard_lengths"], num_bytes=data["num_bytes"], filename_template=template
        )
        for split, data in info["splits"].items()
    ]
    tfds.folder_dataset.write_metadata(
        data_dir=out,
        features=schema.tfds_features(num_labels),
        split_infos=split_infos,
        filename_template=template,
        description=f"{name}: multi-label image classification shards written by {CREATED_BY}",
    )
    return out


# ============================================================================ verify


def verify_output(out: Path, workers: int = 2) -> tuple[bool, list[str]]:
    """Read every shard back: record counts, sha256 of every image, every image decodes."""
    from PIL import Image
    from tqdm import tqdm

    folder = ShardFolder(out)
    shards = folder.shard_lengths()
    num_labels = folder.num_labels
    import tensorflow as tf

    bar = tqdm(total=sum(n for _, n in shards), unit="img", desc="verifying", disable=None)
    lock = threading.Lock()
    checked = [0]

    def check(shard: str, expected: int) -> str | None:
        path = out / shard
        if not path.is_file():
            return f"{shard}: missing"
        count = 0
        try:
            for raw in tf.data.TFRecordDataset(os.fspath(path)).as_numpy_iterator():
                example = tf.train.Example.FromString(raw).features.feature
                encoded = example[schema.ENCODED].bytes_list.value[0]
                image_id = example[schema.SOURCE_ID].bytes_list.value[0].decode()
                if hashlib.sha256(encoded).hexdigest() != example[schema.SHA256].bytes_list.value[0].decode():
                    return f"{shard}: record {count} (image {image_id}): sha256 mismatch"
                labels = example[schema.LABEL].int64_list.value
                if labels and not 0 <= min(labels) <= max(labels) < num_labels:
                    return (f"{shard}: record {count} (image {image_id}): label index {max(labels)} outside the "
                            f"{num_labels} labels of {folder.label_map_path.name}")
                try:
                    Image.open(io.BytesIO(encoded)).load()
                except Exception as err:  # any decoder failure is a corrupt record
                    return f"{shard}: record {count} (image {image_id}): image does not decode ({err})"
                count += 1
                with lock:
                    checked[0] += 1
                    bar.update(1)
        except tf.errors.OpError as err:
            return f"{shard}: corrupt after {count} records ({type(err).__name__}: {err.message.splitlines()[0]})"
        except (IndexError, UnicodeDecodeError) as err:
            return f"{shard}: record {count}: malformed example ({err})"
        if count != expected:
            return f"{shard}: {count} records, {folder.info_path.name} says {expected}"
        return None

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        problems = [p for p in pool.map(lambda s: check(*s), shards) if p]
    bar.close()
    return not problems, problems + ([] if problems else [f"verified {len(shards)} shards, {checked[0]:,} records: counts, sha256 and decoding all good"])


# ============================================================================ command


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except None/False ones: their help says what happens when the option is absent."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="make_tfrecords.py",
        description="Write images + labels as sharded TFRecords (train/validation[/test]) with "
        "shard_info.json, label_map.json (the label map) and TFDS metadata; or --verify an output folder.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--input", type=Path, help="download folder (manifest.jsonl), iMaterialist JSON, "
                        "attribute CSV (styles.csv), or class-per-folder tree")
    parser.add_argument("--output-dir", type=Path, required=True, help="folder for shards and metadata (required)")
    parser.add_argument("--images", type=Path, help="folder of <imageId>.<ext> files for JSON/CSV inputs "
                        "(default: images/ beside the input file)")
    parser.add_argument("--label-map", type=Path, help="iMaterialist label map CSV (labelId,taskId,labelName,"
                        "taskName) or a label_map.json; default: derived from the data")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="validation share (stratified)")
    parser.add_argument("--test-fraction", type=float, default=0.0, help="test share (stratified); 0: no test split")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and of the shuffle")
    parser.add_argument("--shard-size-mb", type=float, default=128.0, help="target shard size")
    parser.add_argument("--min-shards", type=int, default=16,
                        help=f"at least this many shards per split once the data set has {FULL_SHARDING_FROM:,} "
                        f"images (below: one per {MIN_EXAMPLES_PER_SHARD:,} images of the split)")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="shards written at once")
    parser.add_argument("--split-from", type=Path, help="validation ids: a challenge JSON (either shape) or a "
                        "text file of ids; overrides --val-fraction")
    parser.add_argument("--groups", help="attribute CSV only: comma-separated columns used as label groups "
                        "(default: all but id, year, productDisplayName)")
    parser.add_argument("--max-size", type=int, help="downscale images whose longer side exceeds this (re-encodes "
                        "only those); default: bytes as-is")
    parser.add_argument("--name", help="dataset name (default: the output folder's name)")
    parser.add_argument("--overwrite", action="store_true", help="replace shards from another plan")
    parser.add_argument("--no-tfds", action="store_true", help="skip the TFDS metadata (dataset_info.json, features.json)")
    parser.add_argument("--verify", action="store_true", help="read every shard back and check it "
                        "(alone, without --input: verify an existing output folder)")
    return parser


def check_options(args: argparse.Namespace) -> None:
    if not 0 <= args.val_fraction < 1 or not 0 <= args.test_fraction < 1:
        raise UserError("--val-fraction and --test-fraction must be in [0, 1)")
    if args.val_fraction + args.test_fraction >= 1:
        raise UserError("--val-fraction + --test-fraction must be < 1")
    if args.shard_size_mb <= 0:
        raise UserError("--shard-size-mb must be > 0")
    if args.min_shards < 1 or args.workers < 1:
        raise UserError("--min-shards and --workers must be >= 1")
    if args.max_size is not None and args.max_size < 8:
        raise UserError("--max-size must be >= 8")
    if args.groups is not None and not [g for g in args.groups.split(",") if g.strip()]:
        raise UserError("--groups is empty")


def dataset_name(args: argparse.Namespace) -> str:
    raw = args.name or args.output_dir.resolve().name or "dataset"
    name = "".join(c if c.isalnum() else "_" for c in raw.lower()).strip("_")
    return name if name and name[0].isalpha() else f"ds_{name}"


def make_tfrecords(args: argparse.Namespace) -> dict:
    """The whole stage; returns dataset_info plus a "summary" block with rates."""
    check_options(args)
    started = time.perf_counter()
    out: Path = args.output_dir
    groups = [g.strip() for g in args.groups.split(",")] if args.groups else None
    loaded = load_input(args.input, args.images, args.label_map, groups)
    catalog, skipped = build_catalog(loaded, args.input.name)
    if len(catalog) == 0:
        raise UserError(f"{args.input}: no usable images ({skipped.to_dict()['by_reason'] or 'none listed'})")
    label_map = loaded.label_map
    split_ids = read_split_ids(args.split_from) if args.split_from else None
    options = {
        "val_fraction": args.val_fraction, "test_fraction": args.test_fraction, "seed": args.seed,
        "shard_size_mb": args.shard_size_mb, "min_shards": args.min_shards, "max_size": args.max_size,
        "groups": groups, "split_ids_sha256": hashlib.sha256("\n".join(sorted(split_ids)).encode()).hexdigest() if split_ids else None, "name": dataset_name(args),
    }
    print_fn = lambda text: print(text, file=sys.stderr)  # noqa: E731
    out.mkdir(parents=True, exist_ok=True)
    fp = fingerprint(catalog, label_map, {k: v for k, v in options.items() if k != "name"}, loaded.source_files)
    plan = None if args.overwrite else existing_plan(out, fp)
    if plan is not None:
        print_fn(f"resuming: the plan in {ShardFolder(out).state_dir} matches these inputs and options")
    else:
        folds, method = assign_splits(
            catalog, label_map, args.val_fraction, args.test_fraction, args.seed, split_ids
        )
        jobs = plan_shards(catalog, folds, args.seed, args.shard_size_mb, args.min_shards)
        plan = {
            "version": PLAN_VERSION, "created_by": CREATED_BY, "fingerprint": fp, "options": options,
            "input": {"kind": loaded.kind, "path": os.fspath(args.input.resolve()), "images": len(catalog)},
            "stratification": method, "skipped": skipped.to_dict(),
            "shards": [{"name": j.name, "split": j.split, "rows": j.rows} for j in jobs],
        }
        start_plan(out, plan, args.overwrite)
    jobs = [ShardJob(s["name"], s["split"], s["rows"]) for s in plan["shards"]]
    label_map.to_json(ShardFolder(out).label_map_path)

    receipts, stats = write_all_shards(jobs, catalog, out, len(label_map), args.max_size, args.workers)
    for receipt in receipts.values():
        skipped.merge(Skipped.from_dict(receipt["skipped"]))
    split_counts = {}
    for job in jobs:
        split_counts.setdefault(job.split, np.zeros(len(label_map), dtype=np.int64))
        split_counts[job.split] += np.asarray(receipts[job.name]["label_counts"], dtype=np.int64)
    stratification = stratification_summary(split_counts, label_map, plan["stratification"])
    info = dataset_info(
        options["name"], label_map, jobs, receipts, group_info(label_map, catalog), stratification, skipped
    )
    write_json_atomic(ShardFolder(out).info_path, info)
    if not args.no_tfds:
        write_tfds_metadata(out, options["name"], len(label_map), info)
    info["summary"] = dict(stats, total_seconds=time.perf_counter() - started, input_kind=loaded.kind)
    return info


def summary_text(info: dict, out: Path) -> str:
    summary = info["summary"]
    splits = ", ".join(
        f"{split} {data['num_examples']:,} images in {len(data['shards'])} shards ({data['num_bytes'] / 2**20:,.1f} MB)"
        for split, data in info["splits"].items()
    )
    mb = summary["shard_bytes_written"] / 2**20
    rate = mb / summary["seconds"] if summary["seconds"] > 0 else float("nan")
    skipped = info["skipped"]
    reasons = ", ".join(f"{k} {v}" for k, v in skipped["by_reason"].items()) or "none"
    fractions = info["stratification"].get("label_fraction", {})
    spread = "; ".join(
        f"{split} share per label (labels with >= {len(info['splits'])} images) min {f['min']} / median {f['median']} "
        f"/ max {f['max']} (overall {f['overall']})"
        for split, f in fractions.items()
    )
    missing = info["stratification"].get("labels_missing", {})
    missing_text = "; ".join(f"{len(v)} labels with >= 2 images absent from {k}" for k, v in missing.items())
    return (
        f"Wrote {out}: {splits}; {info['num_labels']} labels. Skipped {skipped['total']:,} images ({reasons}). "
        f"This run wrote {summary['shards_written']} shards ({mb:,.1f} MB in {summary['seconds']:.1f} s, "
        f"{rate:,.1f} MB/s), kept {summary['shards_kept']} complete shards from an earlier run. "
        f"Split: {info['stratification'].get('method')}. {spread}{'. ' + missing_text if missing_text else ''}."
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.input is None:
        if not args.verify:
            raise UserError("--input is required (or --verify alone to check an existing --output-dir)")
        ok, lines = verify_output(args.output_dir, args.workers)
        print("\n".join(lines), file=sys.stdout if ok else sys.stderr)
        return 0 if ok else 1
    info = make_tfrecords(args)
    print(summary_text(info, args.output_dir))
    if args.verify:
        ok, lines = verify_output(args.output_dir, args.workers)
        print("\n".join(lines), file=sys.stdout if ok else sys.stderr)
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
