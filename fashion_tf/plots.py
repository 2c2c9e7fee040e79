"""Small matplotlib helpers that write PNG files atomically (Agg backend, no display needed).

Each helper takes plain arrays and a path, draws one figure, saves it and returns the path.
matplotlib is imported inside the functions so importing this module stays cheap. Add new helpers
(e.g. training curves) in the same shape: build the figure with `_pyplot()`, finish with `save_figure`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from fashion_tf.fileio import atomic_path

DPI = 100


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike, dpi: int = DPI, tight: bool = True) -> Path:
    """Write `fig` as PNG under `path` (temp file + rename) and close it."""
    plt = _pyplot()
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight" if tight else None)
    finally:
        plt.close(fig)
    return path


def sorted_bar_chart(values: Sequence[float], names: Sequence[str], path, title: str, xlabel: str,
                     max_value: float | None = 1.0) -> Path:
    """Horizontal bars sorted high to low, one row per item; the figure grows tall so every name stays legible."""
    plt = _pyplot()
    values = np.asarray(values, np.float64)
    order = np.argsort(-values, kind="stable")
    rows = len(values)
    width, height = 9.0, max(3.0, 0.16 * rows + 1.2)
    fig, ax = plt.subplots(figsize=(width, height))
    # fixed margins instead of bbox_inches="tight": with hundreds of names the tight pass doubles the drawing
    name_inches = 0.3 + 0.052 * max((len(n) for n in names), default=1)
    fig.subplots_adjust(left=min(0.6, name_inches / width), right=0.97, top=1 - 0.9 / height, bottom=0.5 / height)
    positions = np.arange(rows)
    colors = plt.get_cmap("viridis")(np.clip(values[order], 0, 1) * 0.85)
    ax.barh(positions, values[order], color=colors, height=0.8)
    ax.set_yticks(positions)
    ax.set_yticklabels([names[i] for i in order], fontsize=7)
    ax.invert_yaxis()
    ax.set_ylim(rows - 0.5, -0.5)
    if max_value is not None:
        ax.set_xlim(0, max_value)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    ax.xaxis.set_tick_params(labeltop=True)  # a tall figure needs the scale at both ends
    return save_figure(fig, path, tight=False)


def line_chart(x: Sequence[float], series: Mapping[str, Sequence[float]], path, title: str, xlabel: str,
               ylabel: str, vlines: Mapping[str, float] | None = None, highlight: str | None = None) -> Path:
    """Several y-series over one x axis, optional labelled vertical markers; `highlight` draws one series bold."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, y in series.items():
        y = np.asarray(y, np.float64)
        width = 2.6 if name == highlight else 1.4
        line, = ax.plot(x, y, label=name, linewidth=width)
        best = int(np.argmax(y))
        ax.plot([x[best]], [y[best]], "o", color=line.get_color(), markersize=4)
    for name, value in (vlines or {}).items():
        ax.axvline(value, color="black", linestyle="--", linewidth=1, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def pr_curves(curves: Sequence[Mapping], path, title: str, columns: int = 4) -> Path:
    """One precision-recall panel per curve: dict(name, recall, precision, point=(recall, precision), point_label)."""
    plt = _pyplot()
    count = len(curves)
    columns = max(1, min(columns, count))
    rows = int(np.ceil(count / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3.4 * columns, 3.2 * rows), squeeze=False)
    for ax, curve in zip(axes.ravel(), curves):
        ax.plot(curve["recall"], curve["precision"], linewidth=1.3, drawstyle="steps-post")
        if curve.get("point") is not None:
            r, p = curve["point"]
            ax.plot([r], [p], "o", color="crimson", markersize=6, label=curve.get("point_label"))
            if curve.get("point_label"):
                ax.legend(fontsize=7, loc="lower left")
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.02)
        ax.set_title(curve["name"], fontsize=8)
        ax.set_xlabel("recall", fontsize=8)
        ax.set_ylabel("precision", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[count:]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


# ---- evaluation plots (fashion_tf.evaluate) -----------------------------------------------
def confusion_matrix(matrix: np.ndarray, row_labels: Sequence[str], col_labels: Sequence[str], path, title: str) -> Path:
    """Row-normalised heat map of counts[true, predicted]; fonts shrink and the figure grows with the class count
    (legible to ~75 classes); cells are annotated when there are at most 20 columns."""
    plt = _pyplot()
    matrix = np.asarray(matrix, np.float64)
    rows, cols = matrix.shape
    totals = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    side = max(5.0, 0.22 * max(rows, cols) + 2.5)
    font = 8 if max(rows, cols) <= 20 else (6 if max(rows, cols) <= 45 else 5)
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    image = ax.imshow(normalised, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    ax.set_xticks(np.arange(cols))
    ax.set_xticklabels(col_labels, rotation=90, fontsize=font)
    ax.set_yticks(np.arange(rows))
    ax.set_yticklabels(row_labels, fontsize=font)
    ax.set_xlabel("predicted (highest score in the group)")
    ax.set_ylabel("true (images)")
    if cols <= 20:
        for r in range(rows):
            for c in range(cols):
                if matrix[r, c] > 0:
                    colour = "white" if normalised[r, c] > 0.6 else "black"
                    ax.text(c, r, f"{normalised[r, c]:.2f}", ha="center", va="center", fontsize=font - 1, color=colour)
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label="fraction of the row")
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path, dpi=DPI if max(rows, cols) <= 20 else 150)  # small fonts need more pixels


def image_gallery(images: Sequence[np.ndarray], captions: Sequence[str], path, title: str, columns: int = 4) -> Path:
    """A grid of uint8 [H, W, 3] images, each with a multi-line caption under it."""
    plt = _pyplot()
    count = len(images)
    columns = max(1, min(columns, count))
    rows = int(np.ceil(count / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3.3 * columns, 4.4 * rows), squeeze=False)
    for ax, image, caption in zip(axes.ravel(), images, captions):
        ax.imshow(np.asarray(image, np.uint8), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(caption, fontsize=7, loc="left", labelpad=3)
    for ax in axes.ravel()[count:]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def scatter_2d(points: np.ndarray, classes: np.ndarray, class_names: Sequence[str], path, title: str,
               xlabel: str, ylabel: str) -> Path:
    """2-D points coloured by class index (tab10 colours; names starting with "(" drawn in grey, underneath)."""
    plt = _pyplot()
    points = np.asarray(points, np.float64)
    classes = np.asarray(classes)
    fig, ax = plt.subplots(figsize=(9, 6.5))
    # tab10 without its grey (kept for the background classes), black in its place
    palette = [plt.get_cmap("tab10")(i) for i in (0, 1, 2, 3, 4, 5, 6, 8, 9)] + ["black"]
    greys = ("#b0b0b0", "#dcdcdc")
    named = [k for k, name in enumerate(class_names) if not name.startswith("(")]
    background = [k for k, name in enumerate(class_names) if name.startswith("(")]
    size = 14 if len(points) <= 2000 else 6
    for order, k in enumerate(background):
        mask = classes == k
        if mask.any():
            ax.scatter(points[mask, 0], points[mask, 1], s=size, c=greys[order % 2], label=f"{class_names[k]} ({mask.sum()})",
                       linewidths=0, alpha=0.6)
    for order, k in enumerate(named):
        mask = classes == k
        if mask.any():
            ax.scatter(points[mask, 0], points[mask, 1], s=size, color=palette[order % len(palette)],
                       label=f"{class_names[k]} ({mask.sum()})", linewidths=0, alpha=0.8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, markerscale=1.5, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return save_figure(fig, path)


def plot_history(history_csv, out_dir) -> list[Path]:
    """Training curves from a Keras CSVLogger history: loss.png, micro_f1.png, pr_auc.png in out_dir.

    Each figure shows the training and (when logged) validation value per epoch; metrics absent from the
    history are skipped. Returns the paths written (none for an empty history).
    """
    import csv

    with open(history_csv, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return []

    def column(key: str) -> list[float]:
        return [float(row[key]) if row.get(key) not in (None, "") else float("nan") for row in rows]

    epochs = [int(float(row["epoch"])) + 1 for row in rows] if "epoch" in rows[0] else list(range(1, len(rows) + 1))
    written = []
    for metric, title in (("loss", "loss"), ("micro_f1", "micro-F1 at 0.5"), ("pr_auc", "PR-AUC (multi-label)")):
        series = {name: column(key) for name, key in (("train", metric), ("validation", f"val_{metric}")) if key in rows[0]}
        if not series:
            continue
        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for name, values in series.items():
            ax.plot(epochs, values, marker="o", markersize=3, label=name)
        ax.set_xlabel("epoch")
        ax.set_ylabel(title)
        ax.set_title(f"{title} per epoch", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        written.append(save_figure(fig, Path(out_dir) / f"{metric}.png"))
    return written
