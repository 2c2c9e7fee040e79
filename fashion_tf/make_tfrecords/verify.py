"""--verify: read a shard folder back and check every promise its metadata makes."""

from __future__ import annotations

import hashlib
import io
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fashion_tf import schema
from fashion_tf.make_tfrecords.writer import file_sha256
from fashion_tf.shard_folder import ShardFolder


def verify_output(out: Path, workers: int = 2) -> tuple[bool, list[str]]:
    """Each shard against its receipt (size, sha256), record counts, every image's sha256, label indices within
    the label map, every image decodes. (ok, one line per bad shard or one line saying all is well); a label map
    that does not match shard_info.json is a UserError naming it (ShardFolder's check)."""
    from tqdm import tqdm

    folder = ShardFolder(out)
    shards = folder.shard_lengths()
    num_labels = folder.num_labels
    bar = tqdm(total=sum(n for _, n in shards), unit="img", desc="verifying", disable=None)
    lock = threading.Lock()
    checked = [0]

    def record_checked() -> None:
        with lock:
            checked[0] += 1
            bar.update(1)

    def check(shard: str, expected: int) -> str | None:
        if not folder.shard_path(shard).is_file():
            return f"{shard}: missing"
        return _against_receipt(folder, shard) or _records(folder, shard, expected, num_labels, record_checked)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        problems = [p for p in pool.map(lambda s: check(*s), shards) if p]
    bar.close()
    if problems:
        return False, problems
    return True, [f"verified {len(shards)} shards, {checked[0]:,} records: receipts, counts, sha256, label indices "
                  "and decoding all good"]


def _against_receipt(folder: ShardFolder, shard: str) -> str | None:
    if not folder.receipt_path(shard).is_file():
        return None  # a folder copied without its write state: nothing to compare with
    receipt = folder.read_receipt(shard)
    if receipt is None:
        return f"{shard}: not the file its receipt describes (size {folder.shard_path(shard).stat().st_size:,} bytes)"
    if "sha256" in receipt and file_sha256(folder.shard_path(shard)) != receipt["sha256"]:
        return f"{shard}: sha256 of the file differs from its receipt's"
    return None


def _records(folder: ShardFolder, shard: str, expected: int, num_labels: int, record_checked) -> str | None:
    import tensorflow as tf
    from PIL import Image

    count = 0
    try:
        for raw in tf.data.TFRecordDataset(os.fspath(folder.shard_path(shard))).as_numpy_iterator():
            example = tf.train.Example.FromString(raw).features.feature
            encoded = example[schema.ENCODED].bytes_list.value[0]
            image_id = example[schema.SOURCE_ID].bytes_list.value[0].decode()
            where = f"{shard}: record {count} (image {image_id})"
            if hashlib.sha256(encoded).hexdigest() != example[schema.SHA256].bytes_list.value[0].decode():
                return f"{where}: sha256 mismatch"
            labels = example[schema.LABEL].int64_list.value
            if labels and not 0 <= min(labels) <= max(labels) < num_labels:
                return (f"{where}: label index {max(labels) if max(labels) >= num_labels else min(labels)} outside "
                        f"the {num_labels} labels of {folder.label_map_path.name}")
            try:
                Image.open(io.BytesIO(encoded)).load()
            except Exception as err:  # any decoder failure is a corrupt record
                return f"{where}: image does not decode ({err})"
            count += 1
            record_checked()
    except tf.errors.OpError as err:
        return f"{shard}: corrupt after {count} records ({type(err).__name__}: {err.message.splitlines()[0]})"
    except (IndexError, UnicodeDecodeError) as err:
        return f"{shard}: record {count}: malformed example ({err})"
    if count != expected:
        return f"{shard}: {count} records, {folder.info_path.name} says {expected}"
    return None
