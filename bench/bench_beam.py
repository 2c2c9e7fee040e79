"""The Beam engine against the local engine on this machine, side by side in one run, for download and sharding;
and make_tfrecords against a plain copy of the same files.

    python bench/bench_beam.py [--download-images 50000,200000] [--shard-images 50000,200000]
                               [--copy-images 100000] [--repeat 2] [--skip download,shards,copy]

1. download: --download-images image ids whose URLs point (through a query string) at the 7,168 real images
   served on 127.0.0.1 by fashion_tf.testserver; tools/download_images.py with --processes 2 --workers 16, against
   --engine beam on the DirectRunner with 2 worker processes and --workers 8 each; outputs on a RAM file system.
2. shards: make_tfrecords of a --shard-images download folder (a manifest whose ids cycle through the real
   images) with --workers 2, against --engine beam on the DirectRunner with 2 worker processes.
3. copy: make_tfrecords of --copy-images images (whole command: process start, imports, split, writing)
   against a plain copy of the same files (shutil.copyfile of each, one after another), and its peak memory.
The engines alternate, --repeat times. Ratios are throughputs (the local engine's or the copy's time divided by
the other's); "beam - local" is the median extra wall time of a Beam job, which two sizes show to be fixed. Results: bench/results/beam.json and beam.md (printed too).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fashion_tf.manifest import ManifestWriter, images_dir, manifest_path  # noqa: E402
from fashion_tf.testserver import serve_folder  # noqa: E402

DATA = Path(os.environ.get("FASHION_PRODUCTS_DIR", REPO.parent / "shared/data/fashion-products"))
RESULTS = REPO / "bench" / "results"
TWO_WORKER_PROCESSES = ["--runner=DirectRunner", "--direct_num_workers=2", "--direct_running_mode=multi_processing"]


def real_images() -> list[tuple[str, list[str]]]:
    """(image id, label ids) of the real catalogue, in file order."""
    train = json.loads((DATA / "train.json").read_text(encoding="utf-8"))
    labels = {a["imageId"]: a["labelId"] for a in train["annotations"]}
    return [(image["imageId"], labels.get(image["imageId"], [])) for image in train["images"]]


def download_input(work: Path, base_url: str, count: int) -> Path:
    images = real_images()
    entries, annotations = [], []
    for n in range(count):
        image_id, labels = images[n % len(images)]
        entries.append({"url": f"{base_url}/images/{image_id}.jpg?n={n}", "imageId": f"{image_id}-{n}"})
        annotations.append({"labelId": labels, "imageId": f"{image_id}-{n}"})
    path = work / f"download-{count}.json"
    path.write_text(json.dumps({"images": entries, "annotations": annotations}), encoding="utf-8")
    return path


# Runs the command and writes [exit code, CPU s, peak RSS KB] of its process tree. A small launcher, because Linux
# carries a forking parent's RSS over into the child's ru_maxrss, and this benchmark's own process is large.
LAUNCHER = ("import json, resource, subprocess, sys; rc = subprocess.call(sys.argv[2:]); "
            "u = resource.getrusage(resource.RUSAGE_CHILDREN); "
            "open(sys.argv[1], 'w').write(json.dumps([rc, u.ru_utime + u.ru_stime, u.ru_maxrss])); sys.exit(rc)")


def timed(command: list[str], log: Path) -> dict:
    """Wall seconds, CPU seconds of the command and its children, and the peak RSS of the largest of them."""
    usage = log.with_suffix(".usage.json")
    started = time.perf_counter()
    with open(log, "w") as handle:
        subprocess.run([sys.executable, "-c", LAUNCHER, str(usage), *command], cwd=REPO, stdout=handle,
                       stderr=subprocess.STDOUT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    wall = time.perf_counter() - started
    returncode, cpu, peak_kb = json.loads(usage.read_text())
    if returncode != 0:
        raise SystemExit(f"failed ({' '.join(command)}); see {log}:\n{log.read_text()[-2000:]}")
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "peak_rss_mb": round(peak_kb / 1024, 1)}


def bench_download(work: Path, outputs: Path, count: int, repeat: int) -> dict:
    runs: dict[str, list] = {"local": [], "beam": []}
    with serve_folder(DATA) as server:
        source = download_input(work, server.base_url, count)
        for round_index in range(repeat):
            for engine in ("local", "beam"):
                out = outputs / f"download-{engine}-{round_index}"
                command = [sys.executable, "tools/download_images.py", "--input", str(source), "--output-dir", str(out),
                           "--no-progress"]
                if engine == "local":
                    command += ["--workers", "16", "--processes", "2"]
                else:
                    command += ["--workers", "8", "--engine", "beam", "--", *TWO_WORKER_PROCESSES]
                result = timed(command, work / f"download-{engine}-{round_index}.log")
                result["images_per_s"] = round(count / result["wall_s"], 1)
                runs[engine].append(result)
                print(f"download {engine} round {round_index + 1}: {result}", flush=True)
                shutil.rmtree(out, ignore_errors=True)
    return summarize(runs, "images", count)


def shard_input(work: Path, count: int) -> Path:
    """A download folder of `count` rows whose ids cycle through the real images (their files, not copies)."""
    folder = work / f"download-folder-{count}"
    images_dir(folder).mkdir(parents=True, exist_ok=True)
    with ManifestWriter(manifest_path(folder)) as writer:
        for n, (image_id, labels) in enumerate(real_images() * (count // 7168 + 1)):
            if n >= count:
                break
            link = images_dir(folder) / f"{image_id}.jpg"
            if not link.exists():
                link.symlink_to(DATA / "images" / f"{image_id}.jpg")
            writer.write({"image_id": f"{image_id}-{n}", "status": "ok", "path": f"images/{image_id}.jpg",
                          "labels": labels})
    return folder


def make_tfrecords_command(folder: Path, out: Path, engine: str) -> list[str]:
    command = [sys.executable, "tools/make_tfrecords.py", "--input", str(folder), "--label-map",
               str(DATA / "label_map.csv"), "--output-dir", str(out), "--val-fraction", "0.1", "--workers", "2"]
    return command + (["--engine", "beam", "--", *TWO_WORKER_PROCESSES] if engine == "beam" else [])


def bench_shards(work: Path, outputs: Path, count: int, repeat: int) -> dict:
    folder = shard_input(work, count)
    runs: dict[str, list] = {"local": [], "beam": []}
    for round_index in range(repeat):
        for engine in ("local", "beam"):
            out = outputs / f"shards-{engine}-{round_index}"
            result = timed(make_tfrecords_command(folder, out, engine), work / f"shards-{engine}-{round_index}.log")
            result["images_per_s"] = round(count / result["wall_s"], 1)
            runs[engine].append(result)
            print(f"shards {engine} round {round_index + 1}: {result}", flush=True)
            shutil.rmtree(out, ignore_errors=True)
    return summarize(runs, "images", count)


def plain_copy(files: list[Path], dest: Path) -> float:
    """shutil.copyfile of every file, one after another (what `cp -r` does)."""
    dest.mkdir(parents=True)
    started = time.perf_counter()
    for index, file in enumerate(files):
        shutil.copyfile(file, dest / f"{index}.jpg")
    return time.perf_counter() - started


def bench_copy(work: Path, outputs: Path, count: int, repeat: int) -> dict:
    folder = shard_input(work, count)
    files = [(folder / "images" / f"{image_id}.jpg").resolve() for image_id, _ in real_images()]
    files = (files * (count // len(files) + 1))[:count]
    megabytes = sum(f.stat().st_size for f in files) / 2**20
    runs: dict[str, list] = {"copy": [], "make_tfrecords": []}
    for round_index in range(repeat):
        dest = outputs / f"copy-{round_index}"
        seconds = plain_copy(files, dest)
        runs["copy"].append({"wall_s": round(seconds, 2), "mb_per_s": round(megabytes / seconds, 1)})
        print(f"copy round {round_index + 1}: {runs['copy'][-1]}", flush=True)
        shutil.rmtree(dest, ignore_errors=True)
        out = outputs / f"copy-shards-{round_index}"
        result = timed(make_tfrecords_command(folder, out, "local"), work / f"copy-shards-{round_index}.log")
        result["mb_per_s"] = round(megabytes / result["wall_s"], 1)
        runs["make_tfrecords"].append(result)
        print(f"make_tfrecords round {round_index + 1}: {result}", flush=True)
        shutil.rmtree(out, ignore_errors=True)
    ratios = sorted(c["wall_s"] / m["wall_s"] for c, m in zip(runs["copy"], runs["make_tfrecords"]))
    return {"images": count, "mb": round(megabytes, 1), "runs": runs,
            "ratio_runs": [round(r, 3) for r in ratios], "ratio": round(ratios[len(ratios) // 2], 3),
            "peak_rss_mb": max(run["peak_rss_mb"] for run in runs["make_tfrecords"])}


def summarize(runs: dict, unit: str, count: int) -> dict:
    ratios = sorted(local["wall_s"] / beam["wall_s"] for local, beam in zip(runs["local"], runs["beam"]))
    extra = sorted(beam["wall_s"] - local["wall_s"] for local, beam in zip(runs["local"], runs["beam"]))
    return {unit: count, "runs": runs, "ratio_runs": [round(r, 3) for r in ratios],
            "beam_throughput_over_local": round(ratios[len(ratios) // 2], 3),
            "beam_extra_s": round(extra[len(extra) // 2], 2)}


def markdown(results: dict) -> str:
    lines = ["# Beam engine vs local engine (`python bench/bench_beam.py`)", "",
             f"{results['date']}, {results['cpus']} CPUs; engines alternate, {results['repeat']} rounds.", "",
             "| stage | images | local wall s | beam wall s | beam - local, s | beam throughput / local |",
             "|---|---|---|---|---|---|"]
    for stage in ("download", "shards"):
        for r in results.get(stage, []):
            local = ", ".join(str(run["wall_s"]) for run in r["runs"]["local"])
            beam = ", ".join(str(run["wall_s"]) for run in r["runs"]["beam"])
            lines.append(f"| {stage} | {r['images']:,} | {local} | {beam} | {r['beam_extra_s']} | "
                         f"**{r['beam_throughput_over_local']}x** (rounds {r['ratio_runs']}) |")
    if "copy" in results:
        r = results["copy"]
        copy = ", ".join(str(run["wall_s"]) for run in r["runs"]["copy"])
        ours = ", ".join(str(run["wall_s"]) for run in r["runs"]["make_tfrecords"])
        lines += ["", f"make_tfrecords of {r['images']:,} images ({r['mb']:,} MB), the whole command, against a plain "
                      f"copy of the same files: copy {copy} s, make_tfrecords {ours} s: **{r['ratio']}x** a plain copy's "
                      f"throughput (rounds {r['ratio_runs']}); peak RSS {r['peak_rss_mb']:,} MB."]
    return "\n".join(lines) + "\n"


def sizes(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--download-images", type=sizes, default="50000,200000",
                        help="images of the download comparison (a comma list: one comparison each)")
    parser.add_argument("--shard-images", type=sizes, default="50000,200000",
                        help="images of the sharding comparison (a comma list: one comparison each)")
    parser.add_argument("--copy-images", type=int, default=100_000, help="images of the make_tfrecords vs copy run")
    parser.add_argument("--repeat", type=int, default=2, help="rounds, engines alternating")
    parser.add_argument("--skip", default="", help="comma list of download, shards, copy")
    args = parser.parse_args(argv)
    if not (DATA / "train.json").is_file():
        print(f"error: {DATA}/train.json not found (set FASHION_PRODUCTS_DIR)", file=sys.stderr)
        return 2
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    shm = Path("/dev/shm")
    work = Path(tempfile.mkdtemp(prefix="fashion_tf_bench_beam_"))
    outputs = Path(tempfile.mkdtemp(prefix="fashion_tf_bench_beam_out_", dir=shm if shm.is_dir() else None))
    results = {"date": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(), "repeat": args.repeat}
    try:
        if "download" not in skip:
            results["download"] = [bench_download(work, outputs, n, args.repeat) for n in args.download_images]
        if "shards" not in skip:
            results["shards"] = [bench_shards(work, outputs, n, args.repeat) for n in args.shard_images]
        if "copy" not in skip:
            results["copy"] = bench_copy(work, outputs, args.copy_images, args.repeat)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(outputs, ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "beam.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "beam.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
