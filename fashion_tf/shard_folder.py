"""The shard folder: what make_tfrecords writes and training, evaluation and the app read, named here only.

    OUT/{split}-NNNNN-of-NNNNN.tfrecord    the shards (fashion_tf.schema records)
    OUT/label_map.json                     index -> label id, name, group (fashion_tf.labels.LabelMap)
    OUT/shard_info.json                    counts per split, label and group; shard names and lengths
    OUT/dataset_info.json, features.json   TFDS metadata (tfds.builder_from_directory(OUT) loads the shards)
    OUT/.make_tfrecords/plan.json          the plan a resumed write continues
    OUT/.make_tfrecords/shards/<shard>.json  one receipt per complete shard (its size and sha256, written last)
    OUT/.make_tfrecords/jobs/<shard>.json    one shard's images, for a distributed (Beam) writer
    OUT/.make_tfrecords.lock               held by the one make_tfrecords run writing the folder

Every reader goes through `ShardFolder`, which checks that the label map, shard_info.json and the label
counts agree on the number of labels: a label map shorter than the shards' labels would silently drop the
labels past its end.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from fashion_tf.errors import UserError
from fashion_tf.fileio import FolderBusy, folder_lock
from fashion_tf.labels import LABEL_MAP_FILE

SPLITS = ("train", "validation", "test")
TFDS_FILES = ("dataset_info.json", "features.json")  # TFDS metadata, in the format of tfds.folder_dataset.write_metadata
STATE_DIR = ".make_tfrecords"
SHARD_SUFFIX = ".tfrecord"
LOCK_NAME = f"{STATE_DIR}.lock"  # beside the state folder, which --overwrite deletes
TFDS_SHARD_TEMPLATE = "{SPLIT}-{SHARD_X_OF_Y}.{FILEFORMAT}"  # shard_names as TFDS spells them


def shard_names(split: str, count: int) -> list[str]:
    return [f"{split}-{i:05d}-of-{count:05d}{SHARD_SUFFIX}" for i in range(count)]


@dataclass(frozen=True)
class ShardFolder:
    root: Path

    def __init__(self, root: str | os.PathLike):
        object.__setattr__(self, "root", Path(root))

    # ---- names -------------------------------------------------------------------------
    label_map_path = property(lambda self: self.root / LABEL_MAP_FILE)
    info_path = property(lambda self: self.root / "shard_info.json")
    state_dir = property(lambda self: self.root / STATE_DIR)
    plan_path = property(lambda self: self.state_dir / "plan.json")

    def shard_path(self, name: str) -> Path:
        return self.root / name

    def receipt_path(self, shard_name: str) -> Path:
        return self.state_dir / "shards" / f"{shard_name}.json"

    def job_path(self, shard_name: str) -> Path:
        """What a distributed writer reads of the plan for one shard: its images' ids, paths and labels."""
        return self.state_dir / "jobs" / f"{shard_name}.npz"

    def temp_shards(self) -> list[Path]:
        """Shards a killed writer left under their temporary names (fileio's `.<name>.<random>.tmp`)."""
        return sorted(self.root.glob(f".*{SHARD_SUFFIX}.*.tmp"))

    def outputs(self) -> list[Path]:
        """Every file or folder of ours here: shards, metadata, the write state."""
        found = [p for p in self.root.glob(f"*{SHARD_SUFFIX}") if p.name.split("-", 1)[0] in SPLITS]
        found += self.temp_shards()
        names = (self.info_path.name, self.label_map_path.name, *TFDS_FILES, STATE_DIR)
        return found + [self.root / n for n in names if (self.root / n).exists()]

    def lock_for_writing(self) -> folder_lock:
        """The writer's exclusive lock on the folder, released when the writing process ends however it ends;
        a second writer gets a one-line UserError instead of writing the same shards at the same time."""
        try:
            return folder_lock(self.root, LOCK_NAME)
        except FolderBusy as busy:
            raise UserError(f"{self.root}: another make_tfrecords run is writing this folder ({busy.holder}); "
                            "wait for it to end, or choose another --output-dir") from None

    def remove_outputs(self) -> None:
        for path in self.outputs():
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()

    # ---- reading ------------------------------------------------------------------------
    @cached_property
    def info(self) -> dict:
        """shard_info.json, parsed and checked against the label map; UserError naming the file."""
        if not self.root.is_dir():
            raise UserError(f"{self.root}: TFRecord folder not found (write it with make_tfrecords)")
        path = self.info_path
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError(f"{path}: not found (is {self.root} a make_tfrecords output folder?)") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise UserError(f"{path}: not valid JSON ({err})") from None
        if not isinstance(info, dict) or not isinstance(info.get("splits"), dict):
            raise UserError(f"{path}: missing key 'splits'")
        self._check_label_counts(info)
        return info

    @cached_property
    def label_map(self):
        from fashion_tf.labels import LabelMap

        if not self.label_map_path.is_file():
            raise UserError(f"{self.label_map_path}: not found (data.tfrecords must be a make_tfrecords output folder)")
        return LabelMap.from_json(self.label_map_path)

    @property
    def num_labels(self) -> int:
        """The number of labels, the same in label_map.json, shard_info.json and every split's label counts."""
        return len(self.label_map) if "num_labels" not in self.info else int(self.info["num_labels"])

    def _check_label_counts(self, info: dict) -> None:
        declared = info.get("num_labels")
        if declared is not None and (not isinstance(declared, int) or declared < 1):
            raise UserError(f"{self.info_path}: num_labels must be a positive integer, got {declared!r}")
        if self.label_map_path.is_file():
            mapped = len(self.label_map)
            if declared is not None and mapped != declared:
                raise UserError(f"{self.label_map_path}: lists {mapped} labels but {self.info_path.name} says the "
                                f"shards use {declared}; the label map does not belong to these shards (re-run make_tfrecords)")
            declared = mapped if declared is None else declared
        for split, data in info["splits"].items():
            counts = data.get("label_counts") if isinstance(data, dict) else None
            if declared is not None and isinstance(counts, list) and len(counts) != declared:
                raise UserError(f"{self.info_path}: splits.{split}.label_counts has {len(counts)} labels, "
                                f"not {declared}")

    def splits(self) -> list[str]:
        return list(self.info["splits"])

    def _split(self, split: str) -> dict:
        splits = self.info["splits"]
        if split not in splits:
            raise UserError(f"{self.info_path}: no split {split!r} (splits: {', '.join(splits) or 'none'})")
        return splits[split]

    def num_examples(self, split: str) -> int:
        try:
            return int(self._split(split)["num_examples"])
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{self.info_path}: splits.{split}.num_examples missing or not a number") from None

    def label_counts(self, split: str) -> np.ndarray:
        """Examples per label index in the split, int64 [C]."""
        counts = self._split(split).get("label_counts")
        if not isinstance(counts, list):
            raise UserError(f"{self.info_path}: splits.{split}.label_counts missing")
        return np.asarray(counts, dtype=np.int64)

    def single_choice_groups(self) -> dict[str, list[int]]:
        """{group: label indices} of the groups make_tfrecords found single-choice (no image with two labels of it)."""
        groups = self.info.get("groups")
        if not isinstance(groups, dict):
            raise UserError(f"{self.info_path}: no 'groups' (rewrite the shards with make_tfrecords)")
        return {name: [int(i) for i in group["labels"]] for name, group in groups.items()
                if group.get("exclusive") and len(group.get("labels", [])) > 1}

    def shard_files(self, split: str) -> list[str]:
        """Full paths of the split's shards, in the order shard_info.json lists them."""
        names = self._split(split).get("shards")
        files = sorted(self.root.glob(f"{split}-*-of-*{SHARD_SUFFIX}")) if names is None else [self.root / n for n in names]
        missing = [f for f in files if not f.is_file()]
        if missing:
            raise UserError(f"{missing[0]}: shard listed in {self.info_path.name} not found ({len(missing)} missing)")
        if not files:
            raise UserError(f"{self.root}: split {split!r} has no shard files")
        return [str(f) for f in files]

    def shard_lengths(self) -> list[tuple[str, int]]:
        """(shard name, records) of every split, as shard_info.json lists them."""
        try:
            return [(s, int(n)) for data in self.info["splits"].values()
                    for s, n in zip(data["shards"], data["shard_lengths"])]
        except (KeyError, TypeError, ValueError) as err:
            raise UserError(f"{self.info_path}: not a make_tfrecords {self.info_path.name} ({err})") from None

    # ---- receipts: the write state of each shard -------------------------------------------
    def read_receipt(self, shard_name: str) -> dict | None:
        """The receipt of a complete shard, or None when the shard must be (re)written: no receipt, or the
        file on disk is not the one the receipt describes (missing, or another size: truncated or replaced)."""
        path = self.receipt_path(shard_name)
        shard = self.shard_path(shard_name)
        if not shard.is_file() or not path.is_file():
            return None
        try:
            receipt = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None
        if not isinstance(receipt, dict) or receipt.get("num_bytes") != shard.stat().st_size:
            return None
        return receipt
