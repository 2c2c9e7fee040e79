"""metrics.md and the closing summary line of an evaluation."""

from __future__ import annotations

from pathlib import Path

from fashion_tf.run_folder import RunFolder


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
