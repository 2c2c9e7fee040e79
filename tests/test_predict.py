"""fashion_tf.predict on a tiny real run: files, folders, URLs from a loopback server, thresholds, Kaggle CSV."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from conftest import run_module  # noqa: E402
from fashion_tf import predict  # noqa: E402
from fashion_tf.errors import run_cli  # noqa: E402
from fashion_tf.labels import LabelMap  # noqa: E402
from fashion_tf.run_folder import RunFolder  # noqa: E402
from fashion_tf.testserver import Fault, serve_folder  # noqa: E402
from test_evaluate import TinyRun, build_tiny_run, write_thresholds  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> TinyRun:
    return build_tiny_run(tmp_path_factory.mktemp("tiny_predict"), n=8, shards=1)


@pytest.fixture(scope="module")
def expected(tiny):
    """Independent scores and decisions: the model on the original pixels, the thresholds read as plain JSON."""
    scores = tiny.scores()
    doc = json.loads((tiny.run_dir / "thresholds.json").read_text())
    thresholds = np.array([entry["threshold"] for entry in doc["labels"]])
    return scores, thresholds


def _run(argv, capsys) -> tuple[int, list[dict], str]:
    code = predict.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, [json.loads(line) for line in captured.out.splitlines()], captured.err


def _expected_labels(tiny: TinyRun, scores: np.ndarray, thresholds: np.ndarray) -> list[tuple[str, str, str]]:
    passing = [i for i in range(len(scores)) if scores[i] >= thresholds[i]]
    passing.sort(key=lambda i: -scores[i])
    lm = tiny.label_map
    return [(lm.ids[i], lm.names[i], lm.groups[i]) for i in passing]


def _assert_line_matches(line: dict, tiny: TinyRun, row: int, expected) -> None:
    scores, thresholds = expected
    got = [(label["id"], label["name"], label["group"]) for label in line["labels"]]
    assert got == _expected_labels(tiny, scores[row], thresholds)
    for label in line["labels"]:
        assert label["score"] == pytest.approx(scores[row][tiny.label_map.index_of(label["id"])], abs=1e-5)


def test_file_folder_and_url_in_input_order(tiny, expected, tmp_path, capsys):
    folder = tmp_path / "shots"
    (folder / "nested").mkdir(parents=True)
    shutil.copy(tiny.image_dir / "img001.png", folder / "b.png")
    shutil.copy(tiny.image_dir / "img002.png", folder / "nested" / "a.PNG")
    (folder / "notes.txt").write_text("not an image, not listed")
    with serve_folder(tiny.image_dir) as server:
        url = f"{server.base_url}/img003.png"
        code, lines, err = _run(["--run-dir", tiny.run_dir, tiny.image_dir / "img000.png", folder, url,
                                 "--batch-size", "2", "--allow-private-urls"], capsys)
    assert code == 0, err
    assert [line["input"] for line in lines] == [
        str(tiny.image_dir / "img000.png"), str(folder / "b.png"), str(folder / "nested" / "a.PNG"), url]
    for line, row in zip(lines, [0, 1, 2, 3]):
        _assert_line_matches(line, tiny, row, expected)
    assert any(line["labels"] for line in lines)
    assert "labelled 4 images, 0 failed" in err


def test_unreadable_inputs_give_error_lines_and_exit_1(tiny, expected, tmp_path, capsys):
    fake = tmp_path / "fake.jpg"
    fake.write_text("this is text")
    with serve_folder(tiny.image_dir) as server:
        server.add_fault("/gone.png", Fault(status=404))
        inputs = [fake, tmp_path / "missing.png", f"{server.base_url}/gone.png", tiny.image_dir / "img004.png"]
        code, lines, err = _run(["--run-dir", tiny.run_dir, *inputs, "--allow-private-urls"], capsys)
    assert code == 1
    assert [line.get("error") for line in lines] == [
        "not a readable image (JPEG, PNG, GIF or BMP)", "no such file", "download failed: HTTP 404", None]
    _assert_line_matches(lines[3], tiny, 4, expected)
    assert "3 failed" in err


def test_urls_on_loopback_are_refused_without_allow_private_urls(tiny, expected, capsys):
    with serve_folder(tiny.image_dir) as server:
        url = f"{server.base_url}/img003.png"
        code, lines, _ = _run(["--run-dir", tiny.run_dir, url, tiny.image_dir / "img004.png"], capsys)
        assert server.request_count("/img003.png") == 0  # refused before connecting
    assert code == 1
    assert lines[0] == {"input": url, "error": "download failed: refused: 127.0.0.1 is a loopback address "
                                                "(--allow-private-urls allows it)"}
    _assert_line_matches(lines[1], tiny, 4, expected)


def test_a_decompression_bomb_is_refused_from_its_header_and_the_rest_labelled(tiny, expected, tmp_path, capsys):
    import resource

    from conftest import png_bomb

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_bomb())  # 20000x20000: 1.2 GB as RGB pixels
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    code, lines, err = _run(["--run-dir", tiny.run_dir, bomb, tiny.image_dir / "img004.png"], capsys)
    assert code == 1
    assert lines[0]["error"].startswith("too_many_pixels: 20000x20000 declared")
    _assert_line_matches(lines[1], tiny, 4, expected)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before < 200_000  # KiB: nothing near 1.2 GB


def test_thresholds_round_trip_just_above_and_just_below(tiny, expected, tmp_path, capsys):
    scores = expected[0][5]
    run_dir = tmp_path / "run"
    shutil.copytree(tiny.run_dir, run_dir)
    thresholds = np.full(len(scores), 2.0)  # unreachable for sigmoid scores
    thresholds[0] = float(scores[0]) - 1e-6  # just below its score: shown
    thresholds[3] = float(scores[3]) + 1e-6  # just above its score: not shown
    thresholds[6] = float(scores[6]) - 1e-6
    write_thresholds(run_dir, tiny.label_map, thresholds)
    code, lines, _ = _run(["--run-dir", run_dir, tiny.image_dir / "img005.png"], capsys)
    assert code == 0
    ids = [label["id"] for label in lines[0]["labels"]]
    assert sorted(ids) == sorted([tiny.label_map.ids[0], tiny.label_map.ids[6]])
    assert [label["score"] for label in lines[0]["labels"]] == sorted((label["score"] for label in lines[0]["labels"]), reverse=True)
    code, lines, _ = _run(["--run-dir", run_dir, tiny.image_dir / "img005.png", "--top-k", "1"], capsys)
    assert len(lines[0]["labels"]) == 1 and lines[0]["labels"][0]["id"] == ids[0]


def test_without_thresholds_json_every_threshold_is_half(tiny, expected, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny.run_dir, run_dir)
    (run_dir / "thresholds.json").unlink()
    code, lines, err = _run(["--run-dir", run_dir, tiny.image_dir / "img006.png"], capsys)
    assert code == 0
    assert "0.5 for every label (no thresholds.json" in err
    assert [label["id"] for label in lines[0]["labels"]] == [
        i for i, _, _ in _expected_labels(tiny, expected[0][6], np.full(len(tiny.label_map), 0.5))]


def test_kaggle_submission_has_a_row_for_every_test_image(tiny, expected, tmp_path, capsys):
    images = tmp_path / "test_images" / "images"
    images.mkdir(parents=True)
    for row, image_id in ((0, "101"), (7, "103")):
        shutil.copy(tiny.image_dir / f"img{row:03d}.png", images / f"{image_id}.png")
    (images / "104.png").write_bytes(b"broken")
    test_json = tmp_path / "test.json"
    test_json.write_text(json.dumps({"images": [{"url": f"http://x/{i}.jpg", "imageId": i} for i in ("101", "102", "103", "104")]}))
    out = tmp_path / "submission.csv"
    code = predict.main(["--run-dir", str(tiny.run_dir), "--kaggle-submission", str(test_json),
                         "--images", str(tmp_path / "test_images"), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 0
    with open(out, newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["image_id", "label_id"]
    assert [r[0] for r in rows[1:]] == ["101", "102", "103", "104"]
    scores, thresholds = expected
    for image_id, row in (("101", 0), ("103", 7)):
        want = {tiny.label_map.ids[i] for i in np.flatnonzero(scores[row] >= thresholds)}
        got = dict(rows[1:])[image_id].split()
        assert set(got) == want and all(label.isdigit() and int(label) >= 1 for label in got)
    assert dict(rows[1:])["102"] == "" and dict(rows[1:])["104"] == ""
    assert "1 test images not found" in err and "1 unreadable" in err


BAD_INPUTS = {  # case: (how the arguments change, the message)
    "missing_run_dir": (lambda run, image, tmp: ["--run-dir", str(tmp / "nowhere"), image], "run directory not found"),
    "missing_model": (None, "model.keras: not found"),
    "corrupt_model": (None, "model.keras: cannot load the model"),
    "corrupt_config": (None, "config.json: not valid JSON"),
    "thresholds_for_other_labels": (None, "thresholds.json: 2 thresholds for 8 labels"),
    "no_inputs": (lambda run, image, tmp: ["--run-dir", run], "nothing to label"),
    "inputs_and_kaggle": (lambda run, image, tmp: ["--run-dir", run, image, "--kaggle-submission", image],
                          "give either INPUT... or --kaggle-submission, not both"),
    "kaggle_without_images": (lambda run, image, tmp: ["--run-dir", run, "--kaggle-submission", image],
                              "--kaggle-submission needs --images DIR"),
    "missing_test_json": (lambda run, image, tmp: ["--run-dir", run, "--kaggle-submission", str(tmp / "test.json"),
                                                   "--images", str(tmp)], "test.json: no such file"),
    "batch_size_0": (lambda run, image, tmp: ["--run-dir", run, image, "--batch-size", "0"], "--batch-size must be >= 1"),
    "top_k_negative": (lambda run, image, tmp: ["--run-dir", run, image, "--top-k", "-1"], "--top-k must be >= 0"),
    "max_pixels_0": (lambda run, image, tmp: ["--run-dir", run, image, "--max-pixels", "0"], "--max-pixels must be >= 1"),
}


def spoiled_run(tiny, tmp_path, case: str) -> str:
    run_dir = tmp_path / "run"
    shutil.copytree(tiny.run_dir, run_dir)
    folder = RunFolder(run_dir)
    if case == "missing_model":
        folder.model.unlink()
    elif case == "corrupt_model":
        folder.model.write_bytes(b"PK\x03\x04 not a model")
    elif case == "corrupt_config":
        folder.config.write_text('{"data": ')
    elif case == "thresholds_for_other_labels":
        write_thresholds(run_dir, LabelMap.from_ids(["1", "2"]), np.full(2, 0.5))
    return str(run_dir)


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_and_exit_2(tiny, tmp_path, capsys, case):
    arguments, expected = BAD_INPUTS[case]
    image = str(tiny.image_dir / "img000.png")
    if arguments is None:
        args = ["--run-dir", spoiled_run(tiny, tmp_path, case), image]
    else:
        args = arguments(str(tiny.run_dir), image, tmp_path)
    if case == "missing_run_dir":  # once as a user types it: no traceback, no TensorFlow start-up lines
        result = run_module("fashion_tf.predict", *args)
        code, stdout, stderr = result.returncode, result.stdout, result.stderr
    else:
        code = run_cli(predict.main, args)
        stdout, stderr = capsys.readouterr()
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert stdout == ""
    assert expected in lines[0]
