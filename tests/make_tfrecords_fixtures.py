"""Inputs and readers shared by the make_tfrecords tests: real images (tiny, Pillow-made), real download folders,
real shards read back with TensorFlow."""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from fashion_tf import schema
from fashion_tf.errors import run_cli
from fashion_tf.make_tfrecords.cli import main
from fashion_tf.manifest import IMAGES_DIR, images_dir, manifest_path
from fashion_tf.shard_folder import ShardFolder

REPO = Path(__file__).resolve().parents[1]
TOOL = REPO / "tools" / "make_tfrecords.py"
DATA = Path(os.environ.get("FASHION_PRODUCTS_DIR", REPO.parent / "shared/data/fashion-products"))
TOOL_ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")


def image_bytes(seed: int, fmt: str = "JPEG", size: tuple[int, int] = (12, 8)) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def labels_for(i: int) -> list[str]:
    """Skewed multi-label set: label 1 common, 2..5 rarer, 6 on two images only."""
    labels = ["1"] if i % 2 == 0 else []
    labels += [str(2 + i % 4)] if i % 3 else []
    labels += ["6"] if i in (5, 17) else []
    return labels


def make_download_folder(root: Path, n: int = 40, failed: int = 2) -> dict[str, tuple[bytes, list[str]]]:
    """A download stage output (manifest + images folder): some PNGs, a re-tried id, failed rows."""
    images_dir(root).mkdir(parents=True)
    expected, rows = {}, []
    for i in range(n):
        image_id = str(1000 + i)
        fmt, ext = ("PNG", "png") if i % 5 == 0 else ("JPEG", "jpg")
        data = image_bytes(i, fmt, size=(10 + i % 7, 6 + i % 5))
        (images_dir(root) / f"{image_id}.{ext}").write_bytes(data)
        labels = labels_for(i)
        if i == 3:  # first attempt failed, the retry succeeded: last row wins
            rows.append({"image_id": image_id, "status": "failed", "path": None, "labels": labels})
        rows.append({"image_id": image_id, "status": "ok", "path": f"{IMAGES_DIR}/{image_id}.{ext}", "labels": labels,
                     "width": 1, "height": 1, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)})
        expected[image_id] = (data, labels)
    for j in range(failed):
        rows.append({"image_id": f"f{j}", "status": "failed", "path": None, "labels": ["1"]})
    with open(manifest_path(root), "w") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    return expected


def write_images(folder: Path, ids: list[str]) -> dict[str, bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for k, image_id in enumerate(ids):
        out[image_id] = image_bytes(k)
        (folder / f"{image_id}.jpg").write_bytes(out[image_id])
    return out


def shard_info(out: Path) -> dict:
    return json.loads(ShardFolder(out).info_path.read_text())


def read_split(out: Path, split: str) -> dict[str, dict]:
    import tensorflow as tf

    records = {}
    for shard in shard_info(out)["splits"][split]["shards"]:
        for raw in tf.data.TFRecordDataset(str(out / shard)):
            parsed = {k: v.numpy() for k, v in schema.parse_example(raw).items()}
            records[parsed[schema.SOURCE_ID].decode()] = parsed
    return records


def parsed_records(shard: Path) -> list:
    """Examples as protos (equal when their features are, whatever the map order of their bytes)."""
    import tensorflow as tf

    return [tf.train.Example.FromString(raw) for raw in tf.compat.v1.io.tf_record_iterator(str(shard))]


def run(argv: list) -> int:
    """The command, in this process, as run_cli runs it (exit code; output on capsys)."""
    return run_cli(main, [str(a) for a in argv])


def tool_command(*args) -> list[str]:
    return [sys.executable, str(TOOL), *map(str, args)]


def one_line_error(capsys, argv: list) -> str:
    capsys.readouterr()
    assert run(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in captured.err
    return err


def tree(folder: Path) -> dict[str, tuple[int, int]] | None:
    """Every file under `folder` with its size and mtime (None when the folder does not exist)."""
    if not folder.exists():
        return None
    if folder.is_file():
        return {"": (folder.stat().st_size, folder.stat().st_mtime_ns)}
    return {os.fspath(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}
