"""The evaluation plots: a confusion matrix of one group, a gallery of the worst mistakes, a PCA of the embeddings.

- confusion_<group>.png: rows = true label, columns = highest-scoring label of the group, rows normalised.
  Only images with exactly one true label in the group count. Default group: the mutually exclusive group
  with the most labels; groups with more than --confusion-classes labels show the most frequent ones and an
  "(other classes)" column for predictions outside them.
- worst_misclassified.png: the images whose wrong decisions lie furthest on the wrong side of their
  thresholds (sum over wrong labels of |score - threshold|), with true and predicted label names.
- pca_<group>.png: the model's embedding (the input of its last Dense layer) projected on its first two
  principal components, coloured by the image's label in the group.
"""

from __future__ import annotations

import re
import textwrap
from typing import Sequence

import numpy as np

from fashion_tf.evaluate.scoring import Predictions
from fashion_tf.labels import LabelMap
from fashion_tf.run_folder import Run

CONFUSION_MAX_CLASSES = 30
PCA_MAX_POINTS = 5000
PCA_MAX_CLASSES = 10
PCA_SEED = 0


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
