"""The download as a Beam pipeline: Create(work shards) | Reshuffle | ParDo(download one work shard).

The driver reads the input once into work lists (fashion_tf.beam.work); each worker runs the local engine's loop
(fashion_tf.download.fetch_records: libcurl transfers, retries, fallback URLs, checks) over one list, writing the
images and the shard's own manifest part, then a done marker with its summary. A retried or rerun shard resumes
from its manifest part; per-image failures are manifest rows, never exceptions. No TensorFlow is imported here
or in the workers (its libcurl clashes with pycurl's).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Sequence

from fashion_tf.beam.pipeline import check_shared_path, import_beam, run_units
from fashion_tf.beam.work import WorkFolder, plan_records, plan_work, read_work_list
from fashion_tf.download import Options, Summary, configure_pillow, fetch_records, remove_stale_temp_files
from fashion_tf.errors import UserError
from fashion_tf.fileio import check_folder_writable, write_json_atomic
from fashion_tf.manifest import images_dir, lock_for_writing, read_manifest
from fashion_tf.sources import LabelsInRecords, SourceReader

RECORDS_PER_SHARD = 2000

beam = import_beam()


class DownloadWorkShard(beam.DoFn):
    """One work shard, from its list to its done marker."""

    def __init__(self, output_dir: str, options: Options):
        super().__init__()
        self.output_dir = output_dir
        self.options = dataclasses.replace(options, processes=1, progress=False)

    def setup(self) -> None:
        configure_pillow(self.options)

    def process(self, name: str):
        work = WorkFolder(Path(self.output_dir))
        if work.is_done(name):  # a retried bundle of a shard that did finish
            return
        part = work.manifest_part(name)
        summary = fetch_records(read_work_list(work.list_path(name)), LabelsInRecords(), Path(self.output_dir), part,
                                read_manifest(part, with_labels=False), self.options)
        done = summary.as_dict()
        done["tensorflow_loaded"] = "tensorflow" in sys.modules  # must stay False: checked by the tests
        write_json_atomic(work.done_path(name), done)
        yield name


def download(input_path: str | Path, output_dir: str | Path, options: Options, beam_args: Sequence[str],
             records_per_shard: int = RECORDS_PER_SHARD) -> Summary:
    """The whole download on the runner `beam_args` name; resumable. Returns the job's summary."""
    check_shared_path(output_dir, "--output-dir")
    input_path, output_dir = Path(input_path), Path(output_dir)
    if options.num_shards != 1:
        raise UserError("--engine beam splits the work itself: leave out --shard-index/--num-shards")
    if records_per_shard < 1:
        raise UserError(f"--work-shard-size must be >= 1, got {records_per_shard}")
    check_folder_writable(output_dir, "download folder")
    SourceReader(input_path)  # a missing or unreadable input: one line before anything is written
    started = time.monotonic()
    with lock_for_writing(output_dir):
        work = WorkFolder(output_dir)
        names = plan_work(input_path, work, records_per_shard, options.limit)
        done_before = [name for name in names if work.is_done(name)]
        images_dir(output_dir).mkdir(parents=True, exist_ok=True)
        stale = remove_stale_temp_files(images_dir(output_dir), 0)  # no worker runs: every temp file is garbage
        pending = [name for name in names if name not in set(done_before)]
        print(f"{len(names)} work shards of about {records_per_shard} images, {len(done_before)} done before; "
              f"running {len(pending)}", file=sys.stderr, flush=True)
        progress = PartsProgress(work, names)
        run_units(pending, DownloadWorkShard(str(output_dir), options), beam_args, "download",
                  progress=progress.rows, total=progress.planned)
        summary = _job_summary(work, names, set(done_before))
    summary.stale_temp_removed = stale
    summary.elapsed_s = time.monotonic() - started
    return summary


class PartsProgress:
    """Rows in the work shards' manifest parts so far (new bytes only), against the records planned."""

    def __init__(self, work: WorkFolder, names: list[str]):
        self.parts = [work.manifest_part(name) for name in names]
        self.offsets = [0] * len(names)
        self.count = 0
        self.planned = plan_records(work)

    def rows(self) -> int:
        for index, part in enumerate(self.parts):
            try:
                with open(part, "rb") as handle:
                    handle.seek(self.offsets[index])
                    data = handle.read()
            except FileNotFoundError:
                continue
            self.offsets[index] += len(data)
            self.count += data.count(b"\n")
        return self.count


def _job_summary(work: WorkFolder, names: list[str], done_before: set[str]) -> Summary:
    """This run's shards as downloads, earlier runs' shards as skipped, from the done markers."""
    import json

    total = Summary(source=f"{len(names)} work shards")
    for name in names:
        path = work.done_path(name)
        if not path.is_file():
            raise UserError(f"{path}: missing after the pipeline ended; re-run the same command to finish the shard")
        done = json.loads(path.read_text(encoding="utf-8"))
        if name in done_before:
            total.skipped_ok += done["ok"] + done["skipped_ok"]
            total.skipped_failed += done["failed"] + done["skipped_failed"]
            continue
        for key in ("ok", "failed", "skipped_ok", "skipped_failed", "bytes_downloaded", "bytes_written",
                    "kept_original", "bad_manifest_lines"):
            setattr(total, key, getattr(total, key) + done[key])
        total.failures.update(done["failed_by_reason"])
    return total
