"""Benchmark: exact per-label threshold search vs a 100-point grid scored with sklearn.metrics.f1_score.

    python bench/bench_threshold.py                     # 1,000,000 x 228 (about 1.2 GB npz on disk)
    python bench/bench_threshold.py --rows 20000        # quick look

Synthetic validation set: label frequencies follow a power law (iMaterialist-like: a few labels on most images,
a long tail of rare ones), scores are float32 sigmoids of a label-dependent logit shifted for positives.

Measured side by side in one run:
- the whole command `python -m fashion_tf.threshold_search --objective macro --mode per_label` (a subprocess:
  npz on disk -> thresholds.json, reports and plots), and the same with the default options (micro objective);
- the bare search function `best_thresholds(..., "macro", "per_label")` on arrays in memory;
- the grid: for each label and each of 100 thresholds, `f1_score(y, score >= t)`. On the full size this is
  22,800 calls on 1M rows, so it is timed on --grid-labels labels spread over the frequency range and
  extrapolated linearly to all labels when the full grid would exceed --grid-budget-s (stated in the output).
The per-label F1 comparison (ours >= grid on every label) uses every label: our thresholds are scored with
sklearn on all labels; the grid's best F1 per label is counted exactly with numpy at the same 100 thresholds,
checked equal to sklearn on the timed labels.

Results: bench/results/threshold_bench.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fashion_tf.fileio import write_bytes_atomic, write_json_atomic  # noqa: E402
from fashion_tf.run_folder import RunFolder, read_thresholds  # noqa: E402
from fashion_tf.threshold_search import best_thresholds  # noqa: E402

GRID = np.linspace(0.0, 1.0, 102)[1:-1]  # 100 interior points 0.0099 .. 0.9901


def label_frequencies(num_labels: int, seed: int) -> np.ndarray:
    rank = np.arange(1, num_labels + 1)
    freq = 0.8 * rank ** -1.1  # top label on 80% of images, median ~0.45%, rarest ~0.2%
    return np.random.default_rng(seed).permutation(freq)


def synthetic_predictions(rows: int, num_labels: int, seed: int = 0, chunk: int = 50_000):
    """(scores float32 [rows, C], labels uint8 [rows, C]) built chunk by chunk to keep memory flat."""
    rng = np.random.default_rng(seed)
    freq = label_frequencies(num_labels, seed)
    separation = rng.uniform(1.5, 5.0, num_labels)  # some labels easy, some hard
    bias = np.log(freq / (1 - freq)) - separation / 2
    scores = np.empty((rows, num_labels), np.float32)
    labels = np.empty((rows, num_labels), np.uint8)
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        y = rng.random((n, num_labels), dtype=np.float32) < freq
        logit = bias + separation * y + rng.standard_normal((n, num_labels), dtype=np.float32) * 1.3
        scores[start:start + n] = 1 / (1 + np.exp(-logit.astype(np.float32)))
        labels[start:start + n] = y
    return scores, labels


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_command(args: list[str]) -> dict:
    """Wall and CPU seconds of the command as a user runs it (a fresh interpreter; imports included)."""
    cpu_before = children_cpu()
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "fashion_tf.threshold_search", *args], cwd=REPO,
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"command failed ({result.returncode}): {result.stderr.strip()}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"command": "python -m fashion_tf.threshold_search " + " ".join(args), "seconds": seconds,
            "cpu_seconds": children_cpu() - cpu_before,
            "peak_rss_gb_children_so_far": peak / 1024 ** 2, "summary": result.stdout.strip()}


def grid_f1_numpy(column: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """F1 at each GRID threshold, counted exactly (score >= t) from one sorted copy of the column."""
    sorted_col = np.sort(column)
    sorted_pos = np.sort(column[truth])
    predicted = column.size - np.searchsorted(sorted_col, GRID, side="left")
    tp = sorted_pos.size - np.searchsorted(sorted_pos, GRID, side="left")
    den = predicted + sorted_pos.size
    return np.divide(2 * tp, den, out=np.zeros(GRID.size), where=den > 0)


def spread_labels(support: np.ndarray, count: int) -> np.ndarray:
    order = np.argsort(-support, kind="stable")
    return order[np.unique(np.linspace(0, order.size - 1, count).round().astype(int))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--labels", type=int, default=228)
    parser.add_argument("--grid-labels", type=int, default=6, help="labels timed with the sklearn grid")
    parser.add_argument("--grid-budget-s", type=float, default=600.0,
                        help="run the sklearn grid on every label only if its estimate is below this")
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reuse-data", action="store_true",
                        help="reuse the npz of an earlier run of the same size (same seed) instead of regenerating")
    args = parser.parse_args()
    from sklearn.metrics import f1_score

    out = Path(args.out)
    run_dir = out / "threshold_run"
    run = RunFolder(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    results: dict = {"rows": args.rows, "labels": args.labels, "grid_points": int(GRID.size),
                     "cpu_count": os.cpu_count(), "load_avg_start": os.getloadavg()}

    t0 = time.perf_counter()
    npz = run.val_predictions
    reuse = args.reuse_data and npz.is_file()
    if reuse:
        with np.load(npz) as data:
            scores, labels = data["scores"], data["labels"]
        reuse = scores.shape == (args.rows, args.labels)
    if not reuse:
        scores, labels = synthetic_predictions(args.rows, args.labels, args.seed)
        np.savez(npz, ids=np.arange(args.rows, dtype=np.int64), scores=scores, labels=labels)
    results["data_reused"] = bool(reuse)
    support = labels.sum(axis=0, dtype=np.int64)
    results["generate_and_write_s"] = time.perf_counter() - t0
    results["npz_gb"] = npz.stat().st_size / 1e9
    results["support_min_median_max"] = [int(support.min()), int(np.median(support)), int(support.max())]
    results["labels_per_image"] = float(support.sum() / args.rows)
    print(f"data: {args.rows} x {args.labels}, {results['labels_per_image']:.2f} labels/image, support "
          f"min/median/max {results['support_min_median_max']}, npz {results['npz_gb']:.2f} GB", flush=True)
    del scores, labels  # the command loads its own copy

    cmd_args = ["--run-dir", str(run_dir), "--objective", "macro", "--mode", "per_label", "--min-positives", "1"]
    results["command_macro"] = run_command(cmd_args)
    print(f"whole command (macro): {results['command_macro']['seconds']:.1f} s", flush=True)
    ours_thresholds = read_thresholds(run.thresholds)
    results["command_default_micro"] = run_command(["--run-dir", str(run_dir)])
    print(f"whole command (default micro): {results['command_default_micro']['seconds']:.1f} s", flush=True)

    with np.load(npz) as data:
        scores, labels = data["scores"], data["labels"]
    t0, c0 = time.perf_counter(), time.process_time()
    bare_thresholds, _ = best_thresholds(scores, labels, "macro", "per_label", min_positives=1)
    results["bare_search_macro_s"] = time.perf_counter() - t0
    results["bare_search_macro_cpu_s"] = time.process_time() - c0
    assert np.array_equal(bare_thresholds, ours_thresholds), "command and bare function disagree"
    print(f"bare best_thresholds (macro, per_label): {results['bare_search_macro_s']:.1f} s", flush=True)

    # --- sklearn grid, timed on a spread of labels ---
    timed = spread_labels(support, args.grid_labels)
    grid_sklearn = {}
    t0, c0 = time.perf_counter(), time.process_time()
    for label in timed:
        column, truth = scores[:, label].copy(), labels[:, label].astype(bool)
        grid_sklearn[int(label)] = [f1_score(truth, column >= t, zero_division=0) for t in GRID]
    timed_s = time.perf_counter() - t0
    timed_cpu_s = time.process_time() - c0
    per_label_s = timed_s / timed.size
    estimate = per_label_s * args.labels
    full_grid_run = estimate <= args.grid_budget_s and timed.size < args.labels
    if full_grid_run:
        t0, c0 = time.perf_counter(), time.process_time()
        for label in range(args.labels):
            if label not in grid_sklearn:
                column, truth = scores[:, label].copy(), labels[:, label].astype(bool)
                grid_sklearn[label] = [f1_score(truth, column >= t, zero_division=0) for t in GRID]
        grid_total = timed_s + time.perf_counter() - t0
        grid_total_cpu = timed_cpu_s + time.process_time() - c0
    else:
        scale = args.labels / timed.size
        grid_total, grid_total_cpu = timed_s * scale, timed_cpu_s * scale
    results["grid"] = {
        "timed_labels": [int(x) for x in timed], "timed_label_support": [int(support[x]) for x in timed],
        "timed_seconds": timed_s, "timed_cpu_seconds": timed_cpu_s, "seconds_per_label": per_label_s,
        "f1_score_calls_timed": int(timed.size * GRID.size),
        "all_labels_seconds": grid_total, "all_labels_cpu_seconds": grid_total_cpu,
        "all_labels_is_extrapolated": not full_grid_run and timed.size < args.labels,
    }
    print(f"sklearn grid: {timed_s:.1f} s for {timed.size} labels -> "
          f"{'extrapolated ' if results['grid']['all_labels_is_extrapolated'] else ''}{grid_total:.0f} s "
          f"for {args.labels} labels", flush=True)

    # --- per-label F1: ours (sklearn-scored) vs the grid's best (numpy-counted, checked against sklearn) ---
    ours_f1 = np.empty(args.labels)
    grid_best = np.empty(args.labels)
    grid_check = 0.0
    for label in range(args.labels):
        column, truth = scores[:, label].copy(), labels[:, label].astype(bool)
        ours_f1[label] = f1_score(truth, column >= ours_thresholds[label], zero_division=0)
        grid_curve = grid_f1_numpy(column, truth)
        grid_best[label] = grid_curve.max()
        if label in grid_sklearn:
            grid_check = max(grid_check, float(np.abs(grid_curve - np.array(grid_sklearn[label])).max()))
    margin = ours_f1 - grid_best
    results["comparison"] = {
        "labels_ours_ge_grid": int(np.sum(margin >= -1e-12)),
        "labels_ours_gt_grid": int(np.sum(margin > 1e-12)),
        "min_margin": float(margin.min()), "mean_margin": float(margin.mean()), "max_margin": float(margin.max()),
        "macro_f1_ours": float(ours_f1.mean()), "macro_f1_grid": float(grid_best.mean()),
        "grid_numpy_vs_sklearn_max_abs_diff": grid_check,
    }
    command_s = results["command_macro"]["seconds"]
    results["speedup_whole_command_vs_grid"] = grid_total / command_s
    results["speedup_bare_function_vs_grid"] = grid_total / results["bare_search_macro_s"]
    results["cpu_speedup_whole_command_vs_grid"] = grid_total_cpu / results["command_macro"]["cpu_seconds"]
    results["cpu_speedup_bare_function_vs_grid"] = grid_total_cpu / results["bare_search_macro_cpu_s"]
    results["load_avg_end"] = os.getloadavg()
    results["goal_50x_met"] = results["speedup_whole_command_vs_grid"] >= 50
    results["goal_f1_ge_grid_every_label"] = results["comparison"]["labels_ours_ge_grid"] == args.labels

    write_json_atomic(out / "threshold_bench.json", results)
    md = render_markdown(results)
    write_bytes_atomic(out / "threshold_bench.md", md.encode())
    print(md)
    return 0


def render_markdown(r: dict) -> str:
    g, c = r["grid"], r["comparison"]
    extrapolated = " (extrapolated linearly from the timed labels)" if g["all_labels_is_extrapolated"] else ""
    return "\n".join([
        f"# Threshold search benchmark: {r['rows']:,} x {r['labels']} synthetic float32 scores",
        "",
        f"- data: {r['labels_per_image']:.2f} labels/image, support min/median/max {r['support_min_median_max']}, "
        f"npz {r['npz_gb']:.2f} GB, {r['cpu_count']} CPUs, load average at start {r['load_avg_start'][0]:.1f}",
        f"- load average at end {r['load_avg_end'][0]:.1f}: wall-clock seconds depend on other users, CPU seconds "
        f"(user + system of the process) much less; both are given as wall / CPU",
        f"- whole command, macro per-label (npz -> thresholds.json + reports + plots): "
        f"**{r['command_macro']['seconds']:.1f} s / {r['command_macro']['cpu_seconds']:.1f} s CPU** "
        f"(`{r['command_macro']['command']}`)",
        f"- whole command, default options (micro per-label coordinate ascent): "
        f"{r['command_default_micro']['seconds']:.1f} s / {r['command_default_micro']['cpu_seconds']:.1f} s CPU",
        f"- peak RSS of the commands: {r['command_default_micro']['peak_rss_gb_children_so_far']:.2f} GB",
        f"- bare `best_thresholds(scores, labels, 'macro', 'per_label')`: {r['bare_search_macro_s']:.1f} s / "
        f"{r['bare_search_macro_cpu_s']:.1f} s CPU",
        f"- sklearn grid ({r['grid_points']} thresholds x label, `f1_score` per call): {g['timed_seconds']:.1f} s / "
        f"{g['timed_cpu_seconds']:.1f} s CPU for {len(g['timed_labels'])} labels (support {g['timed_label_support']}) "
        f"-> **{g['all_labels_seconds']:.0f} s / {g['all_labels_cpu_seconds']:.0f} s CPU for all labels**"
        f"{extrapolated}",
        f"- speed-up vs grid, wall: whole command **{r['speedup_whole_command_vs_grid']:.0f}x**, bare function "
        f"{r['speedup_bare_function_vs_grid']:.0f}x; CPU: whole command **{r['cpu_speedup_whole_command_vs_grid']:.0f}x**"
        f", bare function {r['cpu_speedup_bare_function_vs_grid']:.0f}x "
        f"(goal >= 50x, whole command wall: {'met' if r['goal_50x_met'] else 'NOT met'})",
        f"- per-label F1 ours >= grid on {c['labels_ours_ge_grid']}/{r['labels']} labels "
        f"(strictly better on {c['labels_ours_gt_grid']}); margin min {c['min_margin']:.2e}, mean "
        f"{c['mean_margin']:.2e}, max {c['max_margin']:.2e}; macro F1 ours {c['macro_f1_ours']:.5f} vs grid "
        f"{c['macro_f1_grid']:.5f}",
        f"- grid F1 counted with numpy equals sklearn on the timed labels: max abs diff "
        f"{c['grid_numpy_vs_sklearn_max_abs_diff']:.1e}",
        "",
    ])


if __name__ == "__main__":
    sys.exit(main())
