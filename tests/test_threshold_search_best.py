"""best: per-label optimality (macro exact, micro a local optimum), fallbacks for rare labels and the samples
objective, warnings, and the probability check on the scores."""

from __future__ import annotations

import numpy as np
import pytest
from threshold_search_cases import candidate_thresholds, random_case, sk_f1

from fashion_tf.errors import UserError
from fashion_tf.threshold_search import apply_thresholds, best_thresholds, f1_scores


def plain_micro_f1(labels, pred):
    """Pooled F1 straight from its definition (faster than sklearn inside brute-force loops)."""
    tp = np.count_nonzero(pred & (labels != 0))
    return 2 * tp / (np.count_nonzero(pred) + np.count_nonzero(labels))


@pytest.mark.parametrize("seed", range(6))
def test_macro_per_label_equals_brute_force_per_label(seed):
    scores, labels = random_case(seed)
    thresholds, _ = best_thresholds(scores, labels, "macro", "per_label", min_positives=1)
    ours = f1_scores(scores, labels, thresholds)["f1"]
    for c in range(scores.shape[1]):
        brute = max(sk_f1(labels[:, c], scores[:, c] >= t, "binary") for t in candidate_thresholds(scores[:, c]))
        assert ours[c] == pytest.approx(brute, abs=1e-12)
        assert ours[c] == pytest.approx(sk_f1(labels[:, c], scores[:, c] >= thresholds[c], "binary"), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_micro_per_label_beats_global_and_is_a_local_optimum(seed):
    scores, labels = random_case(200 + seed, n=40, c=6)
    thresholds, info = best_thresholds(scores, labels, "micro", "per_label", min_positives=1)
    ours = sk_f1(labels, predicted := apply_thresholds(scores, thresholds), "micro")
    assert ours == pytest.approx(info["value"], abs=1e-12)
    assert ours >= sk_f1(labels, scores >= info["global_threshold"], "micro") - 1e-12
    for c in range(scores.shape[1]):
        for t in candidate_thresholds(scores[:, c]):
            changed = predicted.copy()
            changed[:, c] = scores[:, c] >= t
            assert plain_micro_f1(labels, changed) <= ours + 1e-12, (c, t)


def test_samples_per_label_falls_back_to_global_and_says_so():
    scores, labels = random_case(7)
    thresholds, info = best_thresholds(scores, labels, "samples", "per_label", min_positives=1)
    assert np.all(thresholds == info["global_threshold"])
    assert info["notes"] and "global" in info["notes"][0]


def test_rare_labels_use_the_global_threshold_and_no_positive_labels_are_listed():
    scores, labels = random_case(21, n=60, c=5)
    labels[:, 1] = 0
    labels[:2, 1] = 1  # 2 positives
    labels[:, 3] = 0  # none
    thresholds, info = best_thresholds(scores, labels, "macro", "per_label", min_positives=3)
    assert thresholds[1] == info["global_threshold"] and thresholds[3] == info["global_threshold"]
    assert info["rare_labels"] == [1, 3]
    assert info["no_positive_labels"] == [3]
    frequent, _ = best_thresholds(scores, labels, "macro", "per_label", min_positives=1)
    assert frequent[1] != info["global_threshold"]


def test_labels_predicted_on_almost_every_image_are_flagged():
    rng = np.random.default_rng(5)
    scores = rng.random((50, 2)).astype(np.float32)
    labels = np.zeros((50, 2), np.uint8)
    labels[:49, 0] = 1  # nearly always positive: the best cut predicts it everywhere
    labels[:10, 1] = 1
    scores[:, 1] = 0.5 * labels[:, 1] + 0.4 * scores[:, 1]  # separable: best cut predicts only its 10 positives
    _, info = best_thresholds(scores, labels, "macro", "per_label", min_positives=1)
    assert 0 in info["high_positive_rate_labels"]
    assert 1 not in info["high_positive_rate_labels"]


@pytest.mark.parametrize("bad,shown", [(1.7, "1.7, outside [0, 1]"), (-0.2, "-0.2, outside [0, 1]"),
                                       (np.nan, "NaN"), (np.inf, "infinite")])
def test_scores_that_are_not_probabilities_are_refused_naming_row_and_label(bad, shown):
    scores, labels = random_case(9)
    scores[4, 2] = bad
    with pytest.raises(UserError) as caught:
        best_thresholds(scores, labels, "micro", "per_label")
    assert shown in str(caught.value) and "row 4, label 2" in str(caught.value)


@pytest.mark.parametrize("objective,mode,message", [("f2", "per_label", "unknown objective"),
                                                    ("micro", "auto", "unknown mode")])
def test_unknown_objective_or_mode_is_refused(objective, mode, message):
    scores, labels = random_case(1)
    with pytest.raises(UserError, match=message):
        best_thresholds(scores, labels, objective, mode)
