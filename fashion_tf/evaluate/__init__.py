"""Evaluate a trained run on a TFRecord split: F1 / precision / recall / mAP, per label and per group, and plots.

    python -m fashion_tf.evaluate --run-dir RUN --data TFRECORDS --split validation [--group articleType]

Decisions use the run's thresholds.json (score >= threshold is positive; 0.5 for every label when the run
has none, which the output says). Writes RUN/metrics.json and RUN/metrics.md, and the plots of
fashion_tf.evaluate.figures in RUN/plots/. One concern per module: `scoring` (one pass of the model over the
split), `metrics` (the figures), `figures` (the plots), `report` (metrics.md and the summary line).
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from fashion_tf.errors import UserError
from fashion_tf.evaluate.figures import CONFUSION_MAX_CLASSES, default_group, write_plots
from fashion_tf.evaluate.metrics import compute_metrics
from fashion_tf.evaluate.report import metrics_markdown, summary_line
from fashion_tf.fileio import write_bytes_atomic, write_json_atomic
from fashion_tf.run_folder import Run, load_run
from fashion_tf.shard_folder import ShardFolder

GALLERY_SIZE = 16


@dataclass
class Options:
    run_dir: str | Path
    data: str | Path  # the shard folder
    split: str = "validation"
    thresholds: Optional[str | Path] = None  # None: RUN/thresholds.json, or 0.5 for every label without one
    group: Optional[str] = None  # the confusion matrix's and the PCA's group; None: the largest exclusive group
    batch_size: Optional[int] = None  # None: the run config's data.batch_size
    confusion_classes: int = CONFUSION_MAX_CLASSES
    gallery_size: int = GALLERY_SIZE

    def check(self) -> None:
        for name in ("batch_size", "confusion_classes"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
        if self.gallery_size < 0:
            raise UserError(f"--gallery-size must be >= 0, got {self.gallery_size}")


def evaluate(options: Options) -> dict:
    """Score the split, write metrics.json, metrics.md and the plots; returns the report (metrics.json)."""
    options.check()
    run = load_run(options.run_dir, options.thresholds)
    if options.group is not None:
        run.label_map.group_members(options.group)  # unknown group: one line now, before any work
    expected = check_data(run, Path(options.data), options.split)
    started = time.perf_counter()

    from fashion_tf.data import make_dataset
    from fashion_tf.evaluate.scoring import collect_predictions
    from fashion_tf.predict import load_model

    model = load_model(run)
    data_cfg = dataclasses.replace(run.config.data, tfrecords=str(options.data),
                                   batch_size=options.batch_size or run.config.data.batch_size)
    dataset = make_dataset(data_cfg, options.split, training=False, num_labels=run.num_labels, with_ids=True)
    predictions = collect_predictions(model, dataset, run.thresholds, options.gallery_size,
                                      math.ceil(expected / data_cfg.batch_size))
    report = {"run_dir": str(run.run_dir), "data": str(options.data), "split": options.split,
              "thresholds": run.thresholds_source}
    report.update(compute_metrics(predictions.scores, predictions.positive, run.thresholds, run.label_map))
    group = options.group or default_group(run.label_map, predictions.positive)
    plotted = write_plots(run, predictions, group, options.confusion_classes, options.split)
    report["plot_group"] = group
    report["plots"] = plotted["files"]
    report["plot_notes"] = plotted["notes"]
    report["inference_seconds"] = round(predictions.seconds, 3)
    write_json_atomic(run.folder.metrics_json, report)
    write_bytes_atomic(run.folder.metrics_md, metrics_markdown(report).encode("utf-8"))
    for note in plotted["notes"]:
        print(f"note: {note}", file=sys.stderr)
    print(summary_line(report, time.perf_counter() - started))
    return report


def check_data(run: Run, data_dir: Path, split: str) -> int:
    """The shard folder's split size; its label map must be the run's. No TensorFlow needed."""
    shards = ShardFolder(data_dir)
    count = shards.num_examples(split)
    if shards.label_map.ids != run.label_map.ids:
        raise UserError(f"{shards.label_map_path}: its {len(shards.label_map)} label ids differ from the run's "
                        f"{run.folder.label_map} ({len(run.label_map)} labels); evaluate with the shards "
                        "the run was trained on")
    return count
