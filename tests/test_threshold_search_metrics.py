"""metrics: F1 at given thresholds, checked against sklearn (zero_division=0), and the `>=` decision."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score
from threshold_search_cases import random_case, sk_f1

from fashion_tf.errors import UserError
from fashion_tf.threshold_search import apply_thresholds, f1_scores
from fashion_tf.threshold_search.metrics import OBJECTIVES, metrics_from_counts


def test_f1_scores_agree_with_sklearn():
    scores, labels = random_case(31, n=50, c=6)
    labels[:, 4] = 0  # a label without positives: F1 0 by convention, still in the macro mean
    thresholds = np.random.default_rng(1).random(6)
    ours = f1_scores(scores, labels, thresholds)
    pred = scores >= thresholds
    for average in OBJECTIVES:
        assert ours[average] == pytest.approx(sk_f1(labels, pred, average), abs=1e-12)
    assert np.allclose(ours["f1"], f1_score(labels, pred, average=None, zero_division=0))
    assert ours["tp"].tolist() == np.count_nonzero(pred & (labels == 1), axis=0).tolist()
    assert ours["fn"].tolist() == np.count_nonzero(~pred & (labels == 1), axis=0).tolist()


def test_apply_thresholds_uses_geq_per_label_and_scalar():
    scores = np.array([[0.5, 0.25], [0.4375, 0.75]], np.float32)  # exact in float32 and float64
    assert apply_thresholds(scores, [0.5, 0.75]).tolist() == [[True, False], [False, True]]
    assert apply_thresholds(scores, 0.5).tolist() == [[True, False], [False, True]]


@pytest.mark.parametrize("scores,labels,thresholds,message", [
    (np.zeros(3, np.float32), np.zeros(3), 0.5, "2-D"),
    (np.zeros((3, 2), np.float32), np.zeros((3, 3)), 0.5, "does not match"),
    (np.zeros((3, 2), np.int64), np.zeros((3, 2)), 0.5, "floating point"),
    (np.zeros((3, 2), np.float32), np.zeros((3, 2)), [0.5, 0.5, 0.5], "thresholds have shape"),
])
def test_f1_scores_refuse_arrays_they_cannot_score(scores, labels, thresholds, message):
    with pytest.raises(UserError, match=message):
        f1_scores(scores, labels, thresholds)


def test_metrics_from_pooled_counts_equal_metrics_of_the_pooled_rows():
    scores, labels = random_case(5, n=60, c=4)
    thresholds = np.full(4, 0.5)
    first, second = f1_scores(scores[:25], labels[:25], thresholds), f1_scores(scores[25:], labels[25:], thresholds)
    pooled = metrics_from_counts(first["tp"] + second["tp"], first["predicted"] + second["predicted"],
                                 first["support"] + second["support"],
                                 first["samples"] * 25 + second["samples"] * 35, 60)
    whole = f1_scores(scores, labels, thresholds)
    for key in OBJECTIVES:
        assert pooled[key] == pytest.approx(whole[key], abs=1e-12)
    assert np.array_equal(pooled["f1"], whole["f1"])
