"""The download as a Beam pipeline: Create(work shards) | Reshuffle | ParDo(download one work shard).

The driver reads the input once into work lists (fashion_tf.beam.work); each worker runs the local engine's loop
(fashion_tf.download.fetch_records: libcurl transfers, retries, fallback URLs, checks) over one list, writing the
images and the shard's own manifest part, then a done marker with its summary. A retried or rerun shard resumes
from its manifest part; per-image failures are manifest rows, never exceptions. No TensorFlow is imported here
or in the workers (its libcurl clashes with pycurl's).

--output-dir is a path every worker sees (a local disk for the DirectRunner, a shared file system) or a URL of a
file system Beam knows (gs://...). With a URL, a worker downloads its shard into a local folder and then puts the
images, the manifest part and the done marker in place (fashion_tf.storage): a part is only ever next to images
that are complete, and a shard whose worker dies is redone from the part of its last finished attempt.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

from fashion_tf import storage
from fashion_tf.beam.pipeline import import_beam, run_units
from fashion_tf.beam.work import WorkFolder, plan_records, plan_work, read_work_list
from fashion_tf.download import Options, Summary, configure_pillow, fetch_records, remove_stale_temp_files
from fashion_tf.errors import UserError
from fashion_tf.fileio import check_folder_writable
from fashion_tf.manifest import IMAGES_DIR, images_dir, lock_for_writing, read_manifest
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
        work = WorkFolder(self.output_dir)
        if work.is_done(name):  # a retried bundle of a shard that did finish
            return
        records = read_work_list(work, name)
        if storage.is_url(self.output_dir):
            summary = self._download_staged(work, name, records)
        else:
            part = Path(work.manifest_part(name))
            summary = fetch_records(records, LabelsInRecords(), Path(self.output_dir), part,
                                    read_manifest(part, with_labels=False), self.options)
        done = summary.as_dict()
        done["tensorflow_loaded"] = "tensorflow" in sys.modules  # must stay False: checked by the tests
        storage.write_bytes(work.done_path(name), json.dumps(done, indent=2).encode())
        yield name

    def _download_staged(self, work: WorkFolder, name: str, records) -> Summary:
        """Into a local folder, then the new images, then the manifest part, put where the job's folder is."""
        with tempfile.TemporaryDirectory(prefix="fashion_tf-shard-") as staging:
            local_part = Path(staging) / "part.jsonl"
            if storage.exists(work.manifest_part(name)):
                storage.download(work.manifest_part(name), local_part)
            previous = read_manifest(local_part, with_labels=False)  # its images were put in place before it
            summary = fetch_records(records, LabelsInRecords(), Path(staging), local_part, previous, self.options,
                                    image_kept=lambda relpath: True)
            for image in sorted(images_dir(staging).glob("*.jpg")):
                storage.upload(image, work.image_path(f"{IMAGES_DIR}/{image.name}"))
            storage.upload(local_part, work.manifest_part(name))
        return summary


def download(input_path: str | Path, output_dir: str | Path, options: Options, beam_args: Sequence[str],
             records_per_shard: int = RECORDS_PER_SHARD) -> Summary:
    """The whole download on the runner `beam_args` name; resumable. Returns the job's summary."""
    output_dir = str(output_dir)
    input_path = Path(input_path)
    if options.num_shards != 1:
        raise UserError("--engine beam splits the work itself: leave out --shard-index/--num-shards")
    if records_per_shard < 1:
        raise UserError(f"--work-shard-size must be >= 1, got {records_per_shard}")
    remote = storage.is_url(output_dir)
    if remote:
        storage.check_reachable(output_dir)
    else:
        check_folder_writable(Path(output_dir), "download folder")
    SourceReader(input_path)  # a missing or unreadable input: one line before anything is written
    started = time.monotonic()
    # A URL cannot be locked: one driver per job there is the user's to keep.
    with contextlib.nullcontext() if remote else lock_for_writing(output_dir):
        work = WorkFolder(output_dir)
        names = plan_work(input_path, work, records_per_shard, options.limit)
        done_before = {name for name in names if work.is_done(name)}
        stale = 0
        if not remote:
            images_dir(output_dir).mkdir(parents=True, exist_ok=True)
            stale = remove_stale_temp_files(images_dir(output_dir), 0)  # no worker runs: every temp file is garbage
        pending = [name for name in names if name not in done_before]
        print(f"{len(names)} work shards of about {records_per_shard} images, {len(done_before)} done before; "
              f"running {len(pending)}", file=sys.stderr, flush=True)
        if remote:
            run_units(pending, DownloadWorkShard(output_dir, options), beam_args, "download", unit="shard",
                      total=len(pending), progress=lambda: len(storage.names(work.done_folder())) - len(done_before))
        else:
            progress = PartsProgress(work, names)
            run_units(pending, DownloadWorkShard(output_dir, options), beam_args, "download",
                      progress=progress.rows, total=progress.planned)
        summary = _job_summary(work, names, done_before)
    summary.stale_temp_removed = stale
    summary.elapsed_s = time.monotonic() - started
    return summary


class PartsProgress:
    """Rows in the work shards' manifest parts so far (new bytes only), against the records planned."""

    def __init__(self, work: WorkFolder, names: list[str]):
        self.parts = [Path(work.manifest_part(name)) for name in names]
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
    total = Summary(source=f"{len(names)} work shards")
    for name in names:
        path = work.done_path(name)
        if not storage.exists(path):
            raise UserError(f"{path}: missing after the pipeline ended; re-run the same command to finish the shard")
        done = json.loads(storage.read_bytes(path))
        if name in done_before:
            total.skipped_ok += done["ok"] + done["skipped_ok"]
            total.skipped_failed += done["failed"] + done["skipped_failed"]
            continue
        for key in ("ok", "failed", "skipped_ok", "skipped_failed", "bytes_downloaded", "bytes_written",
                    "kept_original", "bad_manifest_lines"):
            setattr(total, key, getattr(total, key) + done[key])
        total.failures.update(done["failed_by_reason"])
    return total
