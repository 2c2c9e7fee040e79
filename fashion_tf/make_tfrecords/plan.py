"""The shard plan: which images go to which shard, the fingerprint of the inputs it was made from, the plan
file a re-run resumes from, and the jobs (one per shard) that writers receive."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from fashion_tf.errors import UserError
from fashion_tf.fileio import atomic_open, folder_lock, write_json_atomic
from fashion_tf.image_guard import DEFAULT_MAX_PIXELS
from fashion_tf.labels import LabelMap
from fashion_tf.make_tfrecords.catalog import Catalog
from fashion_tf.make_tfrecords.options import Options
from fashion_tf.make_tfrecords.skipped import Skipped
from fashion_tf.shard_folder import SPLITS, SHARD_SUFFIX, ShardFolder, shard_names

CREATED_BY = "fashion_tf.make_tfrecords"
PLAN_VERSION = 1
FULL_SHARDING_FROM = 100_000  # from this many images on, every split gets --min-shards shards
MIN_EXAMPLES_PER_SHARD = 6250  # below: one shard per 6,250 images of the split (tiny sets: 1)


class PlannedShard(NamedTuple):
    name: str
    split: str
    rows: list[int]  # catalog rows, in write order


@dataclass(frozen=True)
class ShardTarget:
    """What every shard writer needs besides its job: a few values, cheap to ship to each worker."""

    output_dir: Path
    num_labels: int
    max_size: int | None
    max_pixels: int


@dataclass(frozen=True)
class ShardJob:
    """One shard to write, with everything its writer needs of its images and nothing of the others: a worker
    gets (target, job), never the catalog."""

    name: str
    split: str
    image_ids: tuple[str, ...]
    paths: tuple[str, ...]
    labels: tuple[np.ndarray, ...]  # 0-based label indices per image

    def __len__(self) -> int:
        return len(self.image_ids)


@dataclass
class Plan:
    """What prepare() decided and finalize() describes. Holds the output folder's writer lock until released
    (use it as a context manager): one run writes a folder at a time."""

    options: Options
    target: ShardTarget
    name: str  # the dataset name
    input_kind: str
    label_map: LabelMap
    jobs: list[ShardJob]
    kept: dict[str, dict]  # receipts of the shards an earlier run completed
    stratification: dict  # how the split was made
    skipped: Skipped  # images left out before writing
    groups: dict  # shard_info.json "groups"
    resumed: bool
    lock: folder_lock | None = field(default=None, repr=False, compare=False)

    @property
    def folder(self) -> ShardFolder:
        return ShardFolder(self.target.output_dir)

    def pending(self) -> list[ShardJob]:
        """The jobs still to write, in plan order."""
        return [job for job in self.jobs if job.name not in self.kept]

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def __enter__(self) -> "Plan":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def plan_shards(
    catalog: Catalog, folds: np.ndarray, seed: int, shard_size_mb: float, min_shards: int
) -> list[PlannedShard]:
    """Seeded shuffle per split, then contiguous chunks of about shard_size_mb each.

    Never fewer shards than parallel readers want: --min-shards per split once the data set has 100k
    images, fewer for small sets (one per 6,250 images of the split).
    """
    shards = []
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
            shards.append(PlannedShard(name, split, chunk.tolist()))
    return shards


def job_of(shard: PlannedShard, catalog: Catalog) -> ShardJob:
    rows = shard.rows
    return ShardJob(shard.name, shard.split, tuple(catalog.ids[r] for r in rows),
                    tuple(catalog.paths[r] for r in rows), tuple(catalog.labels[r] for r in rows))


def plan_options(options: Options, split_ids: set[str] | None) -> dict:
    """The options a plan depends on, as the plan file records them (all but "name" enter the fingerprint)."""
    recorded = {
        "val_fraction": options.val_fraction, "test_fraction": options.test_fraction, "seed": options.seed,
        "shard_size_mb": options.shard_size_mb, "min_shards": options.min_shards, "max_size": options.max_size,
        "groups": list(options.groups) if options.groups else None,
        "split_ids_sha256": hashlib.sha256("\n".join(sorted(split_ids)).encode()).hexdigest() if split_ids else None,
        "name": options.dataset_name,
    }
    if options.max_pixels != DEFAULT_MAX_PIXELS:  # recorded only when set, so earlier plans still resume
        recorded["max_pixels"] = options.max_pixels
    return recorded


def fingerprint(catalog: Catalog, label_map: LabelMap, options: dict, source_files: Sequence[Path]) -> str:
    """sha256 of the options, the label map, the input files' bytes and every image's id, path, size and labels."""
    digest = hashlib.sha256()
    digest.update(json.dumps({k: v for k, v in options.items() if k != "name"}, sort_keys=True).encode())
    digest.update(json.dumps(label_map.to_dict(), sort_keys=True).encode())
    for path in source_files:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    for image_id, path, size, labels in zip(catalog.ids, catalog.paths, catalog.sizes, catalog.labels):
        digest.update(f"{image_id}\0{path}\0{size}\0{labels.tobytes().hex()}\n".encode())
    return digest.hexdigest()


def new_plan_record(fp: str, options: dict, input_info: dict, stratification: dict, skipped: Skipped,
                    shards: Sequence[PlannedShard]) -> dict:
    return {
        "version": PLAN_VERSION, "created_by": CREATED_BY, "fingerprint": fp, "options": options,
        "input": input_info, "stratification": stratification, "skipped": skipped.to_dict(),
        "shards": [{"name": s.name, "split": s.split, "rows": s.rows} for s in shards],
    }


def planned_shards(record: dict) -> list[PlannedShard]:
    return [PlannedShard(s["name"], s["split"], s["rows"]) for s in record["shards"]]


def read_plan(folder: ShardFolder, fp: str) -> dict | None:
    """The plan on disk when it was made from these inputs and options."""
    if not folder.plan_path.is_file():
        return None
    try:
        plan = json.loads(folder.plan_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return plan if plan.get("fingerprint") == fp and plan.get("version") == PLAN_VERSION else None


def check_replaceable(folder: ShardFolder, overwrite: bool) -> None:
    """Refuse to mix a new plan with another plan's shards unless --overwrite."""
    if overwrite:
        return
    if folder.plan_path.is_file():
        raise UserError(
            f"{folder.root}: holds shards planned from other inputs or options (seed, fractions, shard size, "
            "images); pass --overwrite to replace them, or choose another --output-dir"
        )
    if any(p.name.endswith(SHARD_SUFFIX) for p in folder.outputs()):
        raise UserError(f"{folder.root}: holds {SHARD_SUFFIX} shards without a plan; pass --overwrite to replace them")


def start_plan(folder: ShardFolder, record: dict) -> None:
    """Replace whatever the folder held with a fresh plan (check_replaceable first)."""
    folder.remove_outputs()
    write_json_atomic(folder.plan_path, record, indent=None)


def complete_receipts(folder: ShardFolder, jobs: Sequence[ShardJob]) -> dict[str, dict]:
    """Receipts of the jobs whose shard an earlier run completed (and that is still the file it wrote)."""
    receipts = {job.name: folder.read_receipt(job.name) for job in jobs}
    return {name: receipt for name, receipt in receipts.items() if receipt is not None}


def write_job(folder: ShardFolder, job: ShardJob) -> None:
    """The job as a file a worker anywhere can read (a distributed engine ships names, not millions of rows):
    arrays in an .npz, no Python object per label."""
    counts = np.fromiter((len(labels) for labels in job.labels), np.int64, len(job.labels))
    flat = np.concatenate(job.labels).astype(np.int32) if job.labels else np.zeros(0, np.int32)
    with atomic_open(folder.job_path(job.name), "wb") as handle:
        np.savez(handle, name=np.array(job.name), split=np.array(job.split), image_ids=np.array(job.image_ids, str),
                 paths=np.array(job.paths, str), label_counts=counts, labels=flat)


def read_job(folder: ShardFolder, name: str) -> ShardJob:
    with np.load(folder.job_path(name), allow_pickle=False) as data:
        labels = np.split(data["labels"], np.cumsum(data["label_counts"])[:-1]) if len(data["label_counts"]) else []
        return ShardJob(str(data["name"]), str(data["split"]), tuple(data["image_ids"].tolist()),
                        tuple(data["paths"].tolist()), tuple(labels))


def remove_temp_shards(folder: ShardFolder) -> None:
    """Shards a killed writer left under their temporary names."""
    for stale in folder.temp_shards():
        stale.unlink(missing_ok=True)


