"""make_tfrecords as a Beam pipeline: Create(pending shards) | Reshuffle | ParDo(write one shard).

The driver does what the local engine does before writing (fashion_tf.make_tfrecords.prepare: inputs read, the
stratified split and the shard plan, the folder lock) and writes each pending shard's job file; each worker
writes one shard with the local engine's writer (temporary name, rename, receipt last: a retried bundle rewrites
the same shard, and a rerun keeps the complete ones); the driver then finalizes (label map, TFDS metadata,
shard_info.json). The records are byte for byte the local engine's. Not beam.io.WriteToTFRecord: its
record-to-shard assignment is not deterministic and it cannot resume shard by shard. No TensorFlow anywhere.
"""

from __future__ import annotations

import time
from typing import Sequence

from fashion_tf.beam.pipeline import import_beam, run_units
from fashion_tf.errors import UserError
from fashion_tf.make_tfrecords import Options, ShardTarget, finalize, prepare, write_shard
from fashion_tf.make_tfrecords.plan import read_job, write_job
from fashion_tf.make_tfrecords.writer import disk_full_is_user_error
from fashion_tf.shard_folder import ShardFolder

beam = import_beam()


class WriteShard(beam.DoFn):
    """One shard, from its job file to its receipt."""

    def __init__(self, target: ShardTarget):
        super().__init__()
        self.target = target

    def process(self, name: str):
        folder = ShardFolder(self.target.output_dir)
        if folder.read_receipt(name) is None:  # else a retried bundle of a shard that did finish
            write_shard(self.target, read_job(folder, name))
        yield name


def make_tfrecords(options: Options, beam_args: Sequence[str]) -> dict:
    """The whole stage on the runner `beam_args` name; returns shard_info.json's content plus a "summary"."""
    started = time.perf_counter()
    with prepare(options) as plan:
        folder = plan.folder
        pending = plan.pending()
        for job in pending:
            with disk_full_is_user_error(folder.job_path(job.name), folder):
                write_job(folder, job)
        names = [job.name for job in pending]
        write_started = time.perf_counter()
        run_units(names, WriteShard(plan.target), beam_args, "shards", unit="shard", total=len(names),
                  progress=lambda: sum(1 for name in names if folder.receipt_path(name).is_file()))
        receipts = [folder.read_receipt(name) for name in names]
        if any(receipt is None for receipt in receipts):
            missing = names[receipts.index(None)]
            raise UserError(f"{folder.shard_path(missing)}: not written by the pipeline; re-run the same command")
        seconds = time.perf_counter() - write_started
        info = finalize(plan, receipts)
        for name in names:
            folder.job_path(name).unlink(missing_ok=True)
    info["summary"] = {
        "shards_written": len(receipts), "shards_kept": len(plan.kept), "seconds": seconds,
        "image_bytes_written": sum(receipt["image_bytes"] for receipt in receipts),
        "shard_bytes_written": sum(receipt["num_bytes"] for receipt in receipts),
        "total_seconds": time.perf_counter() - started, "input_kind": plan.input_kind,
    }
    return info
