"""sweep: every cut of one label, counted exactly; thresholds placed so `>=` keeps ties and float32 agrees."""

from __future__ import annotations

import numpy as np
import pytest
from threshold_search_cases import candidate_thresholds, random_case, sk_f1

from fashion_tf.threshold_search.sweep import label_columns, sweep_label


@pytest.mark.parametrize("seed", range(4))
def test_each_cut_counts_what_its_threshold_predicts_and_the_best_cut_is_the_brute_force_best(seed):
    scores, labels = random_case(seed)
    for c in range(scores.shape[1]):
        positive = labels[:, c] == 1
        sweep = sweep_label(scores[:, c], positive)
        for threshold, tp, fp in zip(sweep.thresholds, sweep.tp, sweep.fp):
            predicted = scores[:, c] >= threshold
            assert (tp, fp) == (np.count_nonzero(predicted & positive), np.count_nonzero(predicted & ~positive))
        assert np.all(np.diff(sweep.thresholds) < 0)
        brute = max(sk_f1(positive, scores[:, c] >= t, "binary") for t in candidate_thresholds(scores[:, c]))
        assert sweep.f1().max() == pytest.approx(brute, abs=1e-12)


def test_ties_are_decided_with_the_same_geq_rule_as_prediction():
    scores = np.array([0.8, 0.6, 0.6, 0.2], np.float32)
    positive = np.array([True, True, False, False])
    # cut at 0.8: F1 2/3; cut at the tied 0.6 pair (one positive, one negative): F1 0.8 -> both must be included
    sweep = sweep_label(scores, positive)
    best = int(np.argmax(sweep.f1()))
    assert sweep.f1()[best] == pytest.approx(0.8)
    assert sweep.thresholds[best] == pytest.approx(0.4, abs=1e-7)
    assert (scores >= sweep.thresholds[best]).tolist() == [True, True, True, False]


def test_threshold_between_adjacent_float32_scores_separates_them_in_float32_and_float64():
    low = np.float32(0.3)
    high = np.nextafter(low, np.float32(1))
    scores = np.array([high, low, low], np.float32)
    sweep = sweep_label(scores, np.array([True, False, False]))
    threshold = sweep.thresholds[int(np.argmax(sweep.f1()))]
    assert (scores >= threshold).tolist() == [True, False, False]
    assert (scores >= np.float32(threshold)).tolist() == [True, False, False]


def test_outer_cuts_lie_inside_zero_and_one_for_probabilities():
    scores = np.array([0.9, 0.4, 0.1], np.float32)
    sweep = sweep_label(scores, np.array([True, False, True]))
    assert 0.9 < sweep.thresholds[0] <= 1  # predict none
    assert 0 < sweep.thresholds[-1] <= 0.1  # predict all
    assert (sweep.tp[0], sweep.fp[0]) == (0, 0) and (sweep.tp[-1], sweep.fp[-1]) == (2, 1)


def test_label_columns_yield_each_label_sorted_with_its_positive_scores():
    scores, labels = random_case(3, n=20, c=70)  # more labels than one block of columns
    seen = []
    for label, sorted_col, sorted_pos in label_columns(scores, labels == 1, block=32):
        seen.append(label)
        assert np.array_equal(sorted_col, np.sort(scores[:, label]))
        assert np.array_equal(sorted_pos, np.sort(scores[labels[:, label] == 1, label]))
    assert seen == list(range(70))
