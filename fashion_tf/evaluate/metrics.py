"""Every figure of metrics.json from scores, true labels and thresholds (numpy and sklearn, no TensorFlow).

F1 figures come from fashion_tf.threshold_search.f1_scores (sklearn's zero_division=0 conventions: a label
with no positives and no predictions has F1 0 and macro averages run over every label). mAP is the mean of
sklearn's average_precision_score over the labels that have positives in the split. "Top-1 accuracy" of a
mutually exclusive group (no image has two of its labels): among images with a label of the group, how often
the group's highest score is that label.
"""

from __future__ import annotations

import math

import numpy as np

from fashion_tf.labels import LabelMap


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
