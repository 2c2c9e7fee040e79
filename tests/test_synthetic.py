"""fashion_tf.synthetic: layout, determinism, label coverage, CLI, served URLs."""

from __future__ import annotations

import csv
import functools
import http.server
import json
import subprocess
import sys
import threading
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fashion_tf import synthetic
from fashion_tf.errors import UserError
from fashion_tf.errors import run_cli as run_main
from fashion_tf.labels import LabelMap

REPO = Path(__file__).resolve().parents[1]
N, SEED, SIZE = 40, 3, 48
EXCLUSIVE_GROUPS = ("category", "colour", "pattern")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic") / "set"
    summary = synthetic.generate(out, n=N, seed=SEED, size=SIZE)
    return out, summary


def read_label_map(out: Path) -> list[dict]:
    with open(out / "label_map.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def all_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_files_follow_the_imaterialist_layout(dataset):
    out, _ = dataset
    data = json.loads((out / "train.json").read_text(encoding="utf-8"))
    assert set(data) == {"images", "annotations"}
    ids = [str(i) for i in range(1, N + 1)]
    assert [im["imageId"] for im in data["images"]] == ids
    assert [im["url"] for im in data["images"]] == [f"http://127.0.0.1:8765/images/{i}.jpg" for i in ids]
    assert [a["imageId"] for a in data["annotations"]] == ids
    for image_id in ids:
        with Image.open(out / "images" / f"{image_id}.jpg") as image:
            assert image.format == "JPEG" and image.mode == "RGB" and image.size == (SIZE, SIZE)
            image.load()
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(f"{i}.jpg" for i in ids)
    readme = (out / "README.md").read_text(encoding="utf-8")
    assert f"{N} procedurally drawn {SIZE}x{SIZE}" in readme and "label_map.csv" in readme
    assert not list(out.rglob("*.tmp")), "atomic writes left temporary files behind"


def test_label_map_has_1_based_ids_and_four_tasks(dataset):
    out, summary = dataset
    rows = read_label_map(out)
    assert list(rows[0]) == ["labelId", "taskId", "labelName", "taskName"]
    assert [r["labelId"] for r in rows] == [str(i) for i in range(1, len(rows) + 1)]
    task_of = {r["taskName"]: r["taskId"] for r in rows}
    assert task_of == {"category": "1", "colour": "2", "pattern": "3", "accessory": "4"}
    assert len({(r["taskName"], r["labelName"]) for r in rows}) == len(rows) == summary["n_label_ids"]
    label_map = LabelMap.from_csv(out / "label_map.csv")  # the pipeline's own reader accepts it
    assert len(label_map) == len(rows)
    assert label_map.group_names() == ["category", "colour", "pattern", "accessory"]


def test_every_image_has_one_label_per_exclusive_group_and_optional_accessories(dataset):
    out, _ = dataset
    group_of = {r["labelId"]: r["taskName"] for r in read_label_map(out)}
    annotations = json.loads((out / "train.json").read_text(encoding="utf-8"))["annotations"]
    label_counts = []
    for annotation in annotations:
        label_ids = annotation["labelId"]
        assert all(isinstance(label_id, str) for label_id in label_ids)
        assert len(set(label_ids)) == len(label_ids)
        assert set(label_ids) <= set(group_of), f"image {annotation['imageId']}: unknown label id"
        groups = Counter(group_of[label_id] for label_id in label_ids)
        assert all(groups[group] == 1 for group in EXCLUSIVE_GROUPS), annotation
        assert len(label_ids) >= 3
        label_counts.append(len(label_ids))
    assert min(label_counts) == 3 and max(label_counts) >= 5, "number of labels per image should vary"


def test_every_label_is_used_and_summary_counts_match(dataset):
    out, summary = dataset
    annotations = json.loads((out / "train.json").read_text(encoding="utf-8"))["annotations"]
    counted = Counter(label_id for a in annotations for label_id in a["labelId"])
    assert counted == Counter(summary["label_counts"])
    assert set(counted) == {r["labelId"] for r in read_label_map(out)}
    # exclusive groups are balanced: 40 images over 8 categories -> exactly 5 each
    category_ids = [r["labelId"] for r in read_label_map(out) if r["taskName"] == "category"]
    assert {counted[i] for i in category_ids} == {N // len(category_ids)}


def test_images_show_their_labels_colour(dataset):
    """A solid garment's most common non-background hue should be its colour label's hue."""
    out, _ = dataset
    rows = {r["labelId"]: r for r in read_label_map(out)}
    annotations = json.loads((out / "train.json").read_text(encoding="utf-8"))["annotations"]
    checked = 0
    for annotation in annotations:
        names = {rows[i]["taskName"]: rows[i]["labelName"] for i in annotation["labelId"]
                 if rows[i]["taskName"] in EXCLUSIVE_GROUPS}
        if names["pattern"] != "solid" or names["colour"] == "black" or len(annotation["labelId"]) > 3:
            continue
        with Image.open(out / "images" / f"{annotation['imageId']}.jpg") as image:
            pixels = np.asarray(image, dtype=np.float32).reshape(-1, 3)
        palette = np.asarray(list(synthetic.COLOURS.values()), dtype=np.float32)
        distances = np.linalg.norm(pixels[:, None, :] - palette[None, :, :], axis=2)
        close = distances.min(axis=1) < 60  # garment pixels; the muted background is far from all
        votes = np.bincount(distances[close].argmin(axis=1), minlength=len(palette))
        assert list(synthetic.COLOURS)[votes.argmax()] == names["colour"], (annotation, votes)
        checked += 1
    assert checked >= 2


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path, dataset):
    out, _ = dataset
    synthetic.generate(tmp_path / "again", n=N, seed=SEED, size=SIZE)
    assert all_files(tmp_path / "again") == all_files(out)
    synthetic.generate(tmp_path / "other", n=N, seed=SEED + 1, size=SIZE)
    other = all_files(tmp_path / "other")
    first = all_files(out)
    assert other["train.json"] != first["train.json"]
    assert sum(other[name] != first[name] for name in first if name.startswith("images")) == N


def test_urls_resolve_when_the_folder_is_served(tmp_path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base_url = f"http://127.0.0.1:{server.server_address[1]}/"
        synthetic.generate(tmp_path, n=3, seed=0, size=32, base_url=base_url)
        data = json.loads((tmp_path / "train.json").read_text(encoding="utf-8"))
        for image in data["images"]:
            assert image["url"].startswith(base_url + "images/")  # exactly one slash after the host
            with urllib.request.urlopen(image["url"], timeout=10) as response:
                assert response.read() == (tmp_path / "images" / f"{image['imageId']}.jpg").read_bytes()
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("kwargs, key", [
    ({"n": 0}, "--n"), ({"size": 8}, "--size"), ({"seed": -1}, "--seed"), ({"base_url": "ftp://host"}, "--base-url"),
])
def test_bad_arguments_raise_a_user_error_naming_the_option(tmp_path, kwargs, key):
    with pytest.raises(UserError, match=key):
        synthetic.generate(tmp_path, **kwargs)
    assert not (tmp_path / "train.json").exists()


def test_output_path_that_is_a_file_is_a_user_error(tmp_path):
    (tmp_path / "taken").write_text("x")
    with pytest.raises(UserError, match="--out: .*taken exists and is not a folder"):
        synthetic.generate(tmp_path / "taken", n=2, size=32)


def run_cli_in_process(argv: list[str]) -> int:
    return run_main(synthetic.main, argv)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fashion_tf.synthetic", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def test_cli_help_shows_defaults(capsys):
    with pytest.raises(SystemExit) as exit_info:
        synthetic.main(["--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    assert "--base-url" in help_text and "(default: 1200)" in help_text


@pytest.mark.parametrize("args", [["--n", "many"], ["--seed", "1.5"], []])
def test_cli_unparsable_arguments_exit_2(tmp_path, capsys, args):
    if args:
        args = ["--out", str(tmp_path / "out"), *args]
    with pytest.raises(SystemExit) as exit_info:
        run_cli_in_process(args)
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize("args", [["--n", "0"], ["--size", "10"], ["--base-url", "127.0.0.1:8765"]])
def test_cli_invalid_values_exit_2_with_one_line(tmp_path, capsys, args):
    assert run_cli_in_process(["--out", str(tmp_path / "out"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {args[0]}") and err.count("\n") == 1


def test_cli_bad_value_through_python_m_exits_2_without_traceback(tmp_path):
    result = run_cli("--out", str(tmp_path / "out"), "--n", "-3")
    assert result.returncode == 2
    assert result.stderr == "error: --n: must be between 1 and 1000000, got -3\n"


def test_cli_writes_the_set_and_a_summary(tmp_path):
    result = run_cli("--out", str(tmp_path / "out"), "--n", "8", "--size", "32", "--seed", "5")
    assert result.returncode == 0, result.stderr
    assert "wrote 8 images (32x32 JPEG)" in result.stdout
    assert len(list((tmp_path / "out" / "images").glob("*.jpg"))) == 8


def test_rerun_with_fewer_images_leaves_exactly_the_new_set(tmp_path):
    synthetic.generate(tmp_path, n=6, seed=1, size=32)
    (tmp_path / "images" / "notes.jpg").write_bytes(b"not ours")
    summary = synthetic.generate(tmp_path, n=4, seed=1, size=32)
    assert summary["stale_images_removed"] == 2
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == ["1.jpg", "2.jpg", "3.jpg", "4.jpg", "notes.jpg"]
