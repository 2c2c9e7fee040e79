#!/usr/bin/env python
"""Training throughput (images/s) of the real training loop, precision and XLA variants side by side in one run.

    python bench/bench_train.py [--config configs/fashion_products.json] [--data SHARDS] [--steps 40]
                                [--rounds 3] [--variants off,bfloat16,off+xla,bfloat16+xla] [--sizes 128,160]

Each measure is one `fashion_tf.train` process with `train.epochs=1, train.steps_per_epoch=--steps` on the
real fashion-products shards: input pipeline, augmentation, model, loss and optimizer exactly as configured.
Its images/s is the run's own `train_images_per_second` (batch ends only: the first, tracing batch and the
validation pass are left out). Rounds interleave the variants, so load from other users hits all of them
alike; the figure is the median over rounds and the ratio is against the first variant at the first size.
On 2 CPU cores this is what decides how many epochs fit in a time budget.

Shards: --data, or made once from ../shared/data/fashion-products (FASHION_PRODUCTS_DIR) into --work-dir\n(bench_data.build_shards).
Results: bench/results/bench_train.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from bench_data import build_shards, data_dir  # noqa: E402  (the same cached shards as the data benchmark)


def measure(config: str, shards: Path, out: Path, precision: str, xla: bool, size: int, steps: int) -> float:
    overrides = {
        "data.tfrecords": str(shards), "output_dir": str(out), "data.image_size": size,
        "train.epochs": 1, "train.steps_per_epoch": steps, "train.mixed_precision": precision,
        "train.xla": str(xla).lower(), "train.restore_best": "false",
    }
    command = [sys.executable, "-m", "fashion_tf.train", "--config", config, "--overwrite"]
    for key, value in overrides.items():
        command += ["--override", f"{key}={value}"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"training failed ({' '.join(command)}):\n{done.stderr[-2000:]}")
    return float(json.loads((out / "summary.json").read_text())["train_images_per_second"])


def parse_variant(text: str) -> tuple[str, bool]:
    precision, _, extra = text.partition("+")
    if precision not in ("off", "bfloat16", "float16", "auto") or extra not in ("", "xla"):
        raise SystemExit(f"--variants: unknown variant {text!r} (precision[+xla], precision off|bfloat16|float16|auto)")
    return precision, extra == "xla"


def markdown(results: dict) -> str:
    lines = [
        "# Training throughput (`python bench/bench_train.py`)", "",
        f"Config {results['config']}, {results['steps']} steps of batch {results['batch_size']} per measure, "
        f"{results['rounds']} interleaved rounds, {results['cpus']} CPUs, {results['date']}.", "",
        "| variant | image size | images/s (median) | per round | ratio to the first |",
        "|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        lines.append(f"| {row['variant']} | {row['size']} | {row['median']:.0f} | "
                     f"{', '.join(f'{v:.0f}' for v in row['rounds'])} | {row['ratio']:.2f}x |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/fashion_products.json", help="training config (default: %(default)s)")
    parser.add_argument("--data", help="shard folder to read (default: made once from the catalogue into --work-dir)")
    parser.add_argument("--work-dir", default="/tmp/fashion_tf_bench_train", help="scratch folder (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=40, help="training steps per measure (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default: %(default)s)")
    parser.add_argument("--variants", default="off,bfloat16,off+xla",
                        help="comma-separated precision[+xla] variants (default: %(default)s)")
    parser.add_argument("--sizes", default="128", help="comma-separated image sizes (default: %(default)s)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results"), help="results folder (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.data is None and not (data_dir() / "train.json").is_file():
        print(f"error: {data_dir()} not found (set FASHION_PRODUCTS_DIR or pass --data)", file=sys.stderr)
        return 2
    work = Path(args.work_dir)
    shards = Path(args.data) if args.data else build_shards(data_dir(), work)[0]
    config = str(Path(args.config).resolve())
    batch_size = json.loads(Path(config).read_text()).get("data", {}).get("batch_size", 64)
    cases = [(variant, size) for size in map(int, args.sizes.split(",")) for variant in args.variants.split(",")]
    measured: dict = {case: [] for case in cases}
    for round_index in range(args.rounds):
        for variant, size in cases:
            precision, xla = parse_variant(variant)
            rate = measure(config, shards, work / "run", precision, xla, size, args.steps)
            measured[(variant, size)].append(rate)
            print(f"round {round_index + 1}: {variant} at {size} px: {rate:.0f} images/s", flush=True)
    reference = statistics.median(measured[cases[0]])
    rows = [{"variant": v, "size": s, "rounds": measured[(v, s)], "median": statistics.median(measured[(v, s)]),
             "ratio": statistics.median(measured[(v, s)]) / reference} for v, s in cases]
    results = {"config": args.config, "steps": args.steps, "batch_size": batch_size, "rounds": args.rounds,
               "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M"), "rows": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_train.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "bench_train.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
