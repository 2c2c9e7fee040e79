"""The label vocabulary: original label ids <-> 0-based indices, names and groups (tasks).

iMaterialist label ids are 1-based strings ("1".."228"); the model sees 0-based indices.
Every other stage goes through one LabelMap so the mapping is defined once.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from fashion_tf.errors import UserError
from fashion_tf.fileio import fields_of, read_json, write_json_atomic

LABEL_MAP_COLUMNS = ("labelId", "taskId", "labelName", "taskName")
DEFAULT_GROUP = "all"


def normalise_label_id(label_id: object) -> str:
    """Label ids compare as strings: 12, "12" and " 12 " are the same label."""
    if isinstance(label_id, bool) or label_id is None:
        raise UserError(f"label id {label_id!r} is not a label id")
    if isinstance(label_id, float) and label_id.is_integer():
        label_id = int(label_id)
    text = str(label_id).strip()
    if not text:
        raise UserError("empty label id")
    return text


def _id_sort_key(label_id: str) -> tuple:
    return (0, int(label_id), "") if label_id.isdigit() else (1, 0, label_id)


LABEL_MAP_FILE = "label_map.json"  # its name in a shard folder and in a run folder


def indexed_entries(entries: list, path: str | Path) -> list:
    """A file's entries sorted by their "index", which must run 0..n-1 without gaps (label maps, thresholds)."""
    entries = sorted(entries, key=lambda e: int(e["index"]))
    if [int(e["index"]) for e in entries] != list(range(len(entries))):
        raise UserError(f"{path}: label indices must be 0..{len(entries) - 1} without gaps")
    return entries


@dataclass(frozen=True)
class LabelMap:
    ids: tuple[str, ...]
    names: tuple[str, ...]
    groups: tuple[str, ...]

    def __post_init__(self) -> None:
        if not (len(self.ids) == len(self.names) == len(self.groups)):
            raise ValueError("ids, names and groups must have the same length")
        index = {}
        for position, label_id in enumerate(self.ids):
            if label_id in index:
                raise UserError(f"label id {label_id!r} appears twice in the label map")
            index[label_id] = position
        object.__setattr__(self, "_index", index)

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_csv(cls, path: str | Path) -> "LabelMap":
        """Read an iMaterialist label map CSV: labelId,taskId,labelName,taskName."""
        path = Path(path)
        try:
            with open(path, newline="", encoding="utf-8-sig") as handle:
                reader = csv.DictReader(handle)
                if reader.fieldnames is None:
                    raise UserError(f"{path}: label map is empty")
                missing = [c for c in ("labelId",) if c not in (reader.fieldnames or [])]
                if missing:
                    raise UserError(f"{path}: missing column {missing[0]!r} (expected {','.join(LABEL_MAP_COLUMNS)})")
                rows = list(reader)
        except FileNotFoundError:
            raise UserError(f"{path}: label map file not found") from None
        except (UnicodeDecodeError, csv.Error) as err:
            raise UserError(f"{path}: not a readable CSV ({err})") from None
        if not rows:
            raise UserError(f"{path}: label map is empty")
        ids, names, groups = [], [], []
        for line_no, row in enumerate(rows, start=2):
            try:
                label_id = normalise_label_id(row.get("labelId"))
            except UserError as err:
                raise UserError(f"{path}: line {line_no}: {err}") from None
            if label_id in ids:
                raise UserError(f"{path}: line {line_no}: label id {label_id!r} appears twice")
            ids.append(label_id)
            names.append((row.get("labelName") or label_id).strip())
            groups.append((row.get("taskName") or row.get("taskId") or DEFAULT_GROUP).strip())
        order = sorted(range(len(ids)), key=lambda i: _id_sort_key(ids[i]))
        return cls(tuple(ids[i] for i in order), tuple(names[i] for i in order), tuple(groups[i] for i in order))

    @classmethod
    def from_json(cls, path: str | Path) -> "LabelMap":
        """Read our label_map.json: {"labels": [{"index", "id", "name", "group"}, ...]}."""
        path = Path(path)
        data = read_json(path, "label map file")
        with fields_of(path, LABEL_MAP_FILE):
            entries = indexed_entries(data["labels"], path)
            return cls(
                tuple(normalise_label_id(e["id"]) for e in entries),
                tuple(str(e.get("name", e["id"])) for e in entries),
                tuple(str(e.get("group", DEFAULT_GROUP)) for e in entries),
            )

    @classmethod
    def from_ids(cls, label_ids: Iterable[object], group: str = DEFAULT_GROUP) -> "LabelMap":
        """Derive the vocabulary from the label ids seen in the data (sorted numerically when numeric)."""
        unique = sorted({normalise_label_id(x) for x in label_ids}, key=_id_sort_key)
        if not unique:
            raise UserError("no labels found in the data: cannot derive a label vocabulary")
        return cls(tuple(unique), tuple(unique), tuple(group for _ in unique))

    @classmethod
    def from_groups(cls, group_values: Sequence[tuple[str, Sequence[str]]]) -> "LabelMap":
        """Build a map from (group, [label names]) pairs; ids are 1-based in that order."""
        ids, names, groups = [], [], []
        for group, values in group_values:
            for value in values:
                ids.append(str(len(ids) + 1))
                names.append(str(value))
                groups.append(str(group))
        return cls(tuple(ids), tuple(names), tuple(groups))

    def to_json(self, path: str | Path) -> None:
        write_json_atomic(path, self.to_dict())

    def to_dict(self) -> dict:
        return {
            "num_labels": len(self),
            "labels": [
                {"index": i, "id": label_id, "name": name, "group": group}
                for i, (label_id, name, group) in enumerate(zip(self.ids, self.names, self.groups))
            ],
        }

    # ---- mapping ------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.ids)

    def index_of(self, label_id: object) -> int:
        key = normalise_label_id(label_id)
        try:
            return self._index[key]  # type: ignore[attr-defined]
        except KeyError:
            raise UserError(f"unknown label id {key!r} (not in the label map of {len(self)} labels)") from None

    def indices(self, label_ids: Iterable[object]) -> np.ndarray:
        """0-based indices of the given label ids, deduplicated and sorted."""
        return np.array(sorted({self.index_of(x) for x in label_ids}), dtype=np.int64)

    def encode(self, label_ids: Iterable[object]) -> np.ndarray:
        """Multi-hot float32 vector of length C."""
        row = np.zeros(len(self), dtype=np.float32)
        row[self.indices(label_ids)] = 1.0
        return row

    def encode_many(self, index_lists: Sequence[Sequence[int]]) -> np.ndarray:
        """[N, C] uint8 multi-hot matrix from per-row lists of 0-based indices (vectorised)."""
        lengths = np.fromiter((len(x) for x in index_lists), dtype=np.int64, count=len(index_lists))
        matrix = np.zeros((len(index_lists), len(self)), dtype=np.uint8)
        if lengths.sum():
            rows = np.repeat(np.arange(len(index_lists)), lengths)
            cols = np.concatenate([np.asarray(x, dtype=np.int64) for x in index_lists if len(x)])
            matrix[rows, cols] = 1
        return matrix

    def decode(self, row: Sequence[float] | np.ndarray) -> list[str]:
        """Label ids of the positive entries of a multi-hot (or boolean) row."""
        return [self.ids[i] for i in np.flatnonzero(np.asarray(row) > 0)]

    # ---- groups -------------------------------------------------------------------------
    def group_names(self) -> list[str]:
        return list(dict.fromkeys(self.groups))

    def group_members(self, group: str) -> np.ndarray:
        members = np.array([i for i, g in enumerate(self.groups) if g == group], dtype=np.int64)
        if members.size == 0:
            raise UserError(f"unknown label group {group!r} (groups: {', '.join(self.group_names())})")
        return members

    def exclusive_groups(self, label_matrix: np.ndarray) -> list[str]:
        """Groups in which no image has more than one label (e.g. articleType): single-choice tasks."""
        exclusive = []
        for group in self.group_names():
            members = self.group_members(group)
            if len(members) > 1 and int(np.asarray(label_matrix)[:, members].sum(axis=1).max(initial=0)) <= 1:
                exclusive.append(group)
        return exclusive


def labels_outside_groups(groups: Sequence[Sequence[int]], num_labels: int) -> list[int]:
    """Label indices below num_labels that no group lists (the group_softmax head's independent sigmoids)."""
    grouped = {int(i) for group in groups for i in group}
    return [i for i in range(num_labels) if i not in grouped]
