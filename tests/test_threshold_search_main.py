"""python -m fashion_tf.threshold_search as a user runs it: outputs of a good run, --mode auto, and every kind of
bad input refused with one line, exit 2 and nothing written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from threshold_search_cases import make_run

import fashion_tf

REPO = Path(fashion_tf.__file__).resolve().parents[1]  # the checkout whose code is under test


def threshold_search(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "fashion_tf.threshold_search", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def written_thresholds(run: Path) -> np.ndarray:
    entries = json.loads((run / "thresholds.json").read_text())["labels"]
    return np.array([entry["threshold"] for entry in sorted(entries, key=lambda entry: entry["index"])])


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()


def test_end_to_end_with_cv_on_newest_run(tmp_path):
    make_run(tmp_path / "runs" / "old", seed=1)
    make_run(tmp_path / "runs" / "new", seed=2)
    os.utime(tmp_path / "runs" / "old", (1_000_000, 1_000_000))
    result = threshold_search("--cv", "3", "--min-positives", "3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    run = tmp_path / "runs" / "new"
    assert "3-fold CV" in result.stdout and "runs/new" in result.stdout
    assert "wrote thresholds.json, threshold_report.md, threshold_report.json and 3 plots" in result.stdout
    doc = json.loads((run / "thresholds.json").read_text())
    assert doc["objective"] == "micro" and doc["mode"] == "per_label" and doc["cv_folds"] == 3
    assert [e["name"] for e in doc["labels"]][:2] == ["name 0", "name 1"]
    assert {e["group"] for e in doc["labels"]} == {"category", "attribute"}
    assert written_thresholds(run).shape == (12,)
    report = json.loads((run / "threshold_report.json").read_text())
    assert report["headline"]["per_label"]["micro"]["std"] is not None
    assert len(report["headline"]["per_label"]["micro"]["folds"]) == 3
    assert {g["group"] for g in report["groups"]} == {"category", "attribute"}
    assert f"{report['headline']['per_label']['micro']['mean']:.4f} ± " in result.stdout
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
        scores = np.clip(centres + rng.normal(0, 0.05, labels.shape), 0, 1)  # probabilities
    elif kind == "noisy":
        labels = (rng.random((60, 40)) < 0.1).astype(np.uint8)
        scores = 1 / (1 + np.exp(-(2.0 * labels - 1.0 + rng.normal(0, 1, labels.shape))))
    else:
        labels = (rng.random((120, 6)) < 0.5).astype(np.uint8)
        high = (labels == 1) == (rng.random(labels.shape) < 0.85)
        scores = np.where(high, rng.uniform(0.5, 1.0, labels.shape), rng.uniform(0.0, 0.5, labels.shape))
    make_run(run_dir, n=labels.shape[0], c=labels.shape[1], labels=labels, scores=scores.astype(np.float32))


@pytest.mark.parametrize("kind,expected", [("shifted", "per_label"), ("noisy", "global"), ("step", "0.5")])
def test_mode_auto_keeps_what_scores_best_on_held_out_folds(tmp_path, kind, expected):
    run = tmp_path / "r"
    _auto_mode_run(run, kind)
    result = threshold_search("--run-dir", str(run), "--cv", "5", "--mode", "auto", "--min-positives", "1",
                              "--no-plots", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    headline = json.loads((run / "threshold_report.json").read_text())["headline"]
    means = {"0.5": headline["at_0.5"]["micro"]["mean"], "global": headline["best_global"]["micro"]["mean"],
             "per_label": headline["per_label"]["micro"]["mean"]}
    assert max(means, key=means.get) == expected, means
    doc = json.loads((run / "thresholds.json").read_text())
    assert doc["mode"] == ("per_label" if expected == "per_label" else "global")
    assert f"auto -> {expected}" in result.stdout
    thresholds = written_thresholds(run)
    assert (len(set(thresholds.tolist())) == 1) == (expected != "per_label")
    if expected == "0.5":
        assert set(thresholds.tolist()) == {0.5}
    assert not (run / "plots").exists()


def test_in_sample_without_label_map_uses_generic_names(tmp_path):
    make_run(tmp_path / "r", with_label_map=False)
    result = threshold_search("--run-dir", str(tmp_path / "r"), "--objective", "macro", "--no-plots", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "in-sample" in result.stdout and "and 0 plots" in result.stdout
    doc = json.loads((tmp_path / "r" / "thresholds.json").read_text())
    assert doc["labels"][3]["name"] == "label_3" and doc["labels"][3]["group"] == "all"
    assert "in-sample" in (tmp_path / "r" / "threshold_report.md").read_text()


def test_help_shows_the_defaults(tmp_path):
    result = threshold_search("--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "(default: micro)" in result.stdout and "(default: 5)" in result.stdout


def test_the_whole_stage_imports_no_tensorflow(tmp_path):
    make_run(tmp_path / "r")
    code = ("import runpy, sys\n"
            f"sys.argv = ['threshold_search', '--run-dir', {str(tmp_path / 'r')!r}, '--cv', '3']\n"
            "try:\n"
            "    runpy.run_module('fashion_tf.threshold_search', run_name='__main__', alter_sys=True)\n"
            "except SystemExit as done:\n"
            "    assert not done.code, done.code\n"
            "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "r" / "thresholds.json").is_file()


# ---------------------------------------------------------------------------------------------
# bad input: one line, exit 2, no traceback, nothing written
# ---------------------------------------------------------------------------------------------
def _scores_with(value) -> np.ndarray:
    scores = np.full((120, 12), 0.5, np.float32)
    scores[7, 3] = value
    return scores


def _run_with(**overrides):
    def build(tmp_path: Path) -> list[str]:
        make_run(tmp_path / "r", **overrides)
        return ["--run-dir", str(tmp_path / "r")]
    return build


def _run_then(change, *extra: str):
    """A good run folder, changed by `change(run_dir)`, searched with `extra` options."""
    def build(tmp_path: Path) -> list[str]:
        make_run(tmp_path / "r")
        change(tmp_path / "r")
        return ["--run-dir", str(tmp_path / "r"), *extra]
    return build


def _write(name: str, data: bytes):
    return lambda run: (run / name).write_bytes(data)


def _truncate_npz(run: Path) -> None:
    npz = run / "val_predictions.npz"
    npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])


def _other_label_map(run: Path) -> None:
    from fashion_tf.labels import LabelMap

    LabelMap.from_ids(range(11)).to_json(run / "label_map.json")


BAD_INPUTS = {
    # name: (build the input, return the arguments; what the line must say)
    "run dir missing": (lambda tmp: ["--run-dir", str(tmp / "nope")], ["nope", "run folder not found"]),
    "run dir is a file": (lambda tmp: (tmp.joinpath("f").write_text("x"), ["--run-dir", str(tmp / "f")])[1],
                          ["f: run folder not found"]),
    "runs root missing": (lambda tmp: ["--runs-root", str(tmp / "nope")], ["nope", "runs folder not found"]),
    "runs root without runs": (lambda tmp: (tmp.joinpath("runs").mkdir(), ["--runs-root", str(tmp / "runs")])[1],
                               ["runs", "no run folder with val_predictions.npz"]),
    "npz missing": (_run_then(lambda run: (run / "val_predictions.npz").unlink()),
                    ["val_predictions.npz: predictions file not found"]),
    "npz not a zip": (_run_then(_write("val_predictions.npz", b"not an npz at all")),
                      ["val_predictions.npz: not a readable .npz file"]),
    "npz truncated": (_run_then(_truncate_npz), ["val_predictions.npz: not a readable .npz file"]),
    "scores missing": (_run_with(scores=None), ["val_predictions.npz", "missing array 'scores'"]),
    "ids pickled": (_run_with(ids=np.array([{"id": i} for i in range(120)], dtype=object)),
                    ["val_predictions.npz: not a readable .npz file"]),
    "labels shape": (_run_with(labels=np.zeros((120, 11), np.uint8)), ["val_predictions.npz", "'labels' shape"]),
    "ids shape": (_run_with(ids=np.arange(119)), ["val_predictions.npz", "'ids' shape"]),
    "scores 1-D": (_run_with(scores=np.full(120, 0.5, np.float32), labels=np.zeros(120, np.uint8)),
                   ["val_predictions.npz", "2-D"]),
    "no rows": (_run_with(ids=np.arange(0), scores=np.zeros((0, 12), np.float32), labels=np.zeros((0, 12), np.uint8)),
                ["val_predictions.npz", "empty"]),
    "integer scores": (_run_with(scores=np.ones((120, 12), np.int64)), ["val_predictions.npz", "floating point"]),
    "NaN score": (_run_with(scores=_scores_with(np.nan)), ["val_predictions.npz", "NaN", "row 7, label 3"]),
    "infinite score": (_run_with(scores=_scores_with(np.inf)), ["val_predictions.npz", "infinite", "row 7, label 3"]),
    "score above 1": (_run_with(scores=_scores_with(1.7)), ["val_predictions.npz", "1.7", "row 7, label 3"]),
    "score below 0": (_run_with(scores=_scores_with(-0.2)), ["val_predictions.npz", "-0.2", "row 7, label 3"]),
    "label not 0/1": (_run_with(labels=np.full((120, 12), 2, np.uint8)),
                      ["val_predictions.npz", "0/1", "row 0, label 0"]),
    "label map with 11 labels": (_run_then(_other_label_map), ["label_map.json", "11 labels", "12 columns"]),
    "label map not JSON": (_run_then(_write("label_map.json", b"{not json")), ["label_map.json", "not valid JSON"]),
    "--cv 1": (_run_then(lambda run: None, "--cv", "1"), ["--cv", "got 1"]),
    "--cv -3": (_run_then(lambda run: None, "--cv", "-3"), ["--cv", "got -3"]),
    "--cv above the images": (_run_then(lambda run: None, "--cv", "500"), ["--cv 500", "120"]),
    "--min-positives -1": (_run_then(lambda run: None, "--min-positives", "-1"), ["--min-positives", "got -1"]),
    "--mode auto without --cv": (_run_then(lambda run: None, "--mode", "auto"), ["--mode auto", "--cv"]),
}


def _files(root: Path) -> dict:
    return {str(path.relative_to(root)): (path.stat().st_size, path.stat().st_mtime_ns)
            for path in sorted(root.rglob("*"))}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_gets_one_line_exit_2_and_nothing_written(tmp_path, case):
    build, expected = BAD_INPUTS[case]
    args = build(tmp_path)
    before = _files(tmp_path)
    result = threshold_search(*args, cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert all(part in lines[0] for part in expected), lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert _files(tmp_path) == before
