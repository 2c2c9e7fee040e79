"""The stage in three steps, for one process or a distributed engine:

    plan = prepare(options)                   once: inputs read, split and shard plan made (or resumed), plan file
    receipt = write_shard(plan.target, job)   per job of plan.pending(), anywhere (a job carries its own images)
    info = finalize(plan, receipts)           once: label_map.json, TFDS metadata, shard_info.json

make_tfrecords(options) runs the three in one process, writing the pending shards in threads.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Iterable

from fashion_tf.errors import UserError
from fashion_tf.fileio import write_json_atomic
from fashion_tf.make_tfrecords.catalog import Catalog, build_catalog
from fashion_tf.make_tfrecords.inputs import LoadedInput, load_input
from fashion_tf.make_tfrecords.metadata import dataset_info, group_info, split_label_counts, write_tfds_metadata
from fashion_tf.make_tfrecords.options import Options
from fashion_tf.make_tfrecords.plan import (
    Plan, ShardTarget, check_replaceable, complete_receipts, fingerprint, job_of, new_plan_record, plan_options,
    plan_shards, planned_shards, read_plan, remove_temp_shards, start_plan,
)
from fashion_tf.make_tfrecords.skipped import Skipped
from fashion_tf.make_tfrecords.split import Split, assign_splits, read_split_ids, split_from_ids, stratification_summary
from fashion_tf.make_tfrecords.writer import disk_full_is_user_error, write_shards
from fashion_tf.shard_folder import TFDS_FILES, ShardFolder


@dataclass
class _Source:
    """The inputs as read, before anything is written."""

    loaded: LoadedInput
    catalog: Catalog
    skipped: Skipped
    split_ids: set[str] | None
    listed: Split | None  # the split of --split-from


def _read_source(options: Options) -> _Source:
    loaded = load_input(options.input, options.images, options.label_map, options.groups)
    catalog, skipped = build_catalog(loaded, options.input.name)
    if len(catalog) == 0:
        raise UserError(f"{options.input}: no usable images ({skipped.to_dict()['by_reason'] or 'none listed'})")
    split_ids = read_split_ids(options.split_from) if options.split_from else None
    listed = split_from_ids(catalog, split_ids, options.split_from) if split_ids else None
    return _Source(loaded, catalog, skipped, split_ids, listed)


def prepare(options: Options) -> Plan:
    """Check the options, read the inputs, then take the output folder's lock and resume its plan or write a new
    one. Bad input stops with a UserError before anything is written. The plan holds the lock: use it as a
    context manager (or call release()) around writing and finalize()."""
    options.check()
    source = _read_source(options)
    recorded = plan_options(options, source.split_ids)
    label_map = source.loaded.label_map
    fp = fingerprint(source.catalog, label_map, recorded, source.loaded.source_files)
    folder = ShardFolder(options.output_dir)
    lock = folder.lock_for_writing()
    try:
        with disk_full_is_user_error(folder.plan_path, folder):
            record, resumed = _resumed_or_new_plan(options, source, folder, recorded, fp)
            remove_temp_shards(folder)
        jobs = [job_of(shard, source.catalog) for shard in planned_shards(record)]
        return Plan(
            options=options,
            target=ShardTarget(options.output_dir, len(label_map), options.max_size, options.max_pixels),
            name=recorded["name"],
            input_kind=source.loaded.kind,
            label_map=label_map,
            jobs=jobs,
            kept=complete_receipts(folder, jobs),
            stratification=record["stratification"],
            skipped=source.skipped,
            groups=group_info(label_map, source.catalog),
            resumed=resumed,
            lock=lock,
        )
    except BaseException:
        lock.release()
        raise


def _resumed_or_new_plan(options: Options, source: _Source, folder: ShardFolder, recorded: dict,
                         fp: str) -> tuple[dict, bool]:
    record = None if options.overwrite else read_plan(folder, fp)
    if record is not None:
        print(f"resuming: the plan in {folder.state_dir} matches these inputs and options", file=sys.stderr)
        return record, True
    check_replaceable(folder, options.overwrite)
    catalog = source.catalog
    folds, method = assign_splits(catalog, source.loaded.label_map, options.val_fraction, options.test_fraction,
                                  options.seed, source.listed)
    shards = plan_shards(catalog, folds, options.seed, options.shard_size_mb, options.min_shards)
    input_info = {"kind": source.loaded.kind, "path": os.fspath(options.input.resolve()), "images": len(catalog)}
    record = new_plan_record(fp, recorded, input_info, method, source.skipped, shards)
    start_plan(folder, record)
    return record, False


def finalize(plan: Plan, receipts: Iterable[dict]) -> dict:
    """label_map.json, TFDS metadata and, last, shard_info.json, from the receipts of the shards written now and
    those an earlier run completed (plan.kept). Returns shard_info.json's content."""
    by_name = {**plan.kept, **{receipt["name"]: receipt for receipt in receipts}}
    missing = [job.name for job in plan.jobs if job.name not in by_name]
    if missing:
        raise UserError(f"{plan.folder.shard_path(missing[0])}: not written ({len(missing)} of {len(plan.jobs)} "
                        "shards missing); run the same command again to write them")
    skipped = plan.skipped.copy()
    for job in plan.jobs:
        skipped.merge(Skipped.from_dict(by_name[job.name]["skipped"]))
    counts = split_label_counts(plan.jobs, by_name, len(plan.label_map))
    stratification = stratification_summary(counts, plan.label_map, plan.stratification)
    info = dataset_info(plan.name, plan.label_map, plan.jobs, by_name, plan.groups, stratification, skipped)
    folder = plan.folder
    writes = [(folder.label_map_path, lambda: plan.label_map.to_json(folder.label_map_path))]
    if plan.options.tfds:
        writes.append((folder.root / TFDS_FILES[0],
                       lambda: write_tfds_metadata(folder.root, plan.name, len(plan.label_map), info)))
    writes.append((folder.info_path, lambda: write_json_atomic(folder.info_path, info)))  # last: the folder is complete
    for path, write in writes:
        with disk_full_is_user_error(path, folder):
            write()
    return info


def make_tfrecords(options: Options) -> dict:
    """The whole stage in this process; returns shard_info.json's content plus a "summary" block with rates."""
    started = time.perf_counter()
    with prepare(options) as plan:
        receipts, stats = write_shards(plan.target, plan.pending(), options.workers)
        info = finalize(plan, receipts)
    if not any(split["num_examples"] for split in info["splits"].values()):
        raise UserError(f"{options.input}: no image could be written "
                        f"(skipped: {info['skipped']['by_reason'] or 'none'})")
    info["summary"] = dict(stats, shards_kept=len(plan.kept), total_seconds=time.perf_counter() - started,
                           input_kind=plan.input_kind)
    return info
