"""The work shards of a distributed download: the one owner of their files in the download folder.

    DIR/.work/plan.json                               input fingerprint, work shard count, records per shard
    DIR/.work/lists/work-NNNNN-of-NNNNN.jsonl        the records of a work shard: {"id", "urls", "labels"}
    DIR/.work/done/work-NNNNN-of-NNNNN.json          written last by the worker that finished the shard: its summary
    DIR/manifest.parts/part-NNNNN-of-NNNNN.jsonl     the shard's manifest rows (fashion_tf.manifest)

A record belongs to work shard crc32(image_id) % S (fashion_tf.sources.shard_of), S chosen so a shard holds about
`records_per_shard` records. The lists are written once by the driver, whole, then the plan; a rerun with the
same input reuses them, and one with another input is refused. DIR is a local (or shared) path or a URL that
Apache Beam's file systems know (gs://...): paths here are strings, read and written through fashion_tf.storage.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from fashion_tf import storage
from fashion_tf.errors import UserError
from fashion_tf.manifest import part_name
from fashion_tf.sources import SourceReader, SourceRecord, shard_of

PLAN_VERSION = 1


@dataclass(frozen=True)
class WorkFolder:
    download_dir: str

    @property
    def root(self) -> str:
        return storage.join(self.download_dir, ".work")

    @property
    def plan_path(self) -> str:
        return storage.join(self.root, "plan.json")

    def list_path(self, name: str) -> str:
        return storage.join(self.root, "lists", f"{name}.jsonl")

    def done_folder(self) -> str:
        return storage.join(self.root, "done")

    def done_path(self, name: str) -> str:
        return storage.join(self.done_folder(), f"{name}.json")

    def manifest_part(self, name: str) -> str:
        return storage.join(self.download_dir, part_name(*parse_name(name)))

    def image_path(self, relpath: str) -> str:
        return storage.join(self.download_dir, relpath)

    def is_done(self, name: str) -> bool:
        return storage.exists(self.done_path(name))


def unit_name(index: int, count: int) -> str:
    return f"work-{index:05d}-of-{count:05d}"


def parse_name(name: str) -> tuple[int, int]:
    _, index, _, count = name.split("-")
    return int(index), int(count)


def input_fingerprint(path: Path, limit: int) -> str:
    digest = hashlib.sha256(f"limit={limit}\n".encode())
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def plan_work(input_path: Path, work: WorkFolder, records_per_shard: int, limit: int = 0) -> list[str]:
    """The work shard names, from the plan on disk when it was made from this input, else written now."""
    fingerprint = input_fingerprint(input_path, limit)
    plan = _read_plan(work)
    if plan is not None:
        if plan["fingerprint"] != fingerprint:
            raise UserError(f"{work.download_dir}: its work shards were planned from another input (or --limit); "
                            "download it into another --output-dir")
        return [unit_name(i, plan["shards"]) for i in range(plan["shards"])]
    count = sum(1 for _ in _records(input_path, limit, with_labels=False))
    shards = max(1, math.ceil(count / records_per_shard))
    written = _write_lists(_records(input_path, limit, with_labels=True), work, shards)
    plan = {"version": PLAN_VERSION, "input": str(input_path), "fingerprint": fingerprint, "records": count,
            "shards": shards, "records_per_shard": written}
    storage.write_bytes(work.plan_path, json.dumps(plan, indent=2).encode())
    return [unit_name(i, shards) for i in range(shards)]


def plan_records(work: WorkFolder) -> int | None:
    plan = _read_plan(work)
    return plan["records"] if plan else None


def _read_plan(work: WorkFolder) -> dict | None:
    try:
        plan = json.loads(storage.read_bytes(work.plan_path))
    except (OSError, ValueError):
        return None
    return plan if isinstance(plan, dict) and plan.get("version") == PLAN_VERSION else None


def _records(input_path: Path, limit: int, with_labels: bool) -> Iterator[SourceRecord]:
    records = SourceReader(input_path).records(with_labels=with_labels)
    for count, record in enumerate(records, start=1):
        yield record
        if limit and count >= limit:
            return


def _write_lists(records: Iterable[SourceRecord], work: WorkFolder, shards: int) -> list[int]:
    """Each record appended to its shard's list in a local folder (all lists open at once: one pass, memory flat),
    then each list put in place whole."""
    counts = [0] * shards
    with tempfile.TemporaryDirectory(prefix="fashion_tf-work-lists-") as staging:
        locals_ = [os.path.join(staging, f"{unit_name(i, shards)}.jsonl") for i in range(shards)]
        handles = [open(path, "w", encoding="utf-8") for path in locals_]
        try:
            for record in records:
                index = shard_of(record.image_id, shards)
                handles[index].write(json.dumps({"id": record.image_id, "urls": list(record.urls),
                                                 "labels": list(record.labels)}, ensure_ascii=False) + "\n")
                counts[index] += 1
        finally:
            for handle in handles:
                handle.close()
        for index, path in enumerate(locals_):
            storage.upload(path, work.list_path(unit_name(index, shards)))
    return counts


def read_work_list(work: WorkFolder, name: str) -> list[SourceRecord]:
    rows = storage.read_bytes(work.list_path(name)).decode("utf-8").splitlines()
    return [SourceRecord(row["id"], tuple(row["urls"]), tuple(row["labels"])) for row in map(json.loads, rows)]
