"""cross_validation: folds partition the rows, each fold's thresholds never see its test rows, and auto keeps
the best held-out setting (the simpler one on a tie)."""

from __future__ import annotations

import numpy as np
import pytest
from threshold_search_cases import random_case

from fashion_tf.errors import UserError
from fashion_tf.threshold_search import best_thresholds, cross_validate, f1_scores
from fashion_tf.threshold_search.cross_validation import auto_choice, cv_folds


def test_cv_test_rows_partition_and_are_never_seen_by_their_fold():
    folds = cv_folds(103, 4, seed=3)
    tests = [test for _, test in folds]
    assert sorted(np.concatenate(tests).tolist()) == list(range(103))
    for train, test in folds:
        assert np.intersect1d(train, test).size == 0
        assert train.size + test.size == 103

    scores, labels = random_case(11, n=80, c=4)
    cv = cross_validate(scores, labels, k=4, objective="macro", mode="per_label", min_positives=1, seed=3)
    train0, test0 = cv["folds"][0]
    expected, _ = best_thresholds(scores[train0], labels[train0], "macro", "per_label", min_positives=1)
    assert np.array_equal(cv["fold_thresholds"][0], expected)
    # scrambling fold 0's test rows must not move fold 0's thresholds
    scrambled = scores.copy()
    scrambled[test0] = np.random.default_rng(0).random((test0.size, 4)).astype(np.float32)
    cv2 = cross_validate(scrambled, labels, k=4, objective="macro", mode="per_label", min_positives=1, seed=3)
    assert np.array_equal(cv2["fold_thresholds"][0], cv["fold_thresholds"][0])
    assert np.allclose(cv["thresholds"], cv["fold_thresholds"].mean(axis=0))
    # each fold's held-out F1 is measured on its test rows only
    fold_f1 = f1_scores(scores[test0], labels[test0], cv["fold_thresholds"][0])["macro"]
    assert cv["fold_metrics"][0]["per_label"]["macro"] == pytest.approx(fold_f1)


def test_pooled_metrics_count_every_row_once():
    scores, labels = random_case(12, n=60, c=3)
    cv = cross_validate(scores, labels, k=3, objective="micro", mode="global", min_positives=1)
    pooled = cv["pooled_metrics"]["at_0.5"]
    assert pooled["num_images"] == 60
    assert np.array_equal(pooled["support"], np.count_nonzero(labels, axis=0))
    assert pooled["micro"] == pytest.approx(f1_scores(scores, labels, 0.5)["micro"], abs=1e-12)


@pytest.mark.parametrize("k,rows,message", [(1, 10, "at least 2"), (5, 4, "needs at least 5 images")])
def test_impossible_fold_counts_are_refused(k, rows, message):
    with pytest.raises(UserError, match=message):
        cv_folds(rows, k)


def _held_out(at_half: float, best_global: float, per_label: float) -> dict:
    return {setting: {"micro": {"mean": value}}
            for setting, value in (("at_0.5", at_half), ("best_global", best_global), ("per_label", per_label))}


@pytest.mark.parametrize("figures,choice,written", [
    ((0.80, 0.82, 0.85), "per_label", [0.3, 0.7]),
    ((0.80, 0.84, 0.83), "global", [0.4, 0.4]),
    ((0.84, 0.84, 0.84), "0.5", [0.5, 0.5]),  # a tie keeps the simplest
])
def test_auto_choice_keeps_the_best_held_out_setting(figures, choice, written):
    chosen, mode, thresholds = auto_choice(_held_out(*figures), "micro", np.array([0.3, 0.7]), 0.4)
    assert chosen == choice and mode == ("per_label" if choice == "per_label" else "global")
    assert thresholds.tolist() == written
