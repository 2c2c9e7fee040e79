"""What a make_tfrecords run is asked to do: one dataclass, checked in one place before anything is read or written."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from fashion_tf.errors import UserError
from fashion_tf.fileio import check_folder_writable
from fashion_tf.storage import check_path
from fashion_tf.image_guard import DEFAULT_MAX_PIXELS


def default_workers() -> int:
    return min(4, os.cpu_count() or 1)


@dataclass
class Options:
    """The options of `python tools/make_tfrecords.py`, one field per flag (see its --help)."""

    input: Path
    output_dir: Path
    images: Path | None = None
    label_map: Path | None = None
    val_fraction: float = 0.1
    test_fraction: float = 0.0
    seed: int = 0
    shard_size_mb: float = 128.0
    min_shards: int = 16
    workers: int = field(default_factory=default_workers)
    split_from: Path | None = None
    groups: tuple[str, ...] | None = None  # attribute CSV columns used as label groups; None: all but a few
    max_size: int | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    name: str | None = None
    overwrite: bool = False
    tfds: bool = True

    def __post_init__(self) -> None:
        for name in ("input", "output_dir", "images", "label_map", "split_from"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, Path(value))
        if self.groups is not None:
            self.groups = tuple(self.groups)

    def check(self) -> None:
        """A one-line UserError naming the option, before anything is read or written."""
        if not 0 <= self.val_fraction < 1 or not 0 <= self.test_fraction < 1:
            raise UserError("--val-fraction and --test-fraction must be in [0, 1)")
        if self.val_fraction + self.test_fraction >= 1:
            raise UserError("--val-fraction + --test-fraction must be < 1")
        if not 0 < self.shard_size_mb < math.inf:
            raise UserError("--shard-size-mb must be > 0")
        if self.min_shards < 1 or self.workers < 1:
            raise UserError("--min-shards and --workers must be >= 1")
        if self.max_size is not None and self.max_size < 8:
            raise UserError("--max-size must be >= 8")
        if self.max_pixels < 1:
            raise UserError("--max-pixels must be >= 1")
        if self.groups is not None and not [g for g in self.groups if g.strip()]:
            raise UserError("--groups is empty")
        instead = ("copy it to a disk the writers see first (gsutil -m cp -r ...), or mount it (a shared file system, "
                   "GCS through FUSE)")
        for path, what in ((self.input, "--input"), (self.images, "--images"), (self.output_dir, "--output-dir")):
            if path is not None:
                check_path(path, what, instead)
        check_folder_writable(self.output_dir, "TFRecord output folder")

    @property
    def dataset_name(self) -> str:
        """--name, or the output folder's name, as a TFDS dataset name (lower case, letters, digits and _)."""
        raw = self.name or self.output_dir.resolve().name or "dataset"
        name = "".join(c if c.isalnum() else "_" for c in raw.lower()).strip("_")
        return name if name and name[0].isalpha() else f"ds_{name}"
