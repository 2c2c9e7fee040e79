"""Benchmark the image downloader against img2dataset 1.47.0, and the source reader's memory.

    python bench/bench_download.py [--workers 16] [--processes CPUS] [--limit 0] [--repeat 3] [--skip-sources]
                                   [--skip-img2dataset] [--output-root DIR]

1. Serves ../shared/data/fashion-products/images on 127.0.0.1 with a fault mix (per 50 images:
   1 is 404, 1 answers 503 twice (Retry-After: 1) then the image, 1 cuts its body short once,
   1 is an HTML page, 1 is random bytes, 1 is reachable only through a second URL after a dead
   first one), then in one run downloads the same images with the same concurrency (--workers
   downloads at once split over --processes processes, by default one per CPU: img2dataset's
   threads, fashion_tf's libcurl transfers) using
   tools/download_images.py and img2dataset 1.47.0 (installed on first use into its own venv,
   bench/results/.venv-img2dataset, git-ignored). img2dataset takes one URL per image, so it gets
   the first URL. Both outputs are checked image by image against the originals: an image is
   "recovered" when it decodes fully and its pixels match the original; any other output file is
   a "broken file accepted". Each run reports wall time, the tool's CPU (client) and this
   process's CPU meanwhile (the server's: it runs in threads here), per image. The server's file
   cache is filled before the first run, and the tools write to a RAM file system (see
   default_output_root for why).
2. Peak RSS and timing of fashion_tf.sources over a synthetic 1,014,544-image Fashion-2018 JSON
   (generated under /tmp, never committed): the whole file and a 1/300 share, plus the time to the
   first record of the share (labels joined, and streaming with labels loading beside it).

Results: bench/results/download.json and download.md (printed too).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fashion_tf.testserver import Fault, serve_folder  # noqa: E402

DATA = Path(os.environ.get("FASHION_PRODUCTS_DIR", REPO.parent / "shared/data/fashion-products"))
RESULTS = REPO / "bench" / "results"
IMG2DATASET_VENV = RESULTS / ".venv-img2dataset"
SYNTHETIC_JSON = Path("/tmp/fashion_tf_bench_train_1014544.json")
SYNTHETIC_IMAGES = 1_014_544
FAULT_KINDS = ["http_404", "503_twice", "cut_once", "html", "random_bytes", "second_url_only"]
RECOVERABLE = {"none", "503_twice", "cut_once", "second_url_only"}
# img2dataset imports albumentations, which otherwise looks up its latest version online in every process.
QUIET_ENV = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}


def fault_kind(position: int) -> str:
    slot = position % 50
    return FAULT_KINDS[slot] if slot < len(FAULT_KINDS) else "none"


def build_input(work: Path, base_url: str, limit: int) -> tuple[Path, Path, dict[str, str], dict[str, Fault]]:
    """Our JSON (with fallback URLs), img2dataset's CSV (first URL only), each id's fault, the server's faults."""
    train = json.loads((DATA / "train.json").read_text(encoding="utf-8"))
    images = train["images"][: limit or None]
    kinds, faults, entries, rows = {}, {}, [], ["url,image_id"]
    for position, entry in enumerate(images):
        image_id = entry["imageId"]
        kind = fault_kind(position)
        kinds[image_id] = kind
        path = f"/images/{image_id}.jpg"
        urls = [base_url + path]
        if kind == "http_404":
            faults[path] = Fault(status=404)
        elif kind == "503_twice":
            faults[path] = Fault(fail_times=2, fail_status=503, retry_after="1")
        elif kind == "cut_once":
            faults[path] = Fault(truncate="once")
        elif kind == "html":
            faults[path] = Fault.html()
        elif kind == "random_bytes":
            faults[path] = Fault.random_bytes(20_000, seed=position)
        elif kind == "second_url_only":
            urls = [f"{base_url}/dead/{image_id}.jpg", base_url + path]
        entries.append({"url": urls if len(urls) > 1 else urls[0], "imageId": image_id})
        rows.append(f"{urls[0]},{image_id}")
    wanted = set(kinds)
    annotations = [a for a in train["annotations"] if a["imageId"] in wanted]
    ours = work / "input.json"
    ours.write_text(json.dumps({"images": entries, "annotations": annotations}), encoding="utf-8")
    theirs = work / "input.csv"
    theirs.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return ours, theirs, kinds, faults


def ensure_img2dataset() -> Path:
    binary = IMG2DATASET_VENV / "bin" / "img2dataset"
    if not binary.exists():
        print(f"installing img2dataset 1.47.0 into {IMG2DATASET_VENV} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(IMG2DATASET_VENV)], check=True)
        subprocess.run([str(IMG2DATASET_VENV / "bin" / "pip"), "install", "-q", "img2dataset==1.47.0"], check=True)
    return binary


def timed(command: list[str], log: Path) -> tuple[float, float, float]:
    """Wall seconds, the client's CPU seconds and the server's CPU seconds during the command.

    Client: user + system of the command and every process it waited for. Server: user + system
    of this process over the same span; the loopback server runs in its threads while the main
    thread only waits, so this is what serving the tool cost. Both are steadier than wall time on
    a shared machine, and the server's figure shows whether the server, not the tool, was the limit."""
    children_before, self_before = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    with open(log, "w") as handle:
        result = subprocess.run(command, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT, env=QUIET_ENV)
    elapsed = time.monotonic() - started
    children_after, self_after = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
    if result.returncode != 0:
        raise SystemExit(f"{command[0]} failed (exit {result.returncode}); see {log}")
    return elapsed, _cpu_seconds(children_before, children_after), _cpu_seconds(self_before, self_after)


def _cpu_seconds(before: resource.struct_rusage, after: resource.struct_rusage) -> float:
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def judge(outputs: dict[str, list[Path]], kinds: dict[str, str]) -> dict:
    """Recovered = decodes fully and matches the original's pixels; every other output file is broken."""
    import numpy as np
    from PIL import Image

    recovered, broken, examples = set(), 0, []
    for image_id, files in outputs.items():
        original = DATA / "images" / f"{image_id}.jpg"
        for path in files:
            data = path.read_bytes()
            good = original.is_file() and data == original.read_bytes()
            if not good and original.is_file():
                try:
                    with Image.open(path) as produced, Image.open(original) as source:
                        produced.load()
                        a = np.asarray(produced.convert("RGB"), dtype=np.int16)
                        b = np.asarray(source.convert("RGB"), dtype=np.int16)
                        good = a.shape == b.shape and float(np.abs(a - b).mean()) < 2.0
                except Exception:
                    good = False
            if good:
                recovered.add(image_id)
            else:
                broken += 1
                if len(examples) < 5:
                    examples.append(f"{image_id} ({kinds.get(image_id)})")
    recoverable = {i for i, kind in kinds.items() if kind in RECOVERABLE}
    by_kind = {kind: sum(1 for i in recovered if kinds[i] == kind) for kind in sorted(set(kinds.values()))}
    return {
        "recovered": len(recovered),
        "recoverable": len(recoverable),
        "recoverable_missed": len(recoverable - recovered),
        "recovered_by_fault": by_kind,
        "broken_files_accepted": broken,
        "broken_examples": examples,
    }


def run_ours(work: Path, outputs_dir: Path, source: Path, workers: int, processes: int, images: int, repeat: int = 0) -> tuple[tuple[float, float, float], dict]:
    out = outputs_dir / f"ours_{repeat}"
    command = [sys.executable, str(REPO / "tools" / "download_images.py"), "--input", str(source), "--output-dir", str(out),
               "--workers", str(workers), "--processes", str(processes), "--retries", "2", "--timeout", "10", "--no-progress",
               "--summary-json", str(work / "ours_summary.json")]
    timing = timed(command, work / "ours.log")
    outputs: dict[str, list[Path]] = {}
    for line in (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row["status"] == "ok":
            outputs.setdefault(row["image_id"], []).append(out / row["path"])
    return timing, outputs


def run_img2dataset(work: Path, outputs_dir: Path, source: Path, workers: int, processes: int, images: int, repeat: int = 0) -> tuple[tuple[float, float, float], dict]:
    binary = ensure_img2dataset()
    out = outputs_dir / f"img2dataset_{repeat}"
    command = [str(binary), "--url_list", str(source), "--input_format", "csv", "--url_col", "url",
               "--save_additional_columns", '["image_id"]', "--output_folder", str(out), "--output_format", "files",
               "--processes_count", str(processes), "--thread_count", str(workers // processes),
               "--number_sample_per_shard", str(-(-images // processes)), "--resize_mode", "no",  # one shard per process
               "--skip_reencode", "True", "--retries", "2", "--timeout", "10", "--extract_exif", "False",
               "--disallowed_header_directives", "[]"]
    timing = timed(command, work / "img2dataset.log")
    outputs: dict[str, list[Path]] = {}
    for meta in out.glob("*/*.json"):
        row = json.loads(meta.read_text(encoding="utf-8"))
        image = meta.with_suffix(".jpg")
        if row.get("status") == "success" and image.exists():
            outputs.setdefault(str(row["image_id"]), []).append(image)
    return timing, outputs


def default_output_root() -> Path | None:
    """A RAM file system when there is one (None: the system's temporary folder).

    The tools' outputs do not go to this machine's disk by default: its ext4 has no journal, and
    ext4 without one scans past every inode freed in the last ~30 s before it reuses one
    (find_inode_bit/recently_deleted). After any mass delete, this benchmark's own between runs or
    another job's, creating files then cost up to 24% of fashion_tf's CPU (perf) and more for
    img2dataset, which writes two files per image: the disk's state, not the downloaders, set the
    times. All outputs are also kept until the end, so no timed run follows a mass delete."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else None


def warm_server_cache(base_url: str, kinds: dict[str, str]) -> None:
    """Fetch every image once, so that no tool's run pays for reading the originals from disk."""
    import http.client
    import urllib.parse

    address = urllib.parse.urlsplit(base_url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    for image_id in kinds:
        connection.request("GET", f"/images/{image_id}.jpg")
        connection.getresponse().read()
    connection.close()


def bench_downloaders(args) -> dict:
    work = Path(tempfile.mkdtemp(prefix="fashion_tf_bench_download_"))  # /tmp is shared: a name of our own
    outputs_dir = Path(tempfile.mkdtemp(prefix="fashion_tf_bench_outputs_", dir=args.output_root))
    results: dict = {"workers": args.workers, "processes": args.processes, "outputs_on": _file_system(outputs_dir)}
    with serve_folder(DATA) as server:
        ours_input, their_input, kinds, faults = build_input(work, server.base_url, args.limit)
        warm_server_cache(server.base_url, kinds)
        server.add_faults(faults)
        results["images"] = len(kinds)
        results["faults"] = {kind: sum(1 for k in kinds.values() if k == kind) for kind in ["none", *FAULT_KINDS]}
        print(f"{len(kinds)} images, faults {results['faults']}; {args.workers} workers each; outputs in {outputs_dir}", flush=True)
        runs = {"fashion_tf": [], "img2dataset": []}
        tools = [("fashion_tf", run_ours, ours_input)] + ([] if args.skip_img2dataset else [("img2dataset", run_img2dataset, their_input)])
        for repeat in range(args.repeat):  # alternate the tools so that a change of machine load hits both
            for tool, run, source in tools:
                server.reset()  # same faults for every run: 503 countdowns and cut-once restart
                (elapsed, cpu, server_cpu), outputs = run(work, outputs_dir, source, args.workers, args.processes, len(kinds), repeat)
                runs[tool].append({"wall_s": round(elapsed, 2), **_cpu_figures(cpu, server_cpu, len(kinds)), **judge(outputs, kinds)})
                print(f"{tool}:", runs[tool][-1], flush=True)
        for tool, tool_runs in runs.items():
            if tool_runs:
                worst = max(tool_runs, key=lambda run: (run["broken_files_accepted"], run["recoverable_missed"]))
                results[tool] = {**worst, **{key: value for figure in ("wall_s", "cpu_ms_per_image", "server_cpu_ms_per_image")
                                             for key, value in _median_and_runs(tool_runs, figure).items()}}
        if runs["img2dataset"]:
            for figure, name in (("wall_s", "wall"), ("cpu_s", "cpu")):
                ratios = sorted(a[figure] / b[figure] for a, b in zip(runs["fashion_tf"], runs["img2dataset"]))
                results[f"{name}_ratio_runs"] = [round(r, 3) for r in ratios]
                results[f"{name}_ratio_ours_over_img2dataset"] = round(ratios[len(ratios) // 2], 3)
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(outputs_dir, ignore_errors=True)
    return results


def _median_and_runs(runs: list[dict], figure: str) -> dict:
    values = [run[figure] for run in runs]
    return {figure: sorted(values)[len(values) // 2], f"{figure}_runs": values}


def _file_system(path: Path) -> str:
    """The type of the file system holding `path` (from /proc/mounts), or '?'."""
    best, kind = "", "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            _, mount_point, fs_type = line.split()[:3]
            if str(path.resolve()).startswith(mount_point.rstrip("/") + "/") and len(mount_point) > len(best):
                best, kind = mount_point, fs_type
    return kind


def _cpu_figures(cpu_s: float, server_cpu_s: float, images: int) -> dict:
    return {"cpu_s": round(cpu_s, 2), "cpu_ms_per_image": round(1000 * cpu_s / images, 3),
            "server_cpu_s": round(server_cpu_s, 2), "server_cpu_ms_per_image": round(1000 * server_cpu_s / images, 3)}


# ----------------------------------------------------------------------------- sources memory


def make_synthetic_json(path: Path, n: int = SYNTHETIC_IMAGES) -> None:
    """A Fashion-2018-shaped train.json: wish.com-like URLs, 3-9 labels of 228 per image."""
    if path.exists() and path.stat().st_size > 100_000_000:
        return
    rng = random.Random(0)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.partial")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write('{"images": [')
        for i in range(n):
            handle.write(('' if i == 0 else ', ') + '{"url": "https://contestimg.wish.com/api/webimage/%024x-large", "imageId": "%d"}'
                         % (rng.getrandbits(96), i + 1))
        handle.write('], "annotations": [')
        for i in range(n):
            labels = ", ".join('"%d"' % label for label in rng.sample(range(1, 229), rng.randint(3, 9)))
            handle.write(('' if i == 0 else ', ') + '{"labelId": [%s], "imageId": "%d"}' % (labels, i + 1))
        handle.write('], "license": {"url": "https://example.invalid", "name": "synthetic"}}')
    tmp.replace(path)


SOURCES_PROBE = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
from fashion_tf.sources import SourceReader, SourceStats, iter_source_records
path, shard, shards, mode = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
started = time.monotonic()
if mode == "joined":
    stats = SourceStats()
    records = iter_source_records(path, shard, shards, stats)
    next(records)
    first = time.monotonic() - started
    count = 1 + sum(1 for _ in records)
else:  # the downloader's way: stream images while annotations load in a thread
    reader = SourceReader(path, shard, shards)
    reader.start_loading_labels()
    records = reader.records(with_labels=False)
    next(records)
    first = time.monotonic() - started
    count = 1 + sum(1 for _ in records)
    reader.wait_for_labels()
    stats = reader.stats
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork+exec.
hwm_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"records": count, "first_record_s": round(first, 3), "total_s": round(time.monotonic() - started, 2),
                  "peak_rss_mb": round(hwm_kb / 1024, 1),
                  "images_in_file": stats.images_in_file}))
"""


def bench_sources() -> dict:
    started = time.monotonic()
    make_synthetic_json(SYNTHETIC_JSON)
    results = {"file": str(SYNTHETIC_JSON), "images": SYNTHETIC_IMAGES, "file_mb": round(SYNTHETIC_JSON.stat().st_size / 1e6, 1),
               "generate_s": round(time.monotonic() - started, 1)}
    baseline = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); import fashion_tf.sources;"
                               "print(next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:')) / 1024)", str(REPO)],
                              capture_output=True, text=True, check=True)
    results["interpreter_plus_imports_rss_mb"] = round(float(baseline.stdout), 1)
    for name, shard, shards, mode in [("full_joined", 0, 1, "joined"), ("share_1_of_300_joined", 7, 300, "joined"),
                                      ("full_streaming", 0, 1, "streaming"), ("share_1_of_300_streaming", 7, 300, "streaming")]:
        probe = subprocess.run([sys.executable, "-c", SOURCES_PROBE, str(REPO), str(SYNTHETIC_JSON), str(shard), str(shards), mode],
                               capture_output=True, text=True, check=True)
        results[name] = json.loads(probe.stdout)
        print(f"sources {name}: {results[name]}", flush=True)
    return results


def markdown(results: dict) -> str:
    lines = ["# bench_download", "", f"Command: `{results['command']}`  ", f"Machine: {results['machine']}", ""]
    d = results.get("download")
    if d:
        lines += [f"## Downloaders: {d['images']} images, {d['workers']} workers each in {d.get('processes', 1)} process(es), "
                  f"faults {d['faults']}", "",
                  f"Outputs written to a {d.get('outputs_on', '?')} file system (see `default_output_root`); "
                  "the loopback server runs in the benchmark process and serves both tools the same way.", "",
                  "| tool | median wall s (runs) | median client CPU ms/image (runs) | median server CPU ms/image (runs) "
                  "| recovered / recoverable (worst run) | recoverable missed | broken files accepted |",
                  "|---|---|---|---|---|---|---|"]
        for tool in ("fashion_tf", "img2dataset"):
            if tool in d:
                r = d[tool]
                lines.append(f"| {tool} | {_with_runs(r, 'wall_s')} | {_with_runs(r, 'cpu_ms_per_image')} "
                             f"| {_with_runs(r, 'server_cpu_ms_per_image')} | {r['recovered']} / {r['recoverable']} "
                             f"| {r['recoverable_missed']} | {r['broken_files_accepted']} |")
        if "wall_ratio_ours_over_img2dataset" in d:
            lines += ["", f"Wall time ratio fashion_tf / img2dataset, median of alternated pairs: "
                          f"**{d['wall_ratio_ours_over_img2dataset']}** (pairs {d['wall_ratio_runs']}; goal <= 0.5).",
                      f"Client CPU ratio (user + system of the tool's processes): "
                      f"**{d['cpu_ratio_ours_over_img2dataset']}** (pairs {d['cpu_ratio_runs']})."]
        lines += ["", "Server CPU is this process's user + system time during the tool's run: what answering it cost. "
                      "img2dataset opens a new connection per image; fashion_tf keeps its connections alive.",
                  "img2dataset reads one URL per image, so the images reachable only through a second URL are not recoverable for it."]
    s = results.get("sources")
    if s:
        lines += ["", f"## Sources: synthetic Fashion-2018 JSON, {s['images']} images, {s['file_mb']} MB", "",
                  "| pass | records | first record s | total s | peak RSS MB |", "|---|---|---|---|---|"]
        for key in ("full_joined", "share_1_of_300_joined", "full_streaming", "share_1_of_300_streaming"):
            r = s[key]
            lines.append(f"| {key} | {r['records']} | {r['first_record_s']} | {r['total_s']} | {r['peak_rss_mb']} |")
        lines += ["", f"Interpreter + imports alone: {s['interpreter_plus_imports_rss_mb']} MB."]
    return "\n".join(lines) + "\n"


def _with_runs(result: dict, figure: str) -> str:
    return f"{result[figure]} ({', '.join(map(str, result[figure + '_runs']))})"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--workers", type=int, default=16, help="downloads at once for both tools (img2dataset threads, fashion_tf transfers), in all their processes together")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1,
                        help="worker processes for both tools (fashion_tf --processes, img2dataset --processes_count)")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N images (0: all 7,168)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each tool, alternated; the median wall time is reported")
    parser.add_argument("--skip-img2dataset", action="store_true", help="run only our downloader")
    parser.add_argument("--skip-sources", action="store_true", help="skip the 1M-image source reader measurements")
    parser.add_argument("--skip-download", action="store_true", help="skip the downloader comparison")
    parser.add_argument("--output-root", type=Path, default=default_output_root(),
                        help="where the tools write their outputs (a RAM file system by default: see default_output_root)")
    args = parser.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    results = {"command": "python bench/bench_download.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "machine": f"{os.cpu_count()} CPUs, shared"}
    if not args.skip_download:
        if not (DATA / "images").is_dir():
            print(f"skipping the downloader comparison: {DATA} not present")
        else:
            results["download"] = bench_downloaders(args)
    if not args.skip_sources:
        results["sources"] = bench_sources()
    (RESULTS / "download.json").write_text(json.dumps(results, indent=2) + "\n")
    text = markdown(results)
    (RESULTS / "download.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
