"""Writing shards: each image made ready (header checked, re-encoded only when asked), one shard written under a
temporary name and renamed when complete, its receipt written last; the pending shards of a run in threads."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import multiprocessing
import os
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from fashion_tf import schema
from fashion_tf.errors import UserError
from fashion_tf.fileio import atomic_path, write_json_atomic
from fashion_tf.image_guard import DEFAULT_MAX_PIXELS, UnsafeImage, check_image
from fashion_tf.make_tfrecords.plan import ShardJob, ShardTarget
from fashion_tf.make_tfrecords.skipped import Skipped
from fashion_tf.shard_folder import ShardFolder
from fashion_tf.tfrecord import RecordWriter

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # no room, over quota, over the file-size limit
HASH_BLOCK = 1 << 20

Progress = Callable[[int, int], None]  # (images done, image bytes written)


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


def _read_image(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as err:
        raise ImageProblem("unreadable_file", f"{path}: {err.strerror}") from None


@dataclass
class _Written:
    length: int = 0
    image_bytes: int = 0
    label_counts: np.ndarray | None = None
    skipped: Skipped = field(default_factory=Skipped)
    sha256: str = ""  # of the shard file
    num_bytes: int = 0


def _write_records(path: Path, target: ShardTarget, job: ShardJob, progress: Progress) -> _Written:
    written = _Written(label_counts=np.zeros(target.num_labels, dtype=np.int64))
    with RecordWriter(path) as writer:
        for image_id, image_path, labels in zip(job.image_ids, job.paths, job.labels):
            try:
                data, fmt, height, width = prepare_image(_read_image(image_path), target.max_size, target.max_pixels)
            except ImageProblem as problem:
                written.skipped.add(problem.reason, image_id, str(problem))
                progress(1, 0)
                continue
            sha256 = hashlib.sha256(data).hexdigest()
            writer.write(schema.serialize_example(data, fmt, height, width, labels.tolist(), image_id, sha256))
            written.label_counts[labels] += 1
            written.length += 1
            written.image_bytes += len(data)
            progress(1, len(data))
    written.sha256, written.num_bytes = writer.sha256(), writer.bytes_written
    return written


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(HASH_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def _no_progress(images: int, nbytes: int) -> None:
    pass


def write_shard(target: ShardTarget, job: ShardJob, progress: Progress = _no_progress) -> dict:
    """Write one shard, then its receipt, and return the receipt. Safe to repeat or kill: the shard gets its final
    name only when complete, its receipt comes last, and the same job always gives the same records."""
    folder = ShardFolder(target.output_dir)
    final = folder.shard_path(job.name)
    with disk_full_is_user_error(final, folder):
        with atomic_path(final) as tmp:
            written = _write_records(tmp, target, job, progress)
        receipt = {
            "name": job.name,
            "split": job.split,
            "length": written.length,
            "num_bytes": written.num_bytes,
            "sha256": written.sha256,
            "image_bytes": written.image_bytes,
            "label_counts": written.label_counts.tolist(),
            "skipped": written.skipped.to_dict(),
        }
        # After the rename: a shard without a receipt is rewritten on resume.
        write_json_atomic(folder.receipt_path(job.name), receipt, indent=None)
    return receipt


def write_shards(target: ShardTarget, jobs: Sequence[ShardJob], workers: int) -> tuple[list[dict], dict]:
    """Write `jobs` in `workers` processes (one shard each at a time; in this process when workers is 1); return
    their receipts and write statistics. The first failure stops the rest: pending shards are not started.

    Processes, not threads: serializing records is Python, and threads of one process share one core for it.
    """
    from tqdm import tqdm

    context = _process_context()
    images, nbytes = context.Value("q", 0), context.Value("q", 0)
    started = time.perf_counter()
    pool = _shard_pool(workers, context, images, nbytes)
    bar = tqdm(total=sum(len(job) for job in jobs), unit="img", desc="writing shards", disable=None, smoothing=0.1)
    try:
        futures = [pool.submit(_write_counted, target, job) for job in jobs]
        receipts = []
        while len(receipts) < len(futures):
            wait([f for f in futures if not f.done()] or futures, timeout=0.5, return_when=FIRST_COMPLETED)
            receipts = [f.result() for f in futures if f.done()]  # raises the first failure
            bar.update(images.value - bar.n)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    stats = {
        "shards_written": len(receipts),
        "seconds": time.perf_counter() - started,
        "image_bytes_written": nbytes.value,
        "shard_bytes_written": sum(receipt["num_bytes"] for receipt in receipts),
    }
    return receipts, stats


_counters: tuple | None = None  # (images, bytes) shared with the parent, in each writer process


def _process_context():
    """fork where it is safe (Linux, no other thread: nothing half-held is copied), else spawn."""
    method = "fork" if sys.platform == "linux" and threading.active_count() == 1 else "spawn"
    return multiprocessing.get_context(method)


def _shard_pool(workers: int, context, images, nbytes):
    if workers <= 1:
        _share_counters(images, nbytes)
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard")
    return ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_share_counters,
                               initargs=(images, nbytes))


def _share_counters(images, nbytes) -> None:
    global _counters
    _counters = (images, nbytes)


def _count(images: int, nbytes: int) -> None:
    shared_images, shared_bytes = _counters
    with shared_images.get_lock():
        shared_images.value += images
    with shared_bytes.get_lock():
        shared_bytes.value += nbytes


def _write_counted(target: ShardTarget, job: ShardJob) -> dict:
    return write_shard(target, job, _count)


def disk_full_reason(err: BaseException) -> str | None:
    """What the system said, when `err` is a full disk, an exhausted quota or the file-size limit."""
    if isinstance(err, OSError):
        return os.strerror(err.errno) if err.errno in DISK_FULL_ERRNOS else None
    return None


@contextlib.contextmanager
def disk_full_is_user_error(path: Path, folder: ShardFolder) -> Iterator[None]:
    """A full disk while writing `path` becomes one line saying what is kept and how to go on."""
    try:
        yield
    except Exception as err:
        reason = disk_full_reason(err)
        if reason is None:
            raise
        raise UserError(f"{path}: {reason} while writing into {folder.root}; the complete shards are kept and a "
                        "re-run of the same command resumes once there is room") from None
