"""Exact threshold search: brute-force optimality, ties, CV isolation, fallbacks, files and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import f1_score

from fashion_tf import threshold_search as ts
from fashion_tf.errors import UserError
from fashion_tf.labels import LabelMap

REPO = Path(__file__).resolve().parents[1]


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


def plain_micro_f1(labels, pred):
    """Pooled F1 straight from its definition (faster than sklearn inside brute-force loops)."""
    tp = np.count_nonzero(pred & (labels != 0))
    return 2 * tp / (np.count_nonzero(pred) + np.count_nonzero(labels))


@pytest.mark.parametrize("seed", range(6))
def test_macro_per_label_equals_brute_force_per_label(seed):
    scores, labels = random_case(seed)
    thresholds, _ = ts.best_thresholds(scores, labels, "macro", "per_label", min_positives=1)
    ours = ts.f1_scores(scores, labels, thresholds)["f1"]
    for c in range(scores.shape[1]):
        brute = max(sk_f1(labels[:, c], scores[:, c] >= t, "binary") for t in candidate_thresholds(scores[:, c]))
        assert ours[c] == pytest.approx(brute, abs=1e-12)
        assert ours[c] == pytest.approx(sk_f1(labels[:, c], scores[:, c] >= thresholds[c], "binary"), abs=1e-12)


@pytest.mark.parametrize("coarse_cuts", [ts.COARSE_CUTS, 3])
@pytest.mark.parametrize("objective", ts.OBJECTIVES)
@pytest.mark.parametrize("seed", range(3))
def test_global_threshold_equals_brute_force(objective, seed, coarse_cuts, monkeypatch):
    # 3 coarse cuts forces the branch-and-bound refinement through several levels
    monkeypatch.setattr(ts, "COARSE_CUTS", coarse_cuts)
    monkeypatch.setattr(ts, "REFINE_CUTS", min(coarse_cuts, ts.REFINE_CUTS))
    scores, labels = random_case(100 + seed, n=30, c=4, levels=40)
    thresholds, info = ts.best_thresholds(scores, labels, objective, "global", min_positives=1)
    assert np.all(thresholds == info["global_threshold"])
    brute = max(sk_f1(labels, scores >= t, objective) for t in candidate_thresholds(scores))
    ours = sk_f1(labels, scores >= info["global_threshold"], objective)
    assert ours == pytest.approx(brute, abs=1e-12)
    assert info["global_value"] == pytest.approx(brute, abs=1e-12)
    assert ts.f1_scores(scores, labels, thresholds)[objective] == pytest.approx(brute, abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_micro_per_label_beats_global_and_is_a_local_optimum(seed):
    scores, labels = random_case(200 + seed, n=40, c=6)
    thresholds, info = ts.best_thresholds(scores, labels, "micro", "per_label", min_positives=1)
    ours = sk_f1(labels, apply := ts.apply_thresholds(scores, thresholds), "micro")
    assert ours == pytest.approx(info["value"], abs=1e-12)
    assert ours >= sk_f1(labels, scores >= info["global_threshold"], "micro") - 1e-12
    for c in range(scores.shape[1]):
        for t in candidate_thresholds(scores[:, c]):
            pred = apply.copy()
            pred[:, c] = scores[:, c] >= t
            assert plain_micro_f1(labels, pred) <= ours + 1e-12, (c, t)


def test_samples_per_label_falls_back_to_global_and_says_so():
    scores, labels = random_case(7)
    thresholds, info = ts.best_thresholds(scores, labels, "samples", "per_label", min_positives=1)
    assert np.all(thresholds == info["global_threshold"])
    assert info["notes"] and "global" in info["notes"][0]


def test_ties_are_decided_with_the_same_geq_rule_as_prediction():
    scores = np.array([[0.8], [0.6], [0.6], [0.2]], np.float32)
    labels = np.array([[1], [1], [0], [0]], np.uint8)
    # cut at 0.8: F1 2/3; cut at the tied 0.6 pair (one positive, one negative): F1 0.8 -> both must be included
    thresholds, _ = ts.best_thresholds(scores, labels, "macro", "per_label", min_positives=1)
    assert thresholds[0] == pytest.approx(0.4, abs=1e-7)
    assert ts.apply_thresholds(scores, thresholds)[:, 0].tolist() == [True, True, True, False]
    assert ts.f1_scores(scores, labels, thresholds)["f1"][0] == pytest.approx(0.8)


def test_threshold_between_adjacent_float32_scores_separates_them_in_float32_and_float64():
    low = np.float32(0.3)
    high = np.nextafter(low, np.float32(1))
    scores = np.array([[high], [low], [low]], np.float32)
    labels = np.array([[1], [0], [0]], np.uint8)
    thresholds, _ = ts.best_thresholds(scores, labels, "macro", "per_label", min_positives=1)
    assert (scores[:, 0] >= thresholds[0]).tolist() == [True, False, False]
    assert (scores[:, 0] >= np.float32(thresholds[0])).tolist() == [True, False, False]


def test_cv_test_rows_partition_and_are_never_seen_by_their_fold():
    folds = ts.cv_folds(103, 4, seed=3)
    tests = [test for _, test in folds]
    assert sorted(np.concatenate(tests).tolist()) == list(range(103))
    for train, test in folds:
        assert np.intersect1d(train, test).size == 0
        assert train.size + test.size == 103

    scores, labels = random_case(11, n=80, c=4)
    cv = ts.cross_validate(scores, labels, k=4, objective="macro", mode="per_label", min_positives=1, seed=3)
    train0, test0 = cv["folds"][0]
    expected, _ = ts.best_thresholds(scores[train0], labels[train0], "macro", "per_label", min_positives=1)
    assert np.array_equal(cv["fold_thresholds"][0], expected)
    # scrambling fold 0's test rows must not move fold 0's thresholds
    scrambled = scores.copy()
    scrambled[test0] = np.random.default_rng(0).random((test0.size, 4)).astype(np.float32)
    cv2 = ts.cross_validate(scrambled, labels, k=4, objective="macro", mode="per_label", min_positives=1, seed=3)
    assert np.array_equal(cv2["fold_thresholds"][0], cv["fold_thresholds"][0])
    assert np.allclose(cv["thresholds"], cv["fold_thresholds"].mean(axis=0))
    # each fold's held-out F1 is measured on its test rows only
    fold_f1 = ts.f1_scores(scores[test0], labels[test0], cv["fold_thresholds"][0])["macro"]
    assert cv["fold_metrics"][0]["per_label"]["macro"] == pytest.approx(fold_f1)


def test_rare_labels_use_the_global_threshold_and_no_positive_labels_are_listed():
    scores, labels = random_case(21, n=60, c=5)
    labels[:, 1] = 0
    labels[:2, 1] = 1  # 2 positives
    labels[:, 3] = 0  # none
    thresholds, info = ts.best_thresholds(scores, labels, "macro", "per_label", min_positives=3)
    assert thresholds[1] == info["global_threshold"] and thresholds[3] == info["global_threshold"]
    assert info["rare_labels"] == [1, 3]
    assert info["no_positive_labels"] == [3]
    frequent, _ = ts.best_thresholds(scores, labels, "macro", "per_label", min_positives=1)
    assert frequent[1] != info["global_threshold"]


def test_labels_predicted_on_almost_every_image_are_flagged():
    rng = np.random.default_rng(5)
    scores = rng.random((50, 2)).astype(np.float32)
    labels = np.zeros((50, 2), np.uint8)
    labels[:49, 0] = 1  # nearly always positive: the best cut predicts it everywhere
    labels[:10, 1] = 1
    scores[:, 1] = 0.5 * labels[:, 1] + 0.4 * scores[:, 1]  # separable: best cut predicts only its 10 positives
    _, info = ts.best_thresholds(scores, labels, "macro", "per_label", min_positives=1)
    assert 0 in info["high_positive_rate_labels"]
    assert 1 not in info["high_positive_rate_labels"]


def test_f1_scores_agree_with_sklearn_and_curves_agree_with_f1_scores():
    scores, labels = random_case(31, n=50, c=6)
    thresholds = np.random.default_rng(1).random(6)
    ours = ts.f1_scores(scores, labels, thresholds)
    pred = scores >= thresholds
    for average in ts.OBJECTIVES:
        assert ours[average] == pytest.approx(sk_f1(labels, pred, average), abs=1e-12)
    assert np.allclose(ours["f1"], f1_score(labels, pred, average=None, zero_division=0))
    grid = np.linspace(0, 1, 11)
    curves = ts.global_f1_curves(scores, labels.astype(bool), grid)
    for k, t in enumerate(grid):
        at_t = ts.f1_scores(scores, labels, t)
        for average in ts.OBJECTIVES:
            assert curves[average][k] == pytest.approx(at_t[average], abs=1e-12)


def test_thresholds_json_round_trip(tmp_path):
    scores, labels = random_case(41)
    thresholds, info = ts.best_thresholds(scores, labels, "micro", "per_label", min_positives=1)
    label_map = LabelMap.from_groups([("colour", ["red", "blue"]), ("type", ["shirt", "dress", "skirt"])])
    info_labels = ts.LabelInfo(list(label_map.ids), list(label_map.names), list(label_map.groups))
    doc = ts.thresholds_document(thresholds, info_labels, "micro", "per_label", info["global_threshold"])
    ts.write_json_atomic(tmp_path / "thresholds.json", doc)
    assert np.array_equal(ts.load_thresholds(tmp_path / "thresholds.json"), thresholds)
    (tmp_path / "bad.json").write_text('{"labels": [{"index": 1, "threshold": 0.5}]}')
    with pytest.raises(UserError, match="bad.json"):
        ts.load_thresholds(tmp_path / "bad.json")
    with pytest.raises(UserError, match="not found"):
        ts.load_thresholds(tmp_path / "missing.json")


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------
def make_run(run_dir: Path, n=120, c=12, seed=0, with_label_map=True, **overrides) -> None:
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


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "fashion_tf.threshold_search", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()


def test_cli_end_to_end_with_cv_on_newest_run(tmp_path):
    make_run(tmp_path / "runs" / "old", seed=1)
    make_run(tmp_path / "runs" / "new", seed=2)
    os.utime(tmp_path / "runs" / "old", (1_000_000, 1_000_000))
    result = run_cli("--cv", "3", "--min-positives", "3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    run = tmp_path / "runs" / "new"
    assert "3-fold CV" in result.stdout and "runs/new" in result.stdout
    doc = json.loads((run / "thresholds.json").read_text())
    assert doc["objective"] == "micro" and doc["mode"] == "per_label" and doc["cv_folds"] == 3
    assert [e["name"] for e in doc["labels"]][:2] == ["name 0", "name 1"]
    assert {e["group"] for e in doc["labels"]} == {"category", "attribute"}
    assert ts.load_thresholds(run / "thresholds.json").shape == (12,)
    report = json.loads((run / "threshold_report.json").read_text())
    assert report["headline"]["per_label"]["micro"]["std"] is not None
    assert len(report["headline"]["per_label"]["micro"]["folds"]) == 3
    assert {g["group"] for g in report["groups"]} == {"category", "attribute"}
    markdown = (run / "threshold_report.md").read_text()
    assert "held-out folds" in markdown and "± " in markdown
    for name in ("per_label_f1.png", "f1_vs_global_threshold.png", "pr_curves_top_labels.png"):
        assert_png(run / "plots" / name)
    assert not (tmp_path / "runs" / "old" / "thresholds.json").exists()
    assert not list(run.glob(".*.tmp"))


def _auto_mode_run(run_dir: Path, kind: str) -> None:
    """shifted: label 0 separates at ~0.8 and label 1 at ~0.2 (no one threshold serves both);
    noisy: 40 alike labels on 60 images, where per-label cuts fit the noise of a few positives each;
    step: 85% of positives score in [0.5, 1) and 85% of negatives in [0, 0.5), so 0.5 is the best cut and
    fitted cuts only add noise."""
    rng = np.random.default_rng(3)
    if kind == "shifted":
        labels = (rng.random((400, 2)) < 0.4).astype(np.uint8)
        centres = np.where(labels == 1, [0.9, 0.3], [0.7, 0.1])
        scores = centres + rng.normal(0, 0.05, labels.shape)
    elif kind == "noisy":
        labels = (rng.random((60, 40)) < 0.1).astype(np.uint8)
        scores = 1 / (1 + np.exp(-(2.0 * labels - 1.0 + rng.normal(0, 1, labels.shape))))
    else:
        labels = (rng.random((120, 6)) < 0.5).astype(np.uint8)
        high = (labels == 1) == (rng.random(labels.shape) < 0.85)
        scores = np.where(high, rng.uniform(0.5, 1.0, labels.shape), rng.uniform(0.0, 0.5, labels.shape))
    make_run(run_dir, n=labels.shape[0], c=labels.shape[1], labels=labels, scores=scores.astype(np.float32))


@pytest.mark.parametrize("kind,expected", [("shifted", "per_label"), ("noisy", "global"), ("step", "0.5")])
def test_cli_mode_auto_keeps_what_scores_best_on_held_out_folds(tmp_path, kind, expected):
    run = tmp_path / "r"
    _auto_mode_run(run, kind)
    result = run_cli("--run-dir", str(run), "--cv", "5", "--mode", "auto", "--min-positives", "1", "--no-plots", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    headline = json.loads((run / "threshold_report.json").read_text())["headline"]
    means = {"0.5": headline["at_0.5"]["micro"]["mean"], "global": headline["best_global"]["micro"]["mean"],
             "per_label": headline["per_label"]["micro"]["mean"]}
    assert max(means, key=means.get) == expected, means
    doc = json.loads((run / "thresholds.json").read_text())
    assert doc["mode"] == ("per_label" if expected == "per_label" else "global")
    assert f"auto -> {expected}" in result.stdout
    thresholds = ts.load_thresholds(run / "thresholds.json")
    assert (len(set(thresholds.tolist())) == 1) == (expected != "per_label")
    if expected == "0.5":
        assert set(thresholds.tolist()) == {0.5}


def test_cli_mode_auto_needs_cv(tmp_path):
    make_run(tmp_path / "r")
    result = run_cli("--run-dir", str(tmp_path / "r"), "--mode", "auto", cwd=tmp_path)
    assert result.returncode == 2 and "--cv" in result.stderr and "Traceback" not in result.stderr


def test_compressed_and_uncompressed_npz_load_the_same(tmp_path):
    make_run(tmp_path / "plain")
    (tmp_path / "packed").mkdir()
    with np.load(tmp_path / "plain" / "val_predictions.npz") as data:
        np.savez_compressed(tmp_path / "packed" / "val_predictions.npz", **data)
    plain, packed = ts.load_predictions(tmp_path / "plain"), ts.load_predictions(tmp_path / "packed")
    for a, b in zip(plain, packed):
        assert np.array_equal(a, b)
    assert plain[1].dtype == np.float32 and plain[2].dtype == bool


def test_cli_in_sample_without_label_map_uses_generic_names(tmp_path):
    make_run(tmp_path / "r", with_label_map=False)
    result = run_cli("--run-dir", str(tmp_path / "r"), "--objective", "macro", "--no-plots", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    doc = json.loads((tmp_path / "r" / "thresholds.json").read_text())
    assert doc["labels"][3]["name"] == "label_3"
    assert "in-sample" in (tmp_path / "r" / "threshold_report.md").read_text()


@pytest.mark.parametrize("case,expected", [
    ("no_npz", "val_predictions.npz: predictions file not found"),
    ("no_scores", "missing array 'scores'"),
    ("shape", "does not match"),
    ("nan", "NaN"),
    ("no_run", "no run folder"),
])
def test_cli_bad_inputs_exit_2_with_one_line(tmp_path, case, expected):
    run = tmp_path / "runs" / "r"
    if case == "no_npz":
        run.mkdir(parents=True)
        args = ["--run-dir", str(run)]
    elif case == "no_scores":
        make_run(run, scores=None)
        args = ["--run-dir", str(run)]
    elif case == "shape":
        make_run(run, labels=np.zeros((120, 11), np.uint8))
        args = ["--run-dir", str(run)]
    elif case == "nan":
        scores = np.full((120, 12), 0.5, np.float32)
        scores[7, 3] = np.nan
        make_run(run, scores=scores)
        args = ["--run-dir", str(run)]
    else:
        (tmp_path / "runs").mkdir()
        args = ["--runs-root", str(tmp_path / "runs")]
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.stderr
    assert "Traceback" not in result.stderr
