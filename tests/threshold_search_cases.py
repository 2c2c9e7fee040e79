"""Shared inputs of the threshold_search tests: small score/label cases, brute-force references, run folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score

from fashion_tf.labels import LabelMap


def random_case(seed: int, n: int = 36, c: int = 5, levels: int = 12):
    """Scores on a coarse grid (many ties), labels correlated with scores, every label with >= 1 positive."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, c)) < rng.uniform(0.15, 0.5, c)).astype(np.uint8)
    labels[rng.integers(0, n, c), np.arange(c)] = 1
    raw = 0.35 * labels + 0.65 * rng.random((n, c))
    scores = (np.round(raw * levels) / levels).astype(np.float32)
    return scores, labels


def candidate_thresholds(values: np.ndarray) -> np.ndarray:
    """Every distinct `>=` partition of `values`: below all, between each adjacent pair, above all."""
    distinct = np.unique(values.astype(np.float64))
    return np.concatenate([[distinct[0] - 1], (distinct[1:] + distinct[:-1]) / 2, [distinct[-1] + 1]])


def sk_f1(labels, pred, average):
    return f1_score(labels, pred, average=average, zero_division=0)


def make_run(run_dir: Path, n=120, c=12, seed=0, with_label_map=True, **overrides) -> None:
    """A run folder as training leaves it: val_predictions.npz (sigmoid scores) and label_map.json (two groups).
    `overrides` replace or (with None) drop the npz arrays."""
    rng = np.random.default_rng(seed)
    freq = 0.5 / np.arange(1, c + 1)
    labels = (rng.random((n, c)) < freq).astype(np.uint8)
    scores = (1 / (1 + np.exp(-(2.5 * labels - 1.5 + rng.normal(0, 1, (n, c)))))).astype(np.float32)
    arrays = {"ids": np.array([f"img{i}" for i in range(n)]), "scores": scores, "labels": labels}
    arrays.update(overrides)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    run_dir.mkdir(parents=True, exist_ok=True)
    np.savez(run_dir / "val_predictions.npz", **arrays)
    if with_label_map:
        names = [f"name {i}" for i in range(c)]
        LabelMap.from_groups([("category", names[: c // 2]), ("attribute", names[c // 2:])]).to_json(
            run_dir / "label_map.json")
