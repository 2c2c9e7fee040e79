"""python -m fashion_tf.threshold_search: arguments -> Options -> search(); prints the summary line."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from fashion_tf.errors import run_cli
from fashion_tf.threshold_search.best import MODES
from fashion_tf.threshold_search.metrics import OBJECTIVES
from fashion_tf.threshold_search.report import format_summary
from fashion_tf.threshold_search.search import AUTO, Options, search


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fashion_tf.threshold_search",
        description="Exact F1-optimal thresholds from a run's val_predictions.npz.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--run-dir", help="run folder with val_predictions.npz (default: newest under --runs-root)")
    parser.add_argument("--runs-root", default="runs", help="where to look for the newest run folder")
    parser.add_argument("--objective", choices=OBJECTIVES, default="micro", help="F1 average to maximise")
    parser.add_argument("--mode", choices=(*MODES, AUTO), default="per_label",
                        help="one threshold per label, one for all, or (auto, with --cv) whichever of these and the plain 0.5 "
                             "scores best on the held-out folds")
    parser.add_argument("--cv", type=int, default=0, help="K-fold cross-validation of the thresholds (0: off)")
    parser.add_argument("--min-positives", type=int, default=5,
                        help="labels with fewer validation positives use the global threshold")
    parser.add_argument("--seed", type=int, default=0, help="seed of the CV fold split")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    return parser


def options_from_args(args: argparse.Namespace) -> Options:
    return Options(run_dir=args.run_dir, runs_root=args.runs_root, objective=args.objective, mode=args.mode,
                   cv=args.cv, min_positives=args.min_positives, seed=args.seed, plots=not args.no_plots,
                   progress=sys.stderr.isatty())


def describe(summary: dict) -> str:
    """The closing line: F1 at 0.5, at the best global threshold and per label, what was written, how long."""
    o, f1 = summary["objective"], summary["f1"]
    auto = summary["auto_choice"]
    mode = f"auto -> {auto}" if auto else summary["mode"]
    cv = f", {summary['cv_folds']}-fold CV" if summary["cv_folds"] else ", in-sample"
    files = ", ".join(path.name for path in summary["files"])
    return (
        f"Threshold search ({o} F1, {mode}{cv}) on {summary['num_images']} images x {summary['num_labels']} labels "
        f"from {summary['run_dir']}: {o} F1 {format_summary(f1['at_0.5'])} at 0.5, "
        f"{format_summary(f1['best_global'])} at the best global threshold {summary['global_threshold']:.4f}, "
        f"{format_summary(f1['per_label'])} with per-label thresholds; {summary['rare_labels']} rare labels use the "
        f"global threshold ({summary['no_positive_labels']} without positives), "
        f"{len(summary['high_positive_rate_labels'])} predicted on >95% of images; wrote {files} and "
        f"{len(summary['plots'])} plots in {summary['seconds']:.1f} s.")


def main(argv: Sequence[str] | None = None) -> int:
    summary = search(options_from_args(build_parser().parse_args(argv)))
    for label in summary["high_positive_rate_labels"]:
        print(f"warning: label {label['id']} ({label['name']}) is predicted positive on {label['rate']:.1%} of "
              "validation images", file=sys.stderr)
    print(describe(summary))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
