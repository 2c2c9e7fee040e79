"""The threshold report: headline F1 of each setting, per-group and per-label rows, as a dict and as markdown.

The dict becomes threshold_report.json (through `json_ready`); `report_markdown` renders threshold_report.md.
"""

from __future__ import annotations

import math

import numpy as np

from fashion_tf.threshold_search.cross_validation import SETTINGS
from fashion_tf.threshold_search.metrics import OBJECTIVES, ratio

SETTING_TITLES = {"at_0.5": "threshold 0.5", "best_global": "best global threshold", "per_label": "per-label thresholds"}


def summary(values: list[float]) -> dict:
    """Mean, and std and the values themselves when there are several (folds)."""
    arr = np.asarray(values, np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std()) if arr.size > 1 else None,
            "folds": [float(v) for v in arr] if arr.size > 1 else None}


def headline(metrics_per_fold: list[dict]) -> dict:
    """setting -> objective -> summary, from one {setting: f1_scores(...)} per fold (one for in-sample)."""
    return {s: {m: summary([fold[s][m] for fold in metrics_per_fold]) for m in OBJECTIVES} for s in SETTINGS}


def format_summary(figure: dict) -> str:
    if figure["std"] is None:
        return f"{figure['mean']:.4f}"
    return f"{figure['mean']:.4f} ± {figure['std']:.4f}"


def _group_rows(metrics: dict, thresholds, label_map) -> list[dict]:
    rows = []
    groups = np.asarray(label_map.groups)
    for group in dict.fromkeys(label_map.groups):
        members = np.flatnonzero(groups == group)
        tp, pred, sup = (int(metrics[k][members].sum()) for k in ("tp", "predicted", "support"))
        rows.append({
            "group": group, "labels": int(members.size), "support": sup,
            "precision": float(ratio(tp, pred)), "recall": float(ratio(tp, sup)),
            "f1": float(ratio(2 * tp, pred + sup)), "macro_f1": float(metrics["f1"][members].mean()),
            "mean_threshold": float(np.mean(np.asarray(thresholds)[members])),
        })
    return rows


def build_report(run_dir, label_map, thresholds, info: dict, headline: dict, per_label_metrics: dict,
                 cv: int | None, num_images: int) -> dict:
    """`label_map`: anything with per-index `ids`, `names` and `groups` (a fashion_tf.labels.LabelMap)."""
    rare = set(info["rare_labels"])
    label_rows = []
    for i, threshold in enumerate(thresholds):
        label_rows.append({
            "index": i, "id": label_map.ids[i], "name": label_map.names[i], "group": label_map.groups[i],
            "support": int(per_label_metrics["support"][i]),
            "precision": float(per_label_metrics["precision"][i]),
            "recall": float(per_label_metrics["recall"][i]),
            "f1": float(per_label_metrics["f1"][i]),
            "threshold": float(threshold),
            "uses_global_threshold": i in rare or info["all_global"],
        })
    name_of = lambda idx: [f"{label_map.ids[i]} ({label_map.names[i]})" for i in idx]  # noqa: E731
    return {
        "run_dir": str(run_dir),
        "objective": info["objective"],
        "mode": info["mode"],
        "min_positives": info["min_positives"],
        "cv_folds": cv,
        "evaluation": (f"held-out folds of {cv}-fold cross-validation (mean and std over folds)" if cv
                       else "in-sample: thresholds chosen and measured on the same validation set"),
        "num_images": int(num_images),
        "num_labels": len(thresholds),
        "global_threshold": float(info["global_threshold"]),
        "headline": headline,
        "per_label_source": ("pooled held-out fold predictions, each fold with its own thresholds" if cv
                             else "in-sample"),
        "labels": label_rows,
        "groups": _group_rows(per_label_metrics, thresholds, label_map),
        "no_positive_labels": name_of(info["no_positive_labels"]),
        "rare_labels_using_global": name_of(info["rare_labels"]),
        "high_positive_rate_labels": name_of(info["high_positive_rate_labels"]),
        "switched_off_labels": name_of(info["switched_off_labels"]),
        "ascent_passes": info["ascent_passes"],
        "notes": info["notes"],
    }


def report_markdown(report: dict, json_name: str) -> str:
    """The report as markdown; `json_name` is where the labels cut from long lists can be found."""
    lines = [
        f"# Threshold report: {report['run_dir']}",
        "",
        f"- objective: **{report['objective']}** F1, mode: **{report['mode']}**, "
        f"min positives: {report['min_positives']}",
        f"- images: {report['num_images']}, labels: {report['num_labels']}, "
        f"global threshold: {report['global_threshold']:.6g}",
        f"- measured on: {report['evaluation']}",
        "",
        "## Headline F1",
        "",
        "| thresholds | micro | macro | samples |",
        "|---|---|---|---|",
    ]
    for setting in SETTINGS:
        row = report["headline"][setting]
        lines.append(f"| {SETTING_TITLES[setting]} | " + " | ".join(format_summary(row[m]) for m in OBJECTIVES) + " |")
    lines += ["", f"Per-label and per-group figures: {report['per_label_source']}.", ""]
    for title, key in (("Labels with no validation positives", "no_positive_labels"),
                       ("Rare labels using the global threshold", "rare_labels_using_global"),
                       ("Warning: labels predicted positive on more than 95% of images", "high_positive_rate_labels"),
                       ("Labels switched off (never predicted)", "switched_off_labels")):
        items = report[key]
        lines.append(f"- {title}: {len(items)}" + (f" — {', '.join(items[:50])}" if items else ""))
        if len(items) > 50:
            lines[-1] += f", … ({len(items) - 50} more in {json_name})"
    for note in report["notes"]:
        lines.append(f"- note: {note}")
    lines += ["", "## Groups", "", "| group | labels | support | precision | recall | F1 (micro) | F1 (macro) | mean threshold |",
              "|---|---|---|---|---|---|---|---|"]
    for g in report["groups"]:
        lines.append(f"| {g['group']} | {g['labels']} | {g['support']} | {g['precision']:.4f} | {g['recall']:.4f} | "
                     f"{g['f1']:.4f} | {g['macro_f1']:.4f} | {g['mean_threshold']:.4f} |")
    lines += ["", "## Labels", "", "| index | id | name | group | support | precision | recall | F1 | threshold |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in report["labels"]:
        flag = " (global)" if r["uses_global_threshold"] and report["mode"] == "per_label" else ""
        lines.append(f"| {r['index']} | {r['id']} | {r['name']} | {r['group']} | {r['support']} | "
                     f"{r['precision']:.4f} | {r['recall']:.4f} | {r['f1']:.4f} | {r['threshold']:.6g}{flag} |")
    return "\n".join(lines) + "\n"


def json_ready(obj):
    """numpy values as plain Python, non-finite floats as null: what json.dump writes as strict JSON."""
    if isinstance(obj, dict):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
