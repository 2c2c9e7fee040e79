"""fashion_tf.stratification: the same folds as iterstrat's IterativeStratification, draw for draw."""

from __future__ import annotations

import numpy as np
import pytest
from iterstrat.ml_stratifiers import IterativeStratification

from fashion_tf.stratification import iterative_stratification


def skewed_labels(rows: int, labels: int, seed: int, empty_rows: float = 0.05) -> np.ndarray:
    """Many labels per row, a few common and a long tail of rare ones (ties everywhere), some rows unlabelled."""
    rng = np.random.default_rng(seed)
    frequency = 0.5 / (1 + np.arange(labels)) ** 1.2
    matrix = rng.random((rows, labels)) < frequency
    matrix[rng.random(rows) < empty_rows] = False
    return matrix


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("fractions", [(0.8, 0.2), (0.7, 0.2, 0.1), (0.5, 0.5)])
def test_same_folds_and_random_draws_as_iterstrat(seed, fractions):
    labels = skewed_labels(1500, 40, seed)
    r = np.asarray(fractions)
    expected = IterativeStratification(labels=labels, r=r, random_state=np.random.RandomState(seed))
    ours_state = np.random.RandomState(seed)
    ours = iterative_stratification(labels, r, ours_state)
    np.testing.assert_array_equal(ours, expected)
    reference_state = np.random.RandomState(seed)
    IterativeStratification(labels=labels, r=r, random_state=reference_state)
    assert ours_state.randint(1 << 30) == reference_state.randint(1 << 30)  # the same number of draws


def test_rows_without_labels_and_a_single_label_column():
    labels = np.zeros((50, 3), dtype=bool)
    labels[:7, 1] = True
    expected = IterativeStratification(labels=labels, r=np.array([0.6, 0.4]), random_state=np.random.RandomState(1))
    ours = iterative_stratification(labels, np.array([0.6, 0.4]), np.random.RandomState(1))
    np.testing.assert_array_equal(ours, expected)
    assert np.bincount(ours, minlength=2).tolist() == [30, 20]
