"""Which split each image goes to: multi-label iterative stratification, or the ids of --split-from; and how
evenly each label ended up spread over the splits."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import numpy as np

from fashion_tf.errors import UserError
from fashion_tf.labels import LabelMap
from fashion_tf.stratification import iterative_stratification
from fashion_tf.make_tfrecords.catalog import Catalog

Split = tuple[np.ndarray, dict]  # fold per catalog row (an index into shard_folder.SPLITS), how it was made


def read_split_ids(path: Path) -> set[str]:
    """Validation ids from a challenge JSON (either shape) or a text file of ids, one per line."""
    if not path.is_file():
        raise UserError(f"{path}: --split-from file not found")
    with open(path, "rb") as handle:
        head = handle.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"{"):
        from fashion_tf.sources import iter_source_records

        ids = {record.image_id for record in iter_source_records(path)}
    else:
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as err:
            raise UserError(f"{path}: --split-from is not a text file of ids ({err.reason})") from None
        ids = {line.strip().split(",")[0].strip() for line in text.splitlines() if line.strip()}
        ids.discard("id")
        ids.discard("image_id")
    if not ids:
        raise UserError(f"{path}: --split-from lists no image ids")
    return ids


def split_from_ids(catalog: Catalog, split_ids: set[str], path: Path) -> Split:
    """Validation = the listed ids; UserError when none of them is among the images."""
    folds = np.fromiter((1 if i in split_ids else 0 for i in catalog.ids), dtype=np.int8, count=len(catalog))
    matched = int(folds.sum())
    if matched == 0:
        raise UserError(f"{path}: --split-from: none of its {len(split_ids):,} ids is among the input images")
    return folds, {"method": "split_from", "listed": len(split_ids), "matched": matched}


def stratified_assignment(label_matrix: np.ndarray, fractions: Sequence[float], seed: int) -> np.ndarray:
    """Fold per row (0 = train, 1 = validation, 2 = test) by iterative stratification (Sechidis et al.).

    Runs iterative stratification (fashion_tf.stratification: iterstrat's IterativeStratification, exactly, and
    ~10x faster) on a bool matrix (1 byte per cell, 228 MB at 1M x 228) after a seeded shuffle, as
    MultilabelStratifiedShuffleSplit does, then moves single examples so that every label with at least one
    example per fold appears in every fold.
    """
    n = label_matrix.shape[0]
    rng = np.random.RandomState(seed)
    order = rng.permutation(n)
    used = np.flatnonzero(label_matrix.any(axis=0))
    shuffled = label_matrix[np.ix_(order, used)]  # one copy; a 0/1 uint8 matrix views as bool for free
    shuffled = shuffled.view(bool) if shuffled.dtype == np.uint8 and shuffled.max(initial=0) <= 1 else shuffled != 0
    r = np.asarray(fractions, dtype=np.float64)
    folds_shuffled = iterative_stratification(shuffled, r, rng)
    del shuffled
    folds = np.empty(n, dtype=np.int8)
    folds[order] = folds_shuffled
    _ensure_labels_in_every_fold(label_matrix, folds, len(fractions), rng)
    return folds


def _ensure_labels_in_every_fold(label_matrix: np.ndarray, folds: np.ndarray, n_folds: int, rng) -> None:
    """A label with >= n_folds examples but none in some fold takes one example from the fold richest in it.

    The example moved is one whose every label keeps at least one example in the fold it leaves.
    """
    counts = np.stack([label_matrix[folds == f].sum(axis=0, dtype=np.int64) for f in range(n_folds)])
    totals = counts.sum(axis=0)
    for label in np.argsort(totals, kind="stable"):
        if totals[label] < n_folds:
            continue
        for target in range(n_folds):
            if counts[target, label]:
                continue
            source = int(np.argmax(counts[:, label]))
            candidates = np.flatnonzero((folds == source) & (label_matrix[:, label] > 0))
            for row in rng.permutation(candidates):
                row_labels = np.flatnonzero(label_matrix[row])
                if np.all(counts[source, row_labels] >= 2):
                    folds[row] = target
                    counts[source, row_labels] -= 1
                    counts[target, row_labels] += 1
                    break


def assign_splits(
    catalog: Catalog, label_map: LabelMap, val_fraction: float, test_fraction: float, seed: int,
    listed: Split | None = None,
) -> Split:
    """Split index per image (into SPLITS) and a description of how it was made; `listed`: the split of
    --split-from (split_from_ids), used as it is."""
    if listed is not None:
        return listed
    n = len(catalog)
    if val_fraction <= 0 and test_fraction <= 0:
        return np.zeros(n, dtype=np.int8), {"method": "none"}
    fractions = [1.0 - val_fraction - test_fraction, val_fraction] + ([test_fraction] if test_fraction > 0 else [])
    label_matrix = label_map.encode_many(catalog.labels)
    started = time.perf_counter()
    folds = stratified_assignment(label_matrix, fractions, seed)
    return folds, {
        "method": "iterative_stratification",
        "library": "fashion_tf.stratification (the folds of iterstrat's IterativeStratification)",
        "seed": seed,
        "seconds": round(time.perf_counter() - started, 2),
    }


def stratification_summary(split_counts: dict[str, np.ndarray], label_map: LabelMap, method: dict) -> dict:
    """Per-label share of each non-train split, plus its spread; labels with >= 2 examples missing a split."""
    totals = sum(split_counts.values())
    n_total = sum(int(c.sum()) for c in split_counts.values()) or 1
    summary = dict(method)
    summary["label_fraction"] = {}
    summary["labels_missing"] = {}
    for split, counts in split_counts.items():
        has = totals > 0
        fraction = np.where(has, counts / np.maximum(totals, 1), np.nan)
        if split != "train":
            values = fraction[totals >= len(split_counts)]  # labels with enough images to be in every split
            summary["label_fraction"][split] = {
                "overall": round(float(counts.sum() / n_total), 4),
                "min": round(float(values.min()), 4) if values.size else None,
                "median": round(float(np.median(values)), 4) if values.size else None,
                "max": round(float(values.max()), 4) if values.size else None,
                "per_label": [None if np.isnan(v) else round(float(v), 4) for v in fraction],
            }
        missing = [label_map.ids[i] for i in np.flatnonzero((totals >= 2) & (counts == 0))]
        if missing:
            summary["labels_missing"][split] = missing
    return summary
