"""Run every benchmark in bench/, one after another, and collect their markdown results.

    python bench/run_all.py [--only download,data,train] [--quick]

Each benchmark compares contenders side by side in one run and reports ratios (the machines are
shared and noisy, so only ratios from one run mean anything). They need the real catalogue in
../shared/data/fashion-products (FASHION_PRODUCTS_DIR), and the peers (img2dataset, TF Model
Garden) are installed by the benchmark itself into venvs of their own under bench/.
Results: bench/results/*.md and *.json.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
QUICK_ARGS = {
    "download": ["--repeat", "1", "--skip-sources"],
    "make_tfrecords": ["--big", "0", "--strat-rows", "20000"],
    "data": ["--sizes", "224", "--seconds", "8", "--rounds", "1", "--no-micro"],
    "threshold": ["--rows", "200000"],
    "train": ["--steps", "20", "--rounds", "1"],
    "beam": ["--download-images", "10000", "--shard-images", "10000", "--copy-images", "20000", "--repeat", "1"],
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(QUICK_ARGS), help="comma-separated benchmarks to run")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, one repetition (minutes, not an hour)")
    args = parser.parse_args(argv)
    failed = []
    for name in args.only.split(","):
        script = BENCH / f"bench_{name}.py"
        if not script.is_file():
            print(f"unknown benchmark {name!r} (no {script.name})", file=sys.stderr)
            return 2
        command = [sys.executable, str(script), *(QUICK_ARGS[name] if args.quick else [])]
        print(f"\n== {name}: {' '.join(command)}", flush=True)
        start = time.perf_counter()
        if subprocess.run(command).returncode != 0:
            failed.append(name)
        print(f"== {name}: {time.perf_counter() - start:.0f}s", flush=True)
    print(f"\nresults in {BENCH / 'results'}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
