"""Download the images of an iMaterialist JSON (or CSV) into a folder of RGB JPEGs plus a manifest.

    python tools/download_images.py --input train.json --output-dir data/train --workers 32

Output in the folder:
  images/<id>.jpg   RGB JPEG; kept byte for byte when the source is a baseline RGB JPEG that needs
                    no resize or EXIF rotation, else converted (alpha over white, EXIF Orientation
                    applied to the pixels) and re-encoded.
  manifest.jsonl    one JSON object per input image, appended as downloads finish:
                    image_id, status ("ok"/"failed"), path, labels, width, height, sha256, bytes,
                    url, source_format, error, error_detail. When an id has several rows, the last wins.

Re-running resumes: ids whose last row is "ok" (and whose file exists) are skipped, and so are
"failed" ones unless --retry-failed. Images are written under a temporary name and renamed, so a
killed run never leaves a partial image under a final name. Several shards may run at once into
one folder: each manifest row is a single append.

An image counts only after a full decode; its declared size is checked against --max-pixels
before decoding and its download against --max-bytes. Format comes from the bytes, never from
the URL or Content-Type. Connection errors, timeouts, cut bodies, 429 and 5xx are retried with
exponential backoff and jitter (Retry-After honoured up to --max-retry-after); other 4xx are not.
A record waiting out its backoff waits in a heap, not in a sleeping worker.

Throughput: the downloads run in libcurl (fashion_tf.fetcher: up to --workers transfers at once from
one thread, keep-alive connections), so Python's CPU goes to checking and writing images, done as
each download ends; with --processes P the shard is split again over P worker processes (their own
cores). At most `workers` downloads are in flight and 64 x workers wait in backoff, so memory stays
flat for 1M images. For JSON input, downloads start at once while the annotations (which follow the
images in the file) are read in a background thread; manifest rows wait for their labels.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import heapq
import io
import itertools
import multiprocessing
import os
import queue
import random
import re
import signal
import sys
import threading
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence

from PIL import Image, ImageFile
from tqdm import tqdm

from fashion_tf.errors import UserError, run_cli
from fashion_tf.fileio import check_folder_writable
from fashion_tf.fetcher import Fetcher, FetchFailed, one_line
from fashion_tf.image_guard import DEFAULT_MAX_PIXELS, UnsafeImage, check_image
from fashion_tf.manifest import (FAILED, IMAGES_DIR, OK, Manifest, ManifestWriter, describe_files, images_dir,
                                 lock_for_writing, manifest_path, read_manifest)
from fashion_tf.sources import LabelSource, SourceReader, SourceRecord, check_shard_args, shard_of
from fashion_tf.storage import check_path

DEFAULT_USER_AGENT = "fashion_tf-downloader/0.1 (research image data set download)"
SAFE_ID = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class Options:
    workers: int = 16
    timeout: float = 10.0
    connect_timeout: float = 5.0
    retries: int = 3
    backoff: float = 0.5
    max_retry_after: float = 20.0
    max_redirects: int = 5
    max_size: int = 0
    quality: int = 95
    max_bytes: int = 30 * 1024 * 1024
    max_pixels: int = DEFAULT_MAX_PIXELS
    user_agent: str = DEFAULT_USER_AGENT
    retry_failed: bool = False
    limit: int = 0
    shard_index: int = 0
    num_shards: int = 1
    progress: bool = True
    processes: int = 1
    # Set by process_shares for a worker process: the shard (index, count) that --limit counts in, so that
    # the limit is the first N records of the whole shard, not N per process.
    limit_shard: Optional[tuple[int, int]] = None


class BadImage(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


# ----------------------------------------------------------------------------- names


def safe_file_stem(image_id: str) -> str:
    """A file name stem that stays inside the images folder, distinct for distinct ids.

    Ids made of [A-Za-z0-9_.-] (not starting with '.') are kept; anything else is replaced and
    a hash of the original id appended, so `../../x` becomes `.._.._x-<hash>`-like names that
    cannot leave the folder or collide with a plain id.
    """
    if image_id and len(image_id) <= 120 and not SAFE_ID.search(image_id) and not image_id.startswith("."):
        return image_id
    digest = hashlib.sha1(image_id.encode("utf-8")).hexdigest()[:12]
    cleaned = SAFE_ID.sub("_", image_id)[:80].lstrip(".") or "id"
    return f"{cleaned}-{digest}"


def image_relpath(image_id: str) -> str:
    return f"{IMAGES_DIR}/{safe_file_stem(image_id)}.jpg"  # relative to the download folder, as the manifest says


def _retry_delay(attempt: int, retry_after: float | None, options: Options) -> float:
    if retry_after is not None:
        return min(retry_after, options.max_retry_after)
    return min(options.backoff * 2**attempt, options.max_retry_after) * random.uniform(0.5, 1.5)


# ----------------------------------------------------------------------------- images


@dataclass(frozen=True)
class Converted:
    data: bytes
    width: int
    height: int
    source_format: str
    kept_original: bool


def looks_like_html(data: bytes) -> bool:
    head = data[:256].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith(b"<")


def to_rgb_jpeg(data: bytes, options: Options) -> Converted:
    """Decode fully (after a pixel-count check of the header) and return RGB JPEG bytes, or BadImage."""
    if not data:
        raise BadImage("empty", "empty body")
    if looks_like_html(data):
        raise BadImage("html", "an HTML/XML page, not an image")
    try:
        check_image(data, options.max_pixels)
        image = Image.open(io.BytesIO(data))
    except UnsafeImage as err:
        raise BadImage(err.reason, err.detail) from None
    except Image.DecompressionBombError as err:
        raise BadImage("too_many_pixels", one_line(err)) from None
    except Exception as err:  # Pillow raises many types on garbage: UnidentifiedImageError, SyntaxError, ...
        raise BadImage("not_image", one_line(err)) from None
    with image:
        width, height = image.size
        source_format = image.format or "?"
        needs_resize = bool(options.max_size) and max(width, height) > options.max_size
        turn = _exif_turn(image)
        keep = (
            source_format == "JPEG" and image.mode == "RGB" and not needs_resize and turn is None
            and not image.info.get("progressive") and not image.info.get("progression")
        )
        if needs_resize and source_format == "JPEG":
            image.draft(None, (options.max_size, options.max_size))  # DCT-domain downscale: faster decode
        elif keep:
            _verify_at_smallest_scale(image)
        try:
            image.load()
        except Image.DecompressionBombError as err:
            raise BadImage("too_many_pixels", one_line(err)) from None
        except MemoryError:
            raise BadImage("too_many_pixels", "out of memory decoding") from None
        except Exception as err:
            raise BadImage("corrupt", one_line(err)) from None
        if keep:
            return Converted(data, width, height, source_format, True)
        rgb = _as_rgb(image)
    if turn is not None:
        rgb = rgb.transpose(turn)
    if needs_resize:
        rgb.thumbnail((options.max_size, options.max_size), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    rgb.save(out, "JPEG", quality=options.quality)
    return Converted(out.getvalue(), rgb.width, rgb.height, source_format, False)


# EXIF Orientation (tag 0x0112) -> the transpose that makes the pixels upright. TensorFlow's decoders ignore
# the tag, so a camera photo stored sideways would train sideways: the written JPEG has upright pixels, no tag.
_EXIF_ORIENTATION = 0x0112
_UPRIGHT_BY_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90,
}


def _exif_turn(image: Image.Image) -> Optional[Image.Transpose]:
    """The transpose an EXIF Orientation asks for, or None (no EXIF, upright, or unreadable EXIF)."""
    if "exif" not in image.info:  # most images: no EXIF parsing at all
        return None
    try:
        return _UPRIGHT_BY_ORIENTATION.get(image.getexif().get(_EXIF_ORIENTATION))
    except Exception:  # noqa: BLE001 - broken EXIF must not cost the image
        return None


def _verify_at_smallest_scale(image: Image.Image) -> None:
    """A JPEG whose bytes are kept is decoded only to verify it: at 1/8 scale, about half the CPU.

    libjpeg still Huffman-decodes every coefficient of the whole entropy-coded stream at any scale
    (it must, to find where each block ends), so broken data fails exactly as at full size; only
    the inverse DCT and colour conversion shrink. Checked on 12,096 damaged copies of the benchmark's
    JPEGs (every cut point, bit flips, zeroed runs): identical accept/reject at both scales.
    """
    image.draft(image.mode, (1, 1))


def _as_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image.copy()
    has_alpha = image.mode in ("RGBA", "LA", "RGBa", "La", "PA") or (image.mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):  # 16-bit grey: scale to 8 bits
        return image.convert("I").point(lambda value: value * (1 / 256)).convert("L").convert("RGB")
    if image.mode == "F":
        return image.convert("L").convert("RGB")
    return image.convert("RGB")


# ----------------------------------------------------------------------------- one record


@dataclass(frozen=True)
class Attempt:
    """Where one record stands: which URL is next, how many retries it has had, what went wrong so far."""

    record: SourceRecord
    url_index: int = 0
    retries_done: int = 0
    tried: tuple[str, ...] = ()
    last_reason: str = "no_url"


def after_fetch(attempt: Attempt, result: bytes | FetchFailed, output_dir: Path,
                options: Options) -> dict | Attempt | tuple[Attempt, float]:
    """What one finished GET of the attempt's current URL leads to: the record's manifest row (without
    labels), the same URL again after a wait ((Attempt, seconds): the wait holds nothing), or the next
    URL to fetch (Attempt). Never raises for bad data or a bad server."""
    url = attempt.record.urls[attempt.url_index]
    if isinstance(result, FetchFailed):
        if result.retryable and attempt.retries_done < options.retries:
            delay = _retry_delay(attempt.retries_done, result.retry_after, options)
            return dataclasses.replace(attempt, retries_done=attempt.retries_done + 1), delay
        return _url_failed(attempt, f"{url} -> {result}", result.reason)
    try:
        converted = to_rgb_jpeg(result, options)
    except BadImage as failure:
        return _url_failed(attempt, f"{url} -> {failure}", failure.reason)
    except Exception as err:  # a bug or an odd library error must cost one image, not the run
        return _url_failed(attempt, f"{url} -> error: {type(err).__name__}: {one_line(err)}", "error")
    record = attempt.record
    relpath = image_relpath(record.image_id)
    _write_image(output_dir / relpath, converted.data)
    return {
        "image_id": record.image_id,
        "status": OK,
        "path": relpath,
        "width": converted.width,
        "height": converted.height,
        "sha256": hashlib.sha256(converted.data).hexdigest(),
        "bytes": len(converted.data),
        "url": url,
        "source_format": converted.source_format,
        "source_bytes": len(result),
        "kept_original": converted.kept_original,
    }


def next_url_or_failed(attempt: Attempt) -> Attempt | dict:
    """The attempt if it has a URL left to try, else the record's failed manifest row (without labels)."""
    if attempt.url_index < len(attempt.record.urls):
        return attempt
    return {
        "image_id": attempt.record.image_id,
        "status": FAILED,
        "error": attempt.last_reason,
        "error_detail": " | ".join(attempt.tried)[:1000],
    }


def _url_failed(attempt: Attempt, what_happened: str, reason: str) -> Attempt | dict:
    """The current URL is given up: the attempt at the next URL, or the failed row if none is left."""
    return next_url_or_failed(dataclasses.replace(attempt, url_index=attempt.url_index + 1, retries_done=0,
                                                  tried=attempt.tried + (what_happened,), last_reason=reason))


def _write_image(path: Path, data: bytes) -> None:
    """Temp name + rename, so a killed run never leaves a partial image under a final name.

    Like fashion_tf.fileio.atomic_path (same `.<name>.<tag>.tmp` names, so the same cleanup applies)
    but without mkstemp's extra open/close and fsync: renaming is atomic against a killed process,
    which is what resuming needs, and it halves the per-image file system cost. Plain os calls, not
    open(): that one also runs fstat, isatty and lseek (0.10 instead of 0.13 ms per image).
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        handle = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
        try:
            unwritten = memoryview(data)
            while unwritten:
                unwritten = unwritten[os.write(handle, unwritten):]
        finally:
            os.close(handle)
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise UserError(f"{path}: cannot write image: {err.strerror or err}") from None


def remove_stale_temp_files(images_dir: Path, older_than_s: float) -> int:
    """Temporary images left by a killed run (fileio names them `.<name>.<random>.tmp`)."""
    removed = 0
    if not images_dir.is_dir():
        return removed
    cutoff = time.time() - older_than_s
    with os.scandir(images_dir) as entries:
        for entry in entries:
            if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                try:
                    if entry.stat().st_mtime <= cutoff:
                        os.unlink(entry.path)
                        removed += 1
                except FileNotFoundError:
                    pass
    return removed


# ----------------------------------------------------------------------------- the run


@dataclass
class Summary:
    ok: int = 0
    failed: int = 0
    skipped_ok: int = 0
    skipped_failed: int = 0
    bytes_downloaded: int = 0
    bytes_written: int = 0
    kept_original: int = 0
    elapsed_s: float = 0.0
    bad_manifest_lines: int = 0
    stale_temp_removed: int = 0
    source: str = ""

    def __post_init__(self):
        self.failures: Counter[str] = Counter()

    @property
    def attempted(self) -> int:
        return self.ok + self.failed

    def nothing_downloaded(self) -> bool:
        """Every image of the job failed, in this run and before it: the job did not work."""
        return self.ok + self.skipped_ok == 0 and self.failed + self.skipped_failed > 0

    @classmethod
    def merged(cls, parts: Sequence["Summary"]) -> "Summary":
        """One summary of several processes' shares (their sources joined, elapsed left to the caller)."""
        total = cls(source=" + ".join(part.source for part in parts))
        for field_ in dataclasses.fields(cls):
            if field_.type in ("int", int):
                setattr(total, field_.name, sum(getattr(part, field_.name) for part in parts))
        for part in parts:
            total.failures.update(part.failures)
        total.bad_manifest_lines = max((part.bad_manifest_lines for part in parts), default=0)  # each read the same manifest
        return total

    def as_dict(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k != "failures"}
        out["failed_by_reason"] = dict(self.failures.most_common())
        out["images_per_s"] = round(self.attempted / self.elapsed_s, 1) if self.elapsed_s else 0.0
        return out

    def describe(self, output_dir: Path) -> str:
        reasons = ", ".join(f"{reason} {count}" for reason, count in self.failures.most_common()) or "none"
        rate = self.attempted / self.elapsed_s if self.elapsed_s else 0.0
        text = (
            f"Downloaded {self.ok} images ok and {self.failed} failed (by reason: {reasons}) "
            f"in {self.elapsed_s:.1f} s, {rate:.1f} images/s; {self.bytes_downloaded / 1e6:.1f} MB downloaded, "
            f"{self.bytes_written / 1e6:.1f} MB written ({self.kept_original} JPEGs kept byte for byte). "
            f"Skipped from earlier runs: {self.skipped_ok} ok, {self.skipped_failed} failed"
            f"{' (use --retry-failed to try those again)' if self.skipped_failed else ''}. "
            f"Source: {self.source}. Manifest: {describe_files(output_dir)}."
        )
        if self.bad_manifest_lines:
            text += f" {self.bad_manifest_lines} unreadable manifest line(s) ignored (torn by a killed run?)."
        return text


def download(input_path: str | os.PathLike, output_dir: str | os.PathLike, options: Options = Options()) -> Summary:
    """Download one shard of `input_path` into `output_dir`; resumable. Returns the run's summary.

    The folder is locked for this job (or this --shard-index of it) while it runs: a second run of the same job
    is refused instead of downloading everything again into a duplicated manifest.
    """
    check_path(output_dir, "--output-dir", "a URL (gs://...) takes --engine beam")
    check_folder_writable(Path(output_dir), "download folder")
    SourceReader(input_path, options.shard_index, options.num_shards)  # a missing or unreadable input: before any write
    with lock_for_writing(output_dir, options.shard_index, options.num_shards):
        if options.processes > 1:
            return download_in_processes(input_path, output_dir, options)
        return download_share(input_path, output_dir, options)


def download_share(input_path: str | os.PathLike, output_dir: str | os.PathLike, options: Options) -> Summary:
    """download() of one process's share, in this process; the caller holds the folder lock."""
    output_dir = Path(output_dir)
    reader, records = _open_share(input_path, options)
    images_dir(output_dir).mkdir(parents=True, exist_ok=True)
    # A lone run owns the folder: any temp file is garbage. Shards running beside it may own young ones.
    stale = remove_stale_temp_files(images_dir(output_dir), 0 if options.num_shards == 1 else 3600)
    reader.start_loading_labels()  # JSON annotations come after the images: read them beside the downloads
    summary = fetch_records(records, reader, output_dir, manifest_path(output_dir),
                            read_manifest(output_dir, with_labels=False), options)
    summary.stale_temp_removed = stale
    return summary


def fetch_records(records: Iterable[SourceRecord], labels: LabelSource, output_dir: Path, manifest_file: Path,
                  previous: Manifest, options: Options, image_kept: Callable[[str], bool] | None = None) -> Summary:
    """The download loop: each record not already done (per `previous`) fetched, checked, written to
    output_dir/images, and its row appended to `manifest_file` once its labels are known.

    An "ok" row of `previous` counts as done when `image_kept(path)` says its image is still there (default:
    the file exists under output_dir)."""
    image_kept = image_kept or (lambda relpath: (output_dir / relpath).is_file())
    summary = Summary(bad_manifest_lines=previous.torn_lines)
    previous_rows = previous.entries
    images_dir(output_dir).mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    writer = ManifestWriter(manifest_file)
    waiting_for_labels: list[tuple[SourceRecord, dict]] = []
    bar = tqdm(unit="img", disable=not options.progress, dynamic_ncols=True, smoothing=0.05, mininterval=0.5)
    fetcher = Fetcher(options, max_transfers=options.workers)
    # Bounded memory: at most `workers` transfers at once (never a million pending), and a cap on
    # records waiting out a backoff (they wait in a heap, holding no connection).
    max_waiting = options.workers * 64
    backoff_heap: list[tuple[float, int, Attempt]] = []
    sequence = itertools.count()
    last_postfix = 0.0

    def start(attempt: Attempt) -> None:
        outcome = next_url_or_failed(attempt)
        if isinstance(outcome, Attempt):
            fetcher.start(outcome.record.urls[outcome.url_index], outcome)
        else:
            finished(attempt.record, outcome)

    def fetched(attempt: Attempt, result: bytes | FetchFailed) -> None:
        outcome = after_fetch(attempt, result, output_dir, options)
        if isinstance(outcome, tuple):
            next_attempt, delay = outcome
            heapq.heappush(backoff_heap, (time.monotonic() + delay, next(sequence), next_attempt))
        elif isinstance(outcome, Attempt):
            start(outcome)
        else:
            finished(attempt.record, outcome)

    def finished(record: SourceRecord, row: dict) -> None:
        if row["status"] == OK:
            summary.ok += 1
            summary.bytes_downloaded += row["source_bytes"]
            summary.bytes_written += row["bytes"]
            summary.kept_original += row["kept_original"]
        else:
            summary.failed += 1
            summary.failures[row["error"]] += 1
        waiting_for_labels.append((record, row))
        bar.update(1)

    def step() -> None:
        """Move the downloads on until one ends or a backoff is over; write what is ready."""
        nonlocal last_postfix
        timeout = min(1.0, max(0.0, backoff_heap[0][0] - time.monotonic())) if backoff_heap else 1.0
        if fetcher.active:
            for attempt, result in fetcher.poll(timeout):
                fetched(attempt, result)
        elif backoff_heap:
            time.sleep(timeout)
        while backoff_heap and backoff_heap[0][0] <= time.monotonic():
            start(heapq.heappop(backoff_heap)[2])
        if waiting_for_labels and labels.labels_ready():
            for record, row in waiting_for_labels:
                writer.write(_with_labels(row, labels.labels_for(record)))
            waiting_for_labels.clear()
        if options.progress and time.monotonic() - last_postfix > 0.5:
            last_postfix = time.monotonic()
            bar.set_postfix(ok=summary.ok, failed=summary.failed, skipped=summary.skipped_ok + summary.skipped_failed, refresh=False)

    try:
        for record in records:
            entry = previous_rows.get(record.image_id)
            status, relpath = (entry.status, entry.path) if entry else ("", "")
            if status == OK and relpath and image_kept(relpath):
                summary.skipped_ok += 1
                continue
            if status == FAILED and not options.retry_failed:
                summary.skipped_failed += 1
                continue
            while fetcher.active >= options.workers or len(backoff_heap) >= max_waiting:
                step()
            start(Attempt(record))
        while fetcher.active or backoff_heap:
            step()
        labels.wait_for_labels()
        step()
    finally:
        fetcher.close()
        writer.close()
        if options.progress:
            bar.set_postfix(ok=summary.ok, failed=summary.failed, skipped=summary.skipped_ok + summary.skipped_failed, refresh=True)
        bar.close()
    summary.elapsed_s = time.monotonic() - started
    summary.source = labels.stats.describe()
    return summary


# ----------------------------------------------------------------------------- several processes


def download_in_processes(input_path: str | os.PathLike, output_dir: str | os.PathLike, options: Options) -> Summary:
    """download() split over options.processes worker processes, each with its share of the --workers downloads.

    A process checks, converts and writes its images in one thread, so it keeps about one core busy;
    P processes keep P cores busy (threads would share one GIL). Each process runs download() on a
    share of the shard (the same crc32 split, one level down) and appends whole rows to the one
    manifest, as shards into one folder already do; this process shows the progress and sums the summaries.
    """
    output_dir = Path(output_dir)
    started = time.monotonic()
    stale_removed = 0
    if options.num_shards == 1:  # a lone run owns the folder: any temp file is garbage
        stale_removed = remove_stale_temp_files(images_dir(output_dir), 0)
    context = multiprocessing.get_context(_start_method())
    results = context.Queue()
    progress = _ManifestProgress(manifest_path(output_dir))
    children = [context.Process(target=_run_share, args=(str(input_path), str(output_dir), share, results), name=f"download-{i}")
                for i, share in enumerate(process_shares(options))]
    bar = None
    try:
        for child in children:
            child.start()
        bar = tqdm(unit="img", disable=not options.progress, dynamic_ncols=True, smoothing=0.05, mininterval=0.5)  # a thread: after the forks
        summaries = _collect_summaries(children, results, progress, bar)
    finally:
        for child in children:
            if child.is_alive():
                child.terminate()
            child.join()
        if bar is not None:
            bar.close()
    summary = Summary.merged(summaries)
    summary.stale_temp_removed += stale_removed
    summary.elapsed_s = time.monotonic() - started
    return summary


def _start_method() -> str:
    """fork where it is safe, a process with no other thread on Linux (it skips the ~0.3 s of a fresh
    interpreter importing this module), else spawn (a forked copy of a threaded process may deadlock)."""
    return "fork" if sys.platform == "linux" and threading.active_count() == 1 else "spawn"


def process_shares(options: Options) -> list[Options]:
    """Each process's options: share j of shard I of N is shard I + N*j of N*P (crc32 % (N*P) is I + N*j
    exactly when crc32 % N is I), with workers // P downloads each (the remainder to the first ones)."""
    count = options.processes
    return [dataclasses.replace(options, processes=1, progress=False, num_shards=options.num_shards * count,
                                limit_shard=(options.shard_index, options.num_shards) if options.limit else None,
                                shard_index=options.shard_index + options.num_shards * j,
                                workers=max(1, options.workers // count + (j < options.workers % count)))
            for j in range(count)]


def _run_share(input_path: str, output_dir: str, options: Options, results) -> None:
    """A worker process: its share downloaded, then ("ok", Summary) or ("error", message) on `results`."""
    _die_with_parent()
    configure_pillow(options)
    try:
        results.put(("ok", download_share(input_path, output_dir, options)))
    except UserError as err:
        results.put(("error", str(err)))
    except KeyboardInterrupt:
        results.put(("error", "interrupted"))


def _die_with_parent() -> None:
    """Linux: this process gets SIGKILL when its parent ends, however it ends (even killed by SIGKILL)."""
    with contextlib.suppress(Exception):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the parent was gone before the call above
        os._exit(1)


def _collect_summaries(children: list, results, progress: "_ManifestProgress", bar: tqdm) -> list[Summary]:
    summaries: list[Summary] = []
    while len(summaries) < len(children):
        try:
            kind, value = results.get(timeout=0.2)
        except queue.Empty:
            if not any(child.is_alive() for child in children) and results.empty():
                codes = ", ".join(str(child.exitcode) for child in children)
                raise UserError(f"a download process ended without a result (exit codes {codes}); re-run the same command to resume") from None
            bar.update(progress.new_rows())
            bar.set_postfix(ok=progress.ok, failed=progress.failed, refresh=False)
            continue
        if kind == "error":
            raise UserError(value)
        summaries.append(value)
    bar.update(progress.new_rows())
    bar.set_postfix(ok=progress.ok, failed=progress.failed, refresh=True)
    return summaries


class _ManifestProgress:
    """Counts the rows that worker processes append to the manifest, for the progress bar."""

    def __init__(self, path: Path):
        self.path, self.ok, self.failed = path, 0, 0
        self.offset = path.stat().st_size if path.exists() else 0
        self.partial = b""

    def new_rows(self) -> int:
        if not self.path.exists():
            return 0
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            data = self.partial + handle.read()
        self.offset += len(data) - len(self.partial)
        *lines, self.partial = data.split(b"\n")
        ok = sum(1 for line in lines if b'"status": "ok"' in line)
        self.ok, self.failed = self.ok + ok, self.failed + len(lines) - ok
        return len(lines)


def _with_labels(row: dict, labels: Sequence[str]) -> dict:
    """The row with labels after image_id, status and path (keys already placed keep their place)."""
    head = {"image_id": row["image_id"], "status": row["status"]}
    if "path" in row:
        head["path"] = row["path"]
    return {**head, "labels": list(labels), **row}


def _open_share(input_path: str | os.PathLike, options: Options) -> tuple[SourceReader, Iterator[SourceRecord]]:
    """The reader and the records this run downloads: its shard, cut to the first --limit records of
    options.limit_shard when a worker process shares a limited shard with others."""
    if options.limit and options.limit_shard is not None:
        reader = SourceReader(input_path, *options.limit_shard)
        mine = (record for record in _limited(reader.records(with_labels=False), options.limit)
                if shard_of(record.image_id, options.num_shards) == options.shard_index)
        return reader, mine
    reader = SourceReader(input_path, options.shard_index, options.num_shards)
    return reader, _limited(reader.records(with_labels=False), options.limit)


def _limited(records: Iterator[SourceRecord], limit: int) -> Iterator[SourceRecord]:
    if not limit:
        yield from records
        return
    for count, record in enumerate(records, start=1):
        yield record
        if count >= limit:
            return


# ----------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    defaults = Options()
    parser = argparse.ArgumentParser(
        prog="download_images.py",
        description="Download the images of an iMaterialist JSON (Fashion/Furniture 2018 layout) or a CSV "
        "id,url[,labels] into DIR/images/<id>.jpg (RGB JPEG) with DIR/manifest.jsonl. Resumable: re-running "
        "skips ids already done.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--input", required=True, help="train.json / validation.json / test.json or a CSV id,url[,labels]")
    parser.add_argument("--output-dir", required=True, help="folder for images/ and manifest.jsonl (created)")
    parser.add_argument("--workers", type=int, default=defaults.workers, help="downloads in flight at once, in all processes together")
    parser.add_argument("--processes", type=int, default=0,
                        help="processes sharing the --workers downloads, each checking and writing its images on one "
                        "core; 0: one per CPU (at most --workers)")
    parser.add_argument("--timeout", type=float, default=defaults.timeout, help="read timeout per attempt, seconds (a whole body gets 4x)")
    parser.add_argument("--connect-timeout", type=float, default=defaults.connect_timeout, help="connect timeout, seconds")
    parser.add_argument("--retries", type=int, default=defaults.retries, help="extra attempts per URL on connection errors, timeouts, cut bodies, 429 and 5xx")
    parser.add_argument("--backoff", type=float, default=defaults.backoff, help="first retry delay in seconds, doubled each retry, with +-50%% jitter")
    parser.add_argument("--max-retry-after", type=float, default=defaults.max_retry_after, help="cap on a server's Retry-After, seconds")
    parser.add_argument("--max-redirects", type=int, default=defaults.max_redirects, help="redirects followed per URL")
    parser.add_argument("--max-size", type=int, default=defaults.max_size, metavar="PX", help="shrink so the longest side is at most PX (aspect kept); 0 keeps the size")
    parser.add_argument("--quality", type=int, default=defaults.quality, help="JPEG quality when re-encoding")
    parser.add_argument("--max-bytes", type=int, default=defaults.max_bytes, help="largest download accepted, bytes")
    parser.add_argument("--max-pixels", type=int, default=defaults.max_pixels, help="largest declared width*height accepted (checked before decoding)")
    parser.add_argument("--user-agent", default=defaults.user_agent, help="User-Agent header")
    parser.add_argument("--retry-failed", action="store_true", help="also retry ids whose last manifest row is failed")
    parser.add_argument("--shard-index", type=int, default=0, help="which share of the input to download (0-based)")
    parser.add_argument("--num-shards", type=int, default=1, help="split the input into this many shares by crc32(image_id) %% N")
    parser.add_argument("--limit", type=int, default=0, help="consider only the first N records of the shard (0: all)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--engine", choices=("local", "beam"), default="local",
                        help="local: this machine (--processes); beam: an Apache Beam pipeline on the runner named by "
                        "the options after `--` (DirectRunner, DataflowRunner, FlinkRunner, SparkRunner)")
    parser.add_argument("--work-shard-size", type=int, default=2000,
                        help="--engine beam: images per work shard (one unit of work for a Beam worker)")
    parser.add_argument("--summary-json", help="also write the summary as JSON to this file")
    return parser


def options_from_args(args: argparse.Namespace) -> Options:
    checks = [
        (args.workers >= 1, "--workers must be >= 1"),
        (args.processes >= 0, "--processes must be >= 0"),
        (args.timeout > 0 and args.connect_timeout > 0, "--timeout and --connect-timeout must be > 0"),
        (args.retries >= 0, "--retries must be >= 0"),
        (args.backoff >= 0 and args.max_retry_after >= 0, "--backoff and --max-retry-after must be >= 0"),
        (args.max_size >= 0, "--max-size must be >= 0"),
        (1 <= args.quality <= 100, "--quality must be in 1..100"),
        (args.max_bytes > 0 and args.max_pixels > 0, "--max-bytes and --max-pixels must be > 0"),
        (args.limit >= 0, "--limit must be >= 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)
    check_shard_args(args.shard_index, args.num_shards)  # before the shard is split again over processes
    return Options(
        workers=args.workers, timeout=args.timeout, connect_timeout=args.connect_timeout, retries=args.retries,
        backoff=args.backoff, max_retry_after=args.max_retry_after, max_redirects=args.max_redirects,
        max_size=args.max_size, quality=args.quality, max_bytes=args.max_bytes, max_pixels=args.max_pixels,
        user_agent=args.user_agent, retry_failed=args.retry_failed, limit=args.limit,
        shard_index=args.shard_index, num_shards=args.num_shards, progress=not args.no_progress,
        processes=args.processes or min(os.cpu_count() or 1, args.workers),
    )


def configure_pillow(options: Options) -> None:
    """Our own --max-pixels check runs first; Pillow's global guard must not be stricter or noisier."""
    Image.MAX_IMAGE_PIXELS = max(options.max_pixels, DEFAULT_MAX_PIXELS)
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
    ImageFile.LOAD_TRUNCATED_IMAGES = False


def main(argv: Sequence[str] | None = None) -> int:
    from fashion_tf.beam.pipeline import split_engine_args

    ours, beam_args = split_engine_args(argv)
    args = build_parser().parse_args(ours)
    options = options_from_args(args)
    configure_pillow(options)
    if beam_args and args.engine != "beam":
        raise UserError("options after `--` go to Apache Beam: give --engine beam as well")
    if args.engine == "beam":
        summary = _beam_engine().download(args.input, args.output_dir, options, beam_args, args.work_shard_size)
    else:
        summary = download(args.input, args.output_dir, options)
    print(summary.describe(Path(args.output_dir)), flush=True)
    if args.summary_json:
        from fashion_tf.fileio import write_json_atomic

        write_json_atomic(args.summary_json, summary.as_dict())
    if summary.nothing_downloaded():
        print(f"every image failed ({summary.failed + summary.skipped_failed}); see the failures by reason above",
              file=sys.stderr)
        return 1
    return 0


def _beam_engine():
    try:
        from fashion_tf.beam import download as engine
    except ImportError as err:
        from fashion_tf.beam.pipeline import BEAM_EXTRA

        raise UserError(f"--engine beam needs Apache Beam ({err}): {BEAM_EXTRA}") from None
    return engine


if __name__ == "__main__":
    sys.exit(run_cli(main))
