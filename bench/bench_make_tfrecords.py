"""Benchmark of the TFRecord writer on the real fashion-products images.

    python bench/bench_make_tfrecords.py [--workers 1 2] [--big 100000] [--strat-rows 100000 1000000]

Measured side by side in one run, on the same files and the same disk (page cache warm for both):
1. plain copy: shutil.copyfile of every image into a fresh folder (the goal: writer >= 0.8x its MB/s);
2. make_tfrecords on train.json + images/ (the same bytes), write phase and whole run, per --workers;
3. where a writer's time goes, per image (read, header, sha256, serialize_example, RecordWriter: framing,
   crc32c and the shard's sha256 for its receipt);
4. peak RSS of a --big run (a generated manifest that points --big ids at the 7,168 files in turn),
   against the RSS of the 7k run, in subprocesses;
5. stratification time and peak memory at --strat-rows x 228 labels (synthetic iMaterialist-like skew).
Results: bench/results/make_tfrecords.json and .md (and printed).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from fashion_tf import schema  # noqa: E402
from fashion_tf.make_tfrecords import Options, make_tfrecords  # noqa: E402
from fashion_tf.make_tfrecords.writer import prepare_image  # noqa: E402
from fashion_tf.tfrecord import RecordWriter  # noqa: E402
from fashion_tf.manifest import IMAGES_DIR, images_dir, manifest_path  # noqa: E402

DATA = Path(os.environ.get("FASHION_PRODUCTS_DIR", REPO.parent / "shared/data/fashion-products"))
RESULTS = REPO / "bench" / "results"


def copy_baseline(files: list[Path], dest: Path) -> dict:
    dest.mkdir(parents=True)
    started = time.perf_counter()
    total = 0
    for file in files:
        shutil.copyfile(file, dest / file.name)
        total += file.stat().st_size
    seconds = time.perf_counter() - started
    return {"files": len(files), "mb": total / 2**20, "seconds": seconds, "mb_per_s": total / 2**20 / seconds}


def writer_run(workers: int, out: Path) -> dict:
    options = Options(input=DATA / "train.json", images=DATA / "images", label_map=DATA / "label_map.csv",
                      output_dir=out, workers=workers, tfds=False)
    started = time.perf_counter()
    info = make_tfrecords(options)
    total = time.perf_counter() - started
    s = info["summary"]
    return {
        "workers": workers,
        "images": sum(d["num_examples"] for d in info["splits"].values()),
        "image_mb": s["image_bytes_written"] / 2**20,
        "shard_mb": s["shard_bytes_written"] / 2**20,
        "write_seconds": s["seconds"],
        "write_mb_per_s": s["image_bytes_written"] / 2**20 / s["seconds"],
        "whole_run_seconds": total,
        "stratification_seconds": info["stratification"].get("seconds"),
    }


def per_image_costs(files: list[Path]) -> dict:
    """Microseconds per image of each step of the writer, on images already read once (page cache warm)."""
    datas = [f.read_bytes() for f in files]
    costs = {}

    def timed(name, fn):
        started = time.perf_counter()
        result = fn()
        costs[name] = (time.perf_counter() - started) / len(files) * 1e6
        return result

    timed("read_file_us", lambda: [f.read_bytes() for f in files])
    timed("header_check_us", lambda: [prepare_image(d, None) for d in datas])
    digests = timed("sha256_us", lambda: [hashlib.sha256(d).hexdigest() for d in datas])
    examples = timed("serialize_example_us", lambda: [
        schema.serialize_example(d, "jpeg", 224, 224, [3, 40, 90, 120, 150, 160, 165], "10001", h)
        for d, h in zip(datas, digests)])
    with tempfile.TemporaryDirectory(dir=RESULTS) as tmp:
        def write():
            with RecordWriter(Path(tmp) / "x.tfrecord") as writer:  # framing, crc32c, the shard's sha256
                for example in examples:
                    writer.write(example)
        timed("tfrecord_write_us", write)
    costs["mean_image_kb"] = float(np.mean([len(d) for d in datas]) / 1024)
    return {k: round(v, 1) for k, v in costs.items()}


def big_manifest(folder: Path, n: int) -> None:
    """n manifest rows over the real files in turn (distinct ids), with their real labels."""
    train = json.loads((DATA / "train.json").read_text())
    labels = {a["imageId"]: a["labelId"] for a in train["annotations"]}
    ids = sorted(labels, key=int)
    folder.mkdir(parents=True)
    images_dir(folder).symlink_to(DATA / "images")
    with open(manifest_path(folder), "w") as handle:
        for i in range(n):
            source = ids[i % len(ids)]
            handle.write(json.dumps({"image_id": f"{i}", "status": "ok", "path": f"{IMAGES_DIR}/{source}.jpg",
                                     "labels": labels[source]}) + "\n")


PEAK_RSS = "import re; print('PEAK_RSS_KB', re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1])"


def rss_run(argv: list[str]) -> dict:
    """Run the tool in a child that prints its own peak RSS (VmHWM: ru_maxrss would include the forked parent)."""
    code = (f"import sys; sys.argv = ['make_tfrecords.py'] + {argv!r}\n"
            "from fashion_tf.errors import run_cli\nfrom fashion_tf.make_tfrecords.cli import main\n"
            f"rc = run_cli(main)\n{PEAK_RSS}\nsys.exit(rc)")
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    if result.returncode != 0:
        raise SystemExit(f"run failed: {argv}: {result.stderr.strip().splitlines()[-1:]}")
    lines = result.stdout.strip().splitlines()
    return {"peak_rss_mb": round(int(lines[-1].split()[1]) / 1024), "seconds": round(time.perf_counter() - started, 1),
            "summary": lines[-2]}


def stratification_cost(rows: int, labels: int = 228, seed: int = 0) -> dict:
    """Time and peak RSS of the split alone, in a child process so the peak is its own."""
    code = f"""
import json, resource, time, numpy as np
from fashion_tf.make_tfrecords.split import stratified_assignment
rng = np.random.default_rng({seed})
freq = np.clip(0.35 / np.arange(1, {labels} + 1) ** 0.9, 2e-5, None)  # iMaterialist-like: few common, long tail
matrix = np.zeros(({rows}, {labels}), dtype=np.uint8)
for start in range(0, {rows}, 100000):
    block = rng.random((min(100000, {rows} - start), {labels}), dtype=np.float32) < freq
    matrix[start:start + block.shape[0]] = block
import re
hwm = lambda: round(int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read())[1]) / 1024)
base = hwm()
t = time.perf_counter()
folds = stratified_assignment(matrix, [0.9, 0.1], seed=0)
seconds = time.perf_counter() - t
totals = matrix.sum(0); val = matrix[folds == 1].sum(0)
share = val[totals >= 50] / totals[totals >= 50]
print(json.dumps({{"rows": {rows}, "labels": {labels}, "seconds": round(seconds, 1),
  "peak_rss_mb": hwm(), "rss_before_split_mb": base,
  "mean_labels_per_image": round(float(matrix.sum(1).mean()), 2),
  "val_share_labels_ge50": [round(float(share.min()), 4), round(float(share.max()), 4)],
  "labels_ge2_missing_from_a_split": int(((totals >= 2) & ((val == 0) | (val == totals))).sum())}}))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    if result.returncode:
        return {"rows": rows, "error": result.stderr.strip().splitlines()[-1]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--big", type=int, default=100_000, help="images in the peak-RSS run (0: skip)")
    parser.add_argument("--strat-rows", type=int, nargs="*", default=[100_000], help="rows of the split benchmark")
    args = parser.parse_args()
    if not (DATA / "train.json").is_file():
        print(f"fashion-products data set not found at {DATA}; nothing to benchmark")
        return 0
    RESULTS.mkdir(parents=True, exist_ok=True)
    files = sorted((DATA / "images").glob("*.jpg"))
    results: dict = {"data": str(DATA), "cpus": os.cpu_count(), "load_avg_start": os.getloadavg()}
    with tempfile.TemporaryDirectory(dir=RESULTS) as tmp:
        tmp = Path(tmp)
        writer_run(1, tmp / "warmup")  # warms the page cache for both contenders
        results["copy"] = copy_baseline(files, tmp / "copy")
        results["writer"] = []
        for workers in args.workers:
            results["writer"].append(writer_run(workers, tmp / f"w{workers}"))
        results["copy_again"] = copy_baseline(files, tmp / "copy2")  # the copy again: load drifts
        copy_rate = (results["copy"]["mb_per_s"] + results["copy_again"]["mb_per_s"]) / 2
        for run in results["writer"]:
            run["ratio_to_copy"] = round(run["write_mb_per_s"] / copy_rate, 3)
        results["per_image_costs"] = per_image_costs(files[:2000])
        results["rss_7k"] = rss_run(["--input", str(DATA / "train.json"), "--images", str(DATA / "images"),
                                     "--output-dir", str(tmp / "rss7k"), "--workers", "2", "--no-tfds"])
        if args.big:
            big_manifest(tmp / "big_input", args.big)
            results["rss_big"] = dict(images=args.big, **rss_run(
                ["--input", str(tmp / "big_input"), "--output-dir", str(tmp / "rss_big"), "--workers", "2",
                 "--no-tfds"]))
    results["stratification"] = [stratification_cost(rows) for rows in args.strat_rows]
    results["load_avg_end"] = os.getloadavg()
    (RESULTS / "make_tfrecords.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = ["# make_tfrecords benchmark", "", f"data: {DATA}, cpus {results['cpus']}, load average "
             f"{results['load_avg_start'][0]:.1f} -> {results['load_avg_end'][0]:.1f}", "",
             "| contender | MB/s | seconds | ratio to copy |", "| --- | --- | --- | --- |",
             f"| shutil.copyfile x{results['copy']['files']} | {results['copy']['mb_per_s']:.1f} / "
             f"{results['copy_again']['mb_per_s']:.1f} | {results['copy']['seconds']:.2f} / "
             f"{results['copy_again']['seconds']:.2f} | 1 |"]
    for run in results["writer"]:
        lines.append(f"| make_tfrecords write, {run['workers']} workers | {run['write_mb_per_s']:.1f} | "
                     f"{run['write_seconds']:.2f} (whole run {run['whole_run_seconds']:.1f}) | {run['ratio_to_copy']} |")
    lines += ["", f"per image (µs): {results['per_image_costs']}", "",
              f"peak RSS, 7k images: {results['rss_7k']['peak_rss_mb']:.0f} MB"]
    if "rss_big" in results:
        big = results["rss_big"]
        lines.append(f"peak RSS, {big['images']:,} images: {big['peak_rss_mb']:.0f} MB ({big['seconds']:.0f} s): "
                     f"{big['summary']}")
    for strat in results["stratification"]:
        lines.append(f"stratification: {strat}")
    text = "\n".join(lines) + "\n"
    (RESULTS / "make_tfrecords.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
