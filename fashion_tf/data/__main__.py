"""`python -m fashion_tf.data benchmark --data SHARDS [...]`: the command line of fashion_tf.data.benchmark."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from fashion_tf.config import load_config
from fashion_tf.data.augment import check_names
from fashion_tf.data.benchmark import PIPELINES, Options, benchmark
from fashion_tf.errors import run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fashion_tf.data",
        description="Input pipeline tools.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    bench = commands.add_parser(
        "benchmark",
        help="images/s of the training or evaluation pipeline",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    bench.add_argument("--data", required=True, help="TFRecord folder written by make_tfrecords")
    bench.add_argument("--split", default="train")
    bench.add_argument("--config", default=None, help="JSON config whose data section is used (defaults otherwise)")
    bench.add_argument("--image-size", type=int, default=None, help="default: the config's data.image_size")
    bench.add_argument("--batch-size", type=int, default=None, help="default: the config's data.batch_size")
    bench.add_argument("--pipeline", choices=PIPELINES, default="train")
    bench.add_argument("--augment", default=None, help="comma list, or 'none'; default: the config's data.augment")
    bench.add_argument("--seconds", type=float, default=30.0, help="measured time, after the warm-up")
    bench.add_argument("--warmup", type=float, default=5.0, help="seconds of warm-up excluded from the figure")
    return parser


def parse_augment(text: Optional[str]) -> Optional[list[str]]:
    """'crop, flip' -> ['crop', 'flip']; 'none' -> []; None -> None (the config's list). Names are checked
    against the augmentation table."""
    if text is None:
        return None
    names = [name.strip() for name in text.split(",") if name.strip() and name.strip() != "none"]
    check_names(names, "--augment")
    return names


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of the figure
    data_cfg = load_config(args.config).data
    data_cfg.tfrecords = args.data
    if args.image_size is not None:
        data_cfg.image_size = args.image_size
    if args.batch_size is not None:
        data_cfg.batch_size = args.batch_size
    options = Options(split=args.split, pipeline=args.pipeline, augment=parse_augment(args.augment),
                      seconds=args.seconds, warmup=args.warmup)
    print(benchmark(data_cfg, options).describe())
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
