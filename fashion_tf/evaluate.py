"""Evaluate a trained run on a TFRecord split: F1 / precision / recall / mAP, per label and per group, and plots.

    python -m fashion_tf.evaluate --run-dir RUN --data TFRECORDS --split validation [--group articleType]

Decisions use the run's thresholds.json (score >= threshold is positive; 0.5 for every label when the run
has none, which the output says). Writes RUN/metrics.json and RUN/metrics.md, and in RUN/plots/:

- confusion_<group>.png: rows = true label, columns = highest-scoring label of the group, rows normalised.
  Only images with exactly one true label in the group count. Default group: the mutually exclusive group
  with the most labels; groups with more than --confusion-classes labels show the most frequent ones and an
  "(other classes)" column for predictions outside them.
- worst_misclassified.png: the images whose wrong decisions lie furthest on the wrong side of their
  thresholds (sum over wrong labels of |score - threshold|), with true and predicted label names.
- pca_<group>.png: the model's embedding (the input of its last Dense layer) projected on its first two
  principal components, coloured by the image's label in the group.

F1 figures come from fashion_tf.threshold_search.f1_scores (sklearn's zero_division=0 conventions: a label
with no positives and no predictions has F1 0 and macro averages run over every label). mAP is the mean of
sklearn's average_precision_score over the labels that have positives in the split. "Top-1 accuracy" of a
mutually exclusive group (no image has two of its labels): among images with a label of the group, how often
the group's highest score is that label.
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import itertools
import math
import re
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from fashion_tf.errors import UserError, run_cli
from fashion_tf.fileio import write_bytes_atomic, write_json_atomic
from fashion_tf.labels import LabelMap
from fashion_tf.shard_folder import ShardFolder
from fashion_tf.predict import load_model
from fashion_tf.run_folder import Run, RunFolder, load_run

GALLERY_SIZE = 16
CONFUSION_MAX_CLASSES = 30
PCA_MAX_POINTS = 5000
PCA_MAX_CLASSES = 10
PCA_SEED = 0


# ---------------------------------------------------------------------------- inference pass
@dataclass
class WorstImages:
    """The `size` images with the largest wrong-side threshold margin, kept while streaming (a min-heap)."""

    size: int
    heap: list = field(default_factory=list)
    counter: itertools.count = field(default_factory=itertools.count)

    def offer(self, images: np.ndarray, scores: np.ndarray, positive: np.ndarray, ids: Sequence[str], thresholds: np.ndarray) -> None:
        if self.size <= 0:
            return
        margins = error_margins(scores, positive, thresholds)
        for row in np.flatnonzero(margins > 0):
            item = (float(margins[row]), next(self.counter), ids[row],
                    np.clip(np.rint(images[row]), 0, 255).astype(np.uint8), scores[row].copy(), positive[row].copy())
            if len(self.heap) < self.size:
                heapq.heappush(self.heap, item)
            elif item[0] > self.heap[0][0]:
                heapq.heapreplace(self.heap, item)

    def worst_first(self) -> list:
        return sorted(self.heap, key=lambda item: (-item[0], item[1]))


def error_margins(scores: np.ndarray, positive: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Per image: sum over wrongly decided labels of how far the score is on the wrong side of the threshold.

    A missed label adds threshold - score, a false one score - threshold; a correct image scores 0.
    """
    predicted = scores >= thresholds
    distance = np.abs(scores - thresholds)
    return np.where(predicted != positive, distance, 0.0).sum(axis=1)


@dataclass
class Predictions:
    ids: list[str]
    scores: np.ndarray  # float32 [N, C]
    positive: np.ndarray  # bool [N, C]
    embeddings: np.ndarray | None  # float32 [N, D], None when the model's embedding could not be found
    worst: list  # WorstImages.worst_first()
    seconds: float


def embedding_tensor(model):
    """The symbolic input of the classifier's last Dense layer (the image embedding), or None.

    Works for our functional models (the head Dense is the last layer) and for a nested head sub-model
    (its input is then the embedding).
    """
    import keras

    last = model.layers[-1]
    if isinstance(last, keras.Model):
        return last.input
    for layer in reversed(model.layers):
        if isinstance(layer, keras.layers.Dense):
            return layer.input
    return None


def scores_and_embeddings_model(model):
    """(model, has_embeddings): a model returning [scores, embeddings], or the model itself when there is none."""
    import keras

    try:
        features = embedding_tensor(model)
        if features is not None:
            return keras.Model(model.inputs, [model.outputs[0], features]), True
    except (ValueError, AttributeError) as err:  # a subclassed model has no graph to cut
        print(f"note: no embedding for the PCA plot ({type(err).__name__}: {err})", file=sys.stderr)
    return model, False


def collect_predictions(model, dataset, thresholds: np.ndarray, gallery_size: int, total_batches: int | None) -> Predictions:
    """One pass over the dataset: scores, true labels, ids, embeddings, and the worst images' pixels."""
    from tqdm import tqdm

    from fashion_tf.inference import batches

    features_model, has_embeddings = scores_and_embeddings_model(model)
    ids: list[str] = []
    scores, positive, embeddings = [], [], []
    worst = WorstImages(gallery_size)
    start = time.perf_counter()
    for batch in tqdm(batches(features_model, dataset), total=total_batches, unit="batch", desc="evaluate",
                      file=sys.stderr, disable=None):
        batch_scores = np.asarray(batch.outputs[0] if has_embeddings else batch.outputs, dtype=np.float32)
        batch_positive = batch.labels > 0.5
        scores.append(batch_scores)
        positive.append(batch_positive)
        ids.extend(batch.ids)
        if has_embeddings:
            embeddings.append(np.asarray(batch.outputs[1], dtype=np.float32).reshape(len(batch_scores), -1))
        worst.offer(batch.images.numpy(), batch_scores, batch_positive, batch.ids, thresholds)
    seconds = time.perf_counter() - start
    if not ids:
        raise UserError("the split has no images to evaluate")
    return Predictions(
        ids=ids,
        scores=np.concatenate(scores),
        positive=np.concatenate(positive),
        embeddings=np.concatenate(embeddings) if has_embeddings else None,
        worst=worst.worst_first(),
        seconds=seconds,
    )


# ---------------------------------------------------------------------------- metrics
def _ratio(num, den) -> float:
    return float(num) / float(den) if den else 0.0


def average_precisions(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """Per-label average precision (sklearn); NaN for labels without positives in the split."""
    from sklearn.metrics import average_precision_score

    ap = np.full(scores.shape[1], np.nan)
    for label in np.flatnonzero(positive.any(axis=0)):
        ap[label] = average_precision_score(positive[:, label], scores[:, label])
    return ap


def samples_precision_recall(predicted: np.ndarray, positive: np.ndarray) -> tuple[float, float]:
    """Mean per-image precision and recall (0 for an image with no predictions / no true labels)."""
    hits = np.count_nonzero(predicted & positive, axis=1)
    n_pred = np.count_nonzero(predicted, axis=1)
    n_true = np.count_nonzero(positive, axis=1)
    precision = np.divide(hits, n_pred, out=np.zeros(len(hits)), where=n_pred > 0)
    recall = np.divide(hits, n_true, out=np.zeros(len(hits)), where=n_true > 0)
    return float(precision.mean()), float(recall.mean())


def exclusive_top1(scores: np.ndarray, positive: np.ndarray, label_map: LabelMap) -> dict[str, dict]:
    """Top-1 accuracy inside every mutually exclusive group: {group: {"accuracy", "images"}}."""
    result = {}
    for group in label_map.exclusive_groups(positive):
        members = label_map.group_members(group)
        has_label = positive[:, members].any(axis=1)
        images = int(has_label.sum())
        if images == 0:
            result[group] = {"accuracy": None, "images": 0}
            continue
        true = np.argmax(positive[has_label][:, members], axis=1)
        best = np.argmax(scores[has_label][:, members], axis=1)
        result[group] = {"accuracy": float(np.mean(true == best)), "images": images}
    return result


def compute_metrics(scores: np.ndarray, positive: np.ndarray, thresholds: np.ndarray, label_map: LabelMap) -> dict:
    """Every number of metrics.json except run/plot bookkeeping."""
    from fashion_tf.threshold_search import apply_thresholds, f1_scores

    positive = positive.astype(bool)
    fit = f1_scores(scores, positive, thresholds)
    predicted = apply_thresholds(scores, thresholds)
    tp, fp, fn = (np.asarray(fit[k], np.int64) for k in ("tp", "fp", "fn"))
    ap = average_precisions(scores, positive)
    samples_precision, samples_recall = samples_precision_recall(predicted, positive)
    top1 = exclusive_top1(scores, positive, label_map)
    label_rows = [
        {
            "index": i, "id": label_map.ids[i], "name": label_map.names[i], "group": label_map.groups[i],
            "support": int(fit["support"][i]), "predicted": int(fit["predicted"][i]),
            "threshold": float(thresholds[i]), "precision": float(fit["precision"][i]),
            "recall": float(fit["recall"][i]), "f1": float(fit["f1"][i]),
            "average_precision": None if math.isnan(ap[i]) else float(ap[i]),
        }
        for i in range(len(label_map))
    ]
    group_rows = []
    for group in label_map.group_names():
        members = label_map.group_members(group)
        g_tp, g_fp, g_fn = int(tp[members].sum()), int(fp[members].sum()), int(fn[members].sum())
        group_ap = ap[members][~np.isnan(ap[members])]
        group_rows.append({
            "group": group, "labels": int(len(members)),
            "images": int(positive[:, members].any(axis=1).sum()),
            "support": int(fit["support"][members].sum()),
            "micro_precision": _ratio(g_tp, g_tp + g_fp), "micro_recall": _ratio(g_tp, g_tp + g_fn),
            "micro_f1": _ratio(2 * g_tp, 2 * g_tp + g_fp + g_fn),
            "macro_f1": float(np.mean(fit["f1"][members])),
            "mAP": float(group_ap.mean()) if group_ap.size else None,
            "exclusive": group in top1,
            "top1_accuracy": top1[group]["accuracy"] if group in top1 else None,
        })
    labels_with_positives = ~np.isnan(ap)
    return {
        "num_images": int(scores.shape[0]),
        "num_labels": int(scores.shape[1]),
        "micro_f1": float(fit["micro"]),
        "macro_f1": float(fit["macro"]),
        "samples_f1": float(fit["samples"]),
        "micro_precision": _ratio(tp.sum(), tp.sum() + fp.sum()),
        "micro_recall": _ratio(tp.sum(), tp.sum() + fn.sum()),
        "macro_precision": float(np.mean(fit["precision"])),
        "macro_recall": float(np.mean(fit["recall"])),
        "samples_precision": samples_precision,
        "samples_recall": samples_recall,
        "mAP": float(ap[labels_with_positives].mean()) if labels_with_positives.any() else None,
        "mAP_labels": int(labels_with_positives.sum()),
        "labels_without_positives": int((~labels_with_positives).sum()),
        "top1_accuracy": top1,
        "groups": group_rows,
        "labels": label_rows,
    }


# ---------------------------------------------------------------------------- confusion, gallery, PCA data
def default_group(label_map: LabelMap, positive: np.ndarray) -> str | None:
    """The mutually exclusive group with the most labels (first in label-map order on ties), or None."""
    exclusive = label_map.exclusive_groups(positive)
    if not exclusive:
        return None
    return max(exclusive, key=lambda g: (len(label_map.group_members(g)), -exclusive.index(g)))


def single_label_in_group(positive: np.ndarray, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row mask of images with exactly one true label in the group, that label's position in `members`)."""
    inside = positive[:, members]
    single = inside.sum(axis=1) == 1
    return single, np.argmax(inside[single], axis=1)


def group_confusion(scores: np.ndarray, positive: np.ndarray, members: np.ndarray) -> np.ndarray:
    """counts[true, predicted] over images with exactly one true label in the group; predicted = group argmax."""
    single, true = single_label_in_group(positive, members)
    best = np.argmax(scores[single][:, members], axis=1)
    counts = np.zeros((len(members), len(members)), dtype=np.int64)
    np.add.at(counts, (true, best), 1)
    return counts


def reduce_confusion(counts: np.ndarray, names: Sequence[str], max_classes: int) -> tuple[np.ndarray, list[str], list[str]]:
    """Keep the `max_classes` most frequent true classes (rows and columns, by support) plus an '(other classes)' column.

    Classes without any image in the split are dropped as rows (an empty row has nothing to normalise).
    """
    support = counts.sum(axis=1)
    order = [i for i in np.argsort(-support, kind="stable") if support[i] > 0]
    kept = order[:max_classes]
    matrix = counts[np.ix_(kept, kept)]
    col_names = [names[i] for i in kept]
    if len(kept) < len(names):
        other = counts[kept].sum(axis=1) - matrix.sum(axis=1)
        if other.any():
            matrix = np.concatenate([matrix, other[:, None]], axis=1)
            col_names.append("(other classes)")
    return matrix, [names[i] for i in kept], col_names


def gallery_caption(image_id: str, margin: float, scores: np.ndarray, positive: np.ndarray, thresholds: np.ndarray,
                    label_map: LabelMap, width: int = 34) -> str:
    """Three short blocks: id and margin, true names, predicted names (highest score first; wrong ones starred)."""
    predicted = scores >= thresholds
    true_idx = np.flatnonzero(positive)
    pred_idx = np.flatnonzero(predicted)
    pred_idx = pred_idx[np.argsort(-scores[pred_idx], kind="stable")]
    true_names = [label_map.names[i] + ("" if predicted[i] else "*") for i in true_idx] or ["(none)"]
    pred_names = [label_map.names[i] + ("" if positive[i] else "*") for i in pred_idx] or ["(none)"]

    def block(prefix: str, names: list[str]) -> str:
        lines = textwrap.wrap(prefix + ", ".join(names), width=width)
        return "\n".join(lines[:3]) + ("…" if len(lines) > 3 else "")

    return f"{image_id}  (margin {margin:.2f})\n{block('true: ', true_names)}\n{block('pred: ', pred_names)}"


def pca_points(embeddings: np.ndarray, max_points: int, seed: int = PCA_SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row indices used, 2-D points, explained variance ratio); a seeded subsample above max_points."""
    from sklearn.decomposition import PCA

    rows = np.arange(embeddings.shape[0])
    if rows.size > max_points:
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_points, replace=False))
    data = embeddings[rows].astype(np.float64)
    components = min(2, data.shape[0], data.shape[1])
    pca = PCA(n_components=components, random_state=seed)
    points = pca.fit_transform(data)
    if components < 2:
        points = np.concatenate([points, np.zeros((points.shape[0], 2 - components))], axis=1)
    return rows, points, pca.explained_variance_ratio_


def pca_colour_classes(positive: np.ndarray, members: np.ndarray | None, names: Sequence[str], max_classes: int) -> tuple[np.ndarray, list[str]]:
    """Per image a class index into the returned names: the top `max_classes` labels of the group by frequency,
    then "(other label)" and "(no single label)"."""
    n = positive.shape[0]
    if members is None:
        return np.zeros(n, np.int64), ["all images"]
    single, true = single_label_in_group(positive, members)
    frequency = np.bincount(true, minlength=len(members))
    top = [int(i) for i in np.argsort(-frequency, kind="stable")[:max_classes] if frequency[i] > 0]
    class_names = [names[members[i]] for i in top] + ["(other label)", "(no single label)"]
    code = {member_pos: k for k, member_pos in enumerate(top)}
    classes = np.full(n, len(top) + 1, np.int64)
    classes[np.flatnonzero(single)] = [code.get(int(t), len(top)) for t in true]
    return classes, class_names


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "group"


def write_plots(run: Run, predictions: Predictions, group: str | None, max_classes: int, split: str) -> dict:
    """The three evaluation PNGs; returns {name: path or None} and the notes on what was skipped."""
    from fashion_tf import plots

    lm = run.label_map
    plots_dir = run.folder.plots
    written: dict[str, str | None] = {"confusion": None, "worst_misclassified": None, "pca": None}
    notes: list[str] = []
    members = lm.group_members(group) if group is not None else None

    if members is not None and len(members) > 1:
        counts = group_confusion(predictions.scores, predictions.positive, members)
        names = [lm.names[i] for i in members]
        matrix, rows, cols = reduce_confusion(counts, names, max_classes)
        if matrix.size:
            shown = f"top {len(rows)} of {len(members)} classes by support, " if len(rows) < len(members) else ""
            title = (f"{group}: true (rows) vs highest-scoring label (columns), {split} split\n"
                     f"{shown}{int(counts.sum())} images with one {group} label; rows normalised")
            support = matrix.sum(axis=1)
            row_labels = [f"{name} ({n})" for name, n in zip(rows, support)]
            path = plots.confusion_matrix(matrix, row_labels, cols, plots_dir / f"confusion_{_slug(group)}.png", title)
            written["confusion"] = str(path)
        else:
            notes.append(f"confusion matrix skipped: no image has exactly one {group} label")
    else:
        notes.append("confusion matrix skipped: no mutually exclusive group with two or more labels (use --group)")

    if predictions.worst:
        images = [item[3] for item in predictions.worst]
        captions = [gallery_caption(item[2], item[0], item[4], item[5], run.thresholds, lm) for item in predictions.worst]
        title = (f"Worst misclassified {split} images (sum of |score - threshold| over wrong labels; "
                 f"* marks a missed or false label)")
        written["worst_misclassified"] = str(plots.image_gallery(images, captions, plots_dir / "worst_misclassified.png", title))
    else:
        notes.append("gallery skipped: every image is classified correctly at the thresholds")

    if predictions.embeddings is not None and predictions.embeddings.shape[0] >= 2:
        rows, points, variance = pca_points(predictions.embeddings, PCA_MAX_POINTS)
        classes, class_names = pca_colour_classes(predictions.positive[rows], members, lm.names, PCA_MAX_CLASSES)
        coloured_by = f"coloured by {group}" if members is not None else "one colour (no group)"
        sample = f", random {len(rows)} of {predictions.embeddings.shape[0]}" if len(rows) < predictions.embeddings.shape[0] else ""
        title = (f"Embedding PCA ({predictions.embeddings.shape[1]}-d input of the last Dense layer), {split} split, "
                 f"{coloured_by}{sample}")
        axis_names = [f"PC{i + 1} ({v:.1%} of variance)" for i, v in enumerate(variance)] + ["PC2"]
        name = f"pca_{_slug(group)}.png" if group is not None else "pca.png"
        written["pca"] = str(plots.scatter_2d(points, classes, class_names, plots_dir / name, title,
                                              axis_names[0], axis_names[1]))
    else:
        notes.append("PCA skipped: the model's embedding layer was not found")
    return {"files": written, "notes": notes}


# ---------------------------------------------------------------------------- reports
def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def metrics_markdown(report: dict) -> str:
    lines = [
        f"# Evaluation: {report['run_dir']}",
        "",
        f"- data: {report['data']}, split **{report['split']}**: {report['num_images']} images, "
        f"{report['num_labels']} labels ({report['labels_without_positives']} without positives in the split)",
        f"- thresholds: {report['thresholds']}",
        "",
        "| metric | micro | macro | samples |",
        "|---|---|---|---|",
    ]
    for name in ("f1", "precision", "recall"):
        lines.append(f"| {name} | " + " | ".join(_fmt(report[f"{avg}_{name}"]) for avg in ("micro", "macro", "samples")) + " |")
    lines += ["", f"mAP (mean average precision over the {report['mAP_labels']} labels with positives): "
              f"**{_fmt(report['mAP'])}**", ""]
    if report["top1_accuracy"]:
        lines += ["## Top-1 accuracy in mutually exclusive groups", "", "| group | images | accuracy |", "|---|---|---|"]
        for group, row in report["top1_accuracy"].items():
            lines.append(f"| {group} | {row['images']} | {_fmt(row['accuracy'])} |")
        lines.append("")
    lines += ["## Groups", "", "| group | labels | images | support | precision (micro) | recall (micro) | F1 (micro) | "
              "F1 (macro) | mAP | top-1 |", "|---|---|---|---|---|---|---|---|---|---|"]
    for g in report["groups"]:
        lines.append(f"| {g['group']} | {g['labels']} | {g['images']} | {g['support']} | {_fmt(g['micro_precision'])} | "
                     f"{_fmt(g['micro_recall'])} | {_fmt(g['micro_f1'])} | {_fmt(g['macro_f1'])} | {_fmt(g['mAP'])} | "
                     f"{_fmt(g['top1_accuracy'])} |")
    plots = {k: v for k, v in report["plots"].items() if v}
    if plots or report["plot_notes"]:
        lines += ["", "## Plots", ""]
        for name, path in plots.items():
            relative = Path(path).relative_to(report["run_dir"]) if Path(path).is_relative_to(report["run_dir"]) else path
            lines.append(f"- {name}: ![{name}]({relative})")
        lines += [f"- {note}" for note in report["plot_notes"]]
    lines += ["", "## Labels", "", "| index | id | name | group | support | predicted | threshold | precision | recall | F1 | AP |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["labels"]:
        lines.append(f"| {r['index']} | {r['id']} | {r['name']} | {r['group']} | {r['support']} | {r['predicted']} | "
                     f"{r['threshold']:.4g} | {_fmt(r['precision'])} | {_fmt(r['recall'])} | {_fmt(r['f1'])} | "
                     f"{_fmt(r['average_precision'])} |")
    return "\n".join(lines) + "\n"


def summary_line(report: dict, seconds: float) -> str:
    folder = RunFolder(report["run_dir"])
    inference = report["inference_seconds"]
    rate = report["num_images"] / inference if inference > 0 else 0.0
    top1 = ", ".join(f"{g} {_fmt(r['accuracy'], 3)}" for g, r in report["top1_accuracy"].items())
    plots = sum(1 for v in report["plots"].values() if v)
    return (f"Evaluated {report['num_images']} {report['split']} images x {report['num_labels']} labels in {seconds:.1f} s "
            f"(inference {inference:.1f} s, {rate:.1f} images/s): micro F1 {_fmt(report['micro_f1'])}, macro F1 {_fmt(report['macro_f1'])}, "
            f"samples F1 {_fmt(report['samples_f1'])}, mAP {_fmt(report['mAP'])} ({report['mAP_labels']} labels with positives)"
            + (f"; top-1 accuracy: {top1}" if top1 else "")
            + f"; thresholds: {report['thresholds']}; wrote {folder.metrics_json.name}, {folder.metrics_md.name} and "
            f"{plots} plots in {folder.plots}.")


# ---------------------------------------------------------------------------- command line
def check_data(run: Run, data_dir: Path, split: str) -> int:
    """The shard folder's split size; its label map must be the run's. No TensorFlow needed."""
    shards = ShardFolder(data_dir)
    count = shards.num_examples(split)
    if shards.label_map.ids != run.label_map.ids:
        raise UserError(f"{shards.label_map_path}: its {len(shards.label_map)} label ids differ from the run's "
                        f"{run.folder.label_map} ({len(run.label_map)} labels); evaluate with the shards "
                        "the run was trained on")
    return count


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
    for name in ("batch_size", "confusion_classes"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.gallery_size < 0:
        raise UserError(f"--gallery-size must be >= 0, got {args.gallery_size}")
    run = load_run(args.run_dir, args.thresholds)
    if args.group is not None:
        run.label_map.group_members(args.group)  # unknown group: one line now, before any work
    data_dir = Path(args.data)
    expected = check_data(run, data_dir, args.split)
    started = time.perf_counter()

    model = load_model(run)
    from fashion_tf.data import make_dataset

    data_cfg = dataclasses.replace(run.config.data, tfrecords=str(data_dir),
                                   batch_size=args.batch_size or run.config.data.batch_size)
    dataset = make_dataset(data_cfg, args.split, training=False, num_labels=run.num_labels, with_ids=True)
    predictions = collect_predictions(model, dataset, run.thresholds, args.gallery_size,
                                      math.ceil(expected / data_cfg.batch_size))
    report = {"run_dir": str(run.run_dir), "data": str(data_dir), "split": args.split, "thresholds": run.thresholds_source}
    report.update(compute_metrics(predictions.scores, predictions.positive, run.thresholds, run.label_map))
    group = args.group or default_group(run.label_map, predictions.positive)
    plotted = write_plots(run, predictions, group, args.confusion_classes, args.split)
    report["plot_group"] = group
    report["plots"] = plotted["files"]
    report["plot_notes"] = plotted["notes"]
    report["inference_seconds"] = round(predictions.seconds, 3)
    write_json_atomic(run.folder.metrics_json, report)
    write_bytes_atomic(run.folder.metrics_md, metrics_markdown(report).encode("utf-8"))
    for note in plotted["notes"]:
        print(f"note: {note}", file=sys.stderr)
    print(summary_line(report, time.perf_counter() - started))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
