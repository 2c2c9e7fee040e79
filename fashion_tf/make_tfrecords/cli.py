"""The command line: flags -> Options, run or --verify, print the summary.

    python tools/make_tfrecords.py --input PATH --output-dir OUT [--images DIR] [--label-map CSV] ...
    python -m fashion_tf.make_tfrecords --output-dir OUT --verify
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from fashion_tf.errors import UserError
from fashion_tf.make_tfrecords.options import Options, default_workers
from fashion_tf.make_tfrecords.pipeline import make_tfrecords
from fashion_tf.make_tfrecords.plan import FULL_SHARDING_FROM, MIN_EXAMPLES_PER_SHARD
from fashion_tf.make_tfrecords.verify import verify_output
from fashion_tf.manifest import MANIFEST_NAME
from fashion_tf.shard_folder import TFDS_FILES, ShardFolder

class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except None/False ones: their help says what happens when the option is absent."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    folder = ShardFolder("OUT")
    parser = argparse.ArgumentParser(
        prog="make_tfrecords.py",
        description=f"Write images + labels as sharded TFRecords (train/validation[/test]) with "
        f"{folder.info_path.name}, {folder.label_map_path.name} (the label map) and TFDS metadata; or --verify an "
        "output folder.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--input", type=Path, help=f"download folder ({MANIFEST_NAME}), iMaterialist JSON, "
                        "attribute CSV (styles.csv), or class-per-folder tree")
    parser.add_argument("--output-dir", type=Path, required=True, help="folder for shards and metadata (required)")
    parser.add_argument("--images", type=Path, help="folder of <imageId>.<ext> files for JSON/CSV inputs "
                        "(default: images/ beside the input file)")
    parser.add_argument("--label-map", type=Path, help="iMaterialist label map CSV (labelId,taskId,labelName,"
                        f"taskName) or a {folder.label_map_path.name}; default: derived from the data")
    parser.add_argument("--val-fraction", type=float, default=Options.val_fraction, help="validation share (stratified)")
    parser.add_argument("--test-fraction", type=float, default=Options.test_fraction,
                        help="test share (stratified); 0: no test split")
    parser.add_argument("--seed", type=int, default=Options.seed, help="seed of the split and of the shuffle")
    parser.add_argument("--shard-size-mb", type=float, default=Options.shard_size_mb, help="target shard size")
    parser.add_argument("--min-shards", type=int, default=Options.min_shards,
                        help=f"at least this many shards per split once the data set has {FULL_SHARDING_FROM:,} "
                        f"images (below: one per {MIN_EXAMPLES_PER_SHARD:,} images of the split)")
    parser.add_argument("--workers", type=int, default=default_workers(), help="shards written at once")
    parser.add_argument("--split-from", type=Path, help="validation ids: a challenge JSON (either shape) or a "
                        "text file of ids; overrides --val-fraction")
    parser.add_argument("--groups", help="attribute CSV only: comma-separated columns used as label groups "
                        "(default: all but id, year, productDisplayName)")
    parser.add_argument("--max-size", type=int, help="downscale images whose longer side exceeds this (re-encodes "
                        "only those); default: bytes as-is")
    parser.add_argument("--max-pixels", type=int, default=Options.max_pixels,
                        help="skip images whose header declares more pixels (decompression bombs)")
    parser.add_argument("--name", help="dataset name (default: the output folder's name)")
    parser.add_argument("--overwrite", action="store_true", help="replace shards from another plan")
    parser.add_argument("--no-tfds", action="store_true", help=f"skip the TFDS metadata ({', '.join(TFDS_FILES)})")
    parser.add_argument("--verify", action="store_true", help="read every shard back and check it "
                        "(alone, without --input: verify an existing output folder)")
    parser.add_argument("--engine", choices=("local", "beam"), default="local",
                        help="local: threads of this process (--workers); beam: an Apache Beam pipeline on the runner "
                        "named by the options after `--` (DirectRunner, DataflowRunner, FlinkRunner, SparkRunner)")
    return parser


def options_from_args(args: argparse.Namespace) -> Options:
    return Options(
        input=args.input, output_dir=args.output_dir, images=args.images, label_map=args.label_map,
        val_fraction=args.val_fraction, test_fraction=args.test_fraction, seed=args.seed,
        shard_size_mb=args.shard_size_mb, min_shards=args.min_shards, workers=args.workers,
        split_from=args.split_from, groups=_groups(args.groups), max_size=args.max_size,
        max_pixels=args.max_pixels, name=args.name, overwrite=args.overwrite, tfds=not args.no_tfds,
    )


def _groups(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(g.strip() for g in text.split(",") if g.strip())


def summary_text(info: dict, out: Path) -> str:
    summary = info["summary"]
    splits = ", ".join(
        f"{split} {data['num_examples']:,} images in {len(data['shards'])} shards ({data['num_bytes'] / 2**20:,.1f} MB)"
        for split, data in info["splits"].items()
    )
    mb = summary["shard_bytes_written"] / 2**20
    rate = mb / summary["seconds"] if summary["seconds"] > 0 else float("nan")
    skipped = info["skipped"]
    reasons = ", ".join(f"{k} {v}" for k, v in skipped["by_reason"].items()) or "none"
    fractions = info["stratification"].get("label_fraction", {})
    spread = "; ".join(
        f"{split} share per label (labels with >= {len(info['splits'])} images) min {f['min']} / median {f['median']} "
        f"/ max {f['max']} (overall {f['overall']})"
        for split, f in fractions.items()
    )
    missing = info["stratification"].get("labels_missing", {})
    missing_text = "; ".join(f"{len(v)} labels with >= 2 images absent from {k}" for k, v in missing.items())
    return (
        f"Wrote {out}: {splits}; {info['num_labels']} labels. Skipped {skipped['total']:,} images ({reasons}). "
        f"This run wrote {summary['shards_written']} shards ({mb:,.1f} MB in {summary['seconds']:.1f} s, "
        f"{rate:,.1f} MB/s), kept {summary['shards_kept']} complete shards from an earlier run. "
        f"Split: {info['stratification'].get('method')}. {spread}{'. ' + missing_text if missing_text else ''}."
    )


def _beam_engine():
    try:
        from fashion_tf.beam import shards as engine
    except ImportError as err:
        from fashion_tf.beam.pipeline import BEAM_EXTRA

        raise UserError(f"--engine beam needs Apache Beam ({err}): {BEAM_EXTRA}") from None
    return engine


def _verify(out: Path, workers: int) -> int:
    ok, lines = verify_output(out, workers)
    print("\n".join(lines), file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    from fashion_tf.beam.pipeline import split_engine_args

    ours, beam_args = split_engine_args(argv)
    args = build_parser().parse_args(ours)
    if beam_args and args.engine != "beam":
        raise UserError("options after `--` go to Apache Beam: give --engine beam as well")
    if args.input is None:
        if not args.verify:
            raise UserError("--input is required (or --verify alone to check an existing --output-dir)")
        return _verify(args.output_dir, args.workers)
    options = options_from_args(args)
    info = _beam_engine().make_tfrecords(options, beam_args) if args.engine == "beam" else make_tfrecords(options)
    print(summary_text(info, args.output_dir))
    return _verify(args.output_dir, args.workers) if args.verify else 0
