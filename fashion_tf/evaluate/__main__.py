"""python -m fashion_tf.evaluate: the command line of fashion_tf.evaluate.evaluate."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from fashion_tf.errors import run_cli
from fashion_tf.evaluate import GALLERY_SIZE, Options, evaluate
from fashion_tf.evaluate.figures import CONFUSION_MAX_CLASSES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fashion_tf.evaluate",
        description="Evaluate a trained run on a TFRecord split: metrics.json, metrics.md and plots in the run dir.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--run-dir", required=True, help="run directory written by fashion_tf.train")
    parser.add_argument("--data", required=True, help="TFRecord folder written by tools/make_tfrecords.py")
    parser.add_argument("--split", default="validation", help="split of the shard folder to evaluate")
    parser.add_argument("--thresholds", default=None, help="thresholds file; None: RUN/thresholds.json, or 0.5 for every label without one")
    parser.add_argument("--group", default=None,
                        help="label group of the confusion matrix and the PCA colours; None: the mutually "
                             "exclusive group with the most labels")
    parser.add_argument("--batch-size", type=int, default=None, help="images per batch; None: the run config's data.batch_size")
    parser.add_argument("--confusion-classes", type=int, default=CONFUSION_MAX_CLASSES,
                        help="most frequent classes shown in the confusion matrix")
    parser.add_argument("--gallery-size", type=int, default=GALLERY_SIZE, help="images in the worst-misclassified gallery")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    evaluate(Options(**vars(args)))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
