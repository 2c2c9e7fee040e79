"""fashion_tf.plots: each helper writes a valid PNG atomically, sized for what it shows."""

from __future__ import annotations

import numpy as np
from PIL import Image

from fashion_tf import plots


def png_size(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.load()
        return image.size


def no_temp_files(folder):
    return not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_sorted_bar_chart_grows_with_the_number_of_labels(tmp_path):
    rng = np.random.default_rng(0)
    few = plots.sorted_bar_chart(rng.random(10), [f"label {i}" for i in range(10)], tmp_path / "few.png",
                                 title="F1", xlabel="F1")
    many = plots.sorted_bar_chart(rng.random(228), [f"a long label name {i} [{i}] n=1234" for i in range(228)],
                                  tmp_path / "sub" / "many.png", title="F1", xlabel="F1")
    assert many == tmp_path / "sub" / "many.png"
    few_w, few_h = png_size(few)
    many_w, many_h = png_size(many)
    # at least ~12 pixels per bar so 228 names stay legible
    assert many_h >= 12 * 228 and many_h > 5 * few_h
    assert no_temp_files(tmp_path) and no_temp_files(tmp_path / "sub")


def test_line_chart_and_pr_curves_write_pngs(tmp_path):
    x = np.linspace(0, 1, 50)
    path = plots.line_chart(x, {"micro": x * (1 - x), "macro": 0.5 * x * (1 - x)}, tmp_path / "curve.png",
                            title="F1", xlabel="t", ylabel="F1", vlines={"chosen": 0.5}, highlight="micro")
    assert png_size(path)[0] > 300
    curves = [{"name": f"label {i}", "recall": x, "precision": 1 - x, "point": (0.5, 0.5), "point_label": "t=0.5"}
              for i in range(3)]
    grid = plots.pr_curves(curves, tmp_path / "pr.png", title="PR", columns=2)
    width, height = png_size(grid)
    assert height > width * 0.6  # 2 rows of panels for 3 curves in 2 columns
    assert no_temp_files(tmp_path)


def test_save_figure_replaces_an_existing_file_whole(tmp_path):
    target = tmp_path / "plot.png"
    target.write_bytes(b"old")
    plt = plots._pyplot()
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    plots.save_figure(fig, target)
    assert png_size(target)[0] > 100
    assert no_temp_files(tmp_path)
