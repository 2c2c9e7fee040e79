"""The whole pipeline end to end on the embedded synthetic set, with no network and no shared data.

generate -> serve on 127.0.0.1 -> download -> shards -> train -> thresholds -> evaluate -> predict,
each stage run as its own command, exactly as a user would type it. `make demo` runs this.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from fashion_tf.errors import UserError, run_cli
from fashion_tf.run_folder import RunFolder
from fashion_tf.shard_folder import ShardFolder

REPO = Path(__file__).resolve().parents[1]


def _stage_exists(module: str | None = None, script: str | None = None) -> bool:
    if script is not None:
        return (REPO / script).is_file()
    return importlib.util.find_spec(module) is not None


class Pipeline:
    """Runs stage commands in order, timing each, and skipping the stages that do not exist yet."""

    def __init__(self):
        self.times: dict[str, float] = {}
        self.skipped: list[str] = []

    def run(self, name: str, args: list[str], exists: bool) -> bool:
        if not exists:
            print(f"\n== {name}: not built yet, skipped", flush=True)
            self.skipped.append(name)
            return False
        print(f"\n== {name}: {' '.join(args)}", flush=True)
        start = time.perf_counter()
        # Quieter TensorFlow C++ logging: its start-up notices drown the stages' own progress lines.
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
        result = subprocess.run([sys.executable, *args], cwd=REPO, env=env)
        self.times[name] = time.perf_counter() - start
        if result.returncode != 0:
            raise UserError(f"demo stage '{name}' failed (exit {result.returncode}); its output is above")
        return True


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _summary(pipeline: Pipeline, run_dir: Path, tfrecords: Path, total: float) -> str:
    lines = ["", "== demo summary"]
    info = _read_json(ShardFolder(tfrecords).info_path)
    if info:
        counts = {name: split["num_examples"] for name, split in info["splits"].items()}
        lines.append(f"images in shards: {counts}, labels: {info['num_labels']}")
    report = _read_json(RunFolder(run_dir).threshold_report_json)
    if report:
        headline = report["headline"]
        lines.append(
            f"micro-F1 on {report['evaluation']}: at 0.5 {headline['at_0.5']['micro']['mean']:.4f}, "
            f"best global threshold {headline['best_global']['micro']['mean']:.4f}, "
            f"per-label thresholds {headline['per_label']['micro']['mean']:.4f}"
        )
    metrics = _read_json(RunFolder(run_dir).metrics_json)
    if metrics:
        for key in ("micro_f1", "macro_f1", "samples_f1", "mAP"):
            if key in metrics:
                lines.append(f"evaluate {key}: {metrics[key]:.4f}")
    lines.append("stage times: " + ", ".join(f"{k} {v:.0f}s" for k, v in pipeline.times.items()))
    if pipeline.skipped:
        lines.append("skipped (not built yet): " + ", ".join(pipeline.skipped))
    lines.append(f"run directory: {run_dir} (plots in {RunFolder(run_dir).plots}); total {total:.0f}s")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fashion_tf.demo",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--out", default="demo_out", help="working folder (recreated)")
    parser.add_argument("--n", type=int, default=1200, help="images in the synthetic set")
    parser.add_argument("--config", default="configs/demo.json", help="training config")
    parser.add_argument("--override", action="append", default=[], help="extra training config overrides")
    args = parser.parse_args(argv)

    out = (REPO / args.out).resolve()
    if out.exists():
        shutil.rmtree(out)
    source, download, tfrecords, run_dir = out / "source", out / "download", out / "tfrecords", out / "run"
    source.mkdir(parents=True)
    overrides = [f"data.tfrecords={tfrecords}", f"output_dir={run_dir}", *args.override]
    overrides = [item for pair in (("--override", o) for o in overrides) for item in pair]

    from fashion_tf.testserver import serve_folder

    start = time.perf_counter()
    pipeline = Pipeline()
    with serve_folder(source) as server:
        pipeline.run(
            "generate", ["-m", "fashion_tf.synthetic", "--out", str(source), "--n", str(args.n),
                         "--base-url", server.base_url], _stage_exists("fashion_tf.synthetic"))
        pipeline.run(
            "download", ["tools/download_images.py", "--input", str(source / "train.json"), "--output-dir",
                         str(download), "--workers", "8"], _stage_exists(script="tools/download_images.py"))
    pipeline.run(
        "shards", ["tools/make_tfrecords.py", "--input", str(download), "--label-map", str(source / "label_map.csv"),
                   "--output-dir", str(tfrecords), "--val-fraction", "0.2", "--shard-size-mb", "1"],
        _stage_exists(script="tools/make_tfrecords.py"))
    pipeline.run("train", ["-m", "fashion_tf.train", "--config", args.config, *overrides],
                 _stage_exists("fashion_tf.train"))
    pipeline.run("thresholds", ["-m", "fashion_tf.threshold_search", "--run-dir", str(run_dir), "--cv", "5"],
                 _stage_exists("fashion_tf.threshold_search"))
    pipeline.run("evaluate", ["-m", "fashion_tf.evaluate", "--run-dir", str(run_dir), "--data", str(tfrecords),
                              "--split", "validation"], _stage_exists("fashion_tf.evaluate"))
    sample_images = sorted((download / "images").glob("*.jpg"))[:3]
    pipeline.run("predict", ["-m", "fashion_tf.predict", "--run-dir", str(run_dir), *map(str, sample_images)],
                 _stage_exists("fashion_tf.predict") and bool(sample_images))
    print(_summary(pipeline, run_dir, tfrecords, time.perf_counter() - start))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
