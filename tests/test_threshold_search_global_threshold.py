"""global_threshold: the one threshold for all labels is the brute-force best, for every objective, however
many levels the branch and bound needs."""

from __future__ import annotations

import numpy as np
import pytest
from threshold_search_cases import candidate_thresholds, random_case, sk_f1

from fashion_tf.threshold_search import best_thresholds, f1_scores
from fashion_tf.threshold_search import global_threshold
from fashion_tf.threshold_search.metrics import OBJECTIVES


@pytest.mark.parametrize("coarse_cuts", [global_threshold.COARSE_CUTS, 3])
@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("seed", range(3))
def test_global_threshold_equals_brute_force(objective, seed, coarse_cuts, monkeypatch):
    # 3 coarse cuts forces the branch-and-bound refinement through several levels
    monkeypatch.setattr(global_threshold, "COARSE_CUTS", coarse_cuts)
    monkeypatch.setattr(global_threshold, "REFINE_CUTS", min(coarse_cuts, global_threshold.REFINE_CUTS))
    scores, labels = random_case(100 + seed, n=30, c=4, levels=40)
    thresholds, info = best_thresholds(scores, labels, objective, "global", min_positives=1)
    assert np.all(thresholds == info["global_threshold"])
    brute = max(sk_f1(labels, scores >= t, objective) for t in candidate_thresholds(scores))
    ours = sk_f1(labels, scores >= info["global_threshold"], objective)
    assert ours == pytest.approx(brute, abs=1e-12)
    assert info["global_value"] == pytest.approx(brute, abs=1e-12)
    assert f1_scores(scores, labels, thresholds)[objective] == pytest.approx(brute, abs=1e-12)


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_no_positives_at_all_predicts_nothing(objective):
    scores = np.random.default_rng(0).random((20, 3)).astype(np.float32)
    thresholds, info = best_thresholds(scores, np.zeros((20, 3), np.uint8), objective, "global")
    assert info["global_value"] == 0.0
    assert not np.any(scores >= thresholds)
