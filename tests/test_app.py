"""fashion_tf.app on a tiny real run: the page's logic (labelling, run_view, shard_images) against predict and
numpy, and the page itself through Streamlit's own test harness (AppTest). The browser tests are in
test_app_browser.py."""

from __future__ import annotations

import csv
import io
import json
import shutil
import socket
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("streamlit")

from streamlit.testing.v1 import AppTest  # noqa: E402

from conftest import png_bomb, run_module  # noqa: E402
from fashion_tf import predict  # noqa: E402
from fashion_tf.app import labelling, run_view  # noqa: E402
from fashion_tf.app.__main__ import streamlit_command  # noqa: E402
from fashion_tf.app.options import AppOptions  # noqa: E402
from fashion_tf.app.shard_images import ShardIndex  # noqa: E402
from fashion_tf.config import load_config, save_config  # noqa: E402
from fashion_tf.data import make_dataset  # noqa: E402
from fashion_tf.evaluate.__main__ import main as evaluate_main  # noqa: E402
from fashion_tf.inference import score_split  # noqa: E402
from fashion_tf.run_folder import RunFolder, load_run, write_predictions  # noqa: E402
from fashion_tf.errors import UserError  # noqa: E402
from fashion_tf.testserver import Fault, serve_folder  # noqa: E402
from test_evaluate import TinyRun, build_tiny_run  # noqa: E402

N_IMAGES = 12
SINGLE_CHOICE = ("category", "colour")  # every tiny image has exactly one label in each (see build_tiny_run)


def build_app_run(root: Path) -> TinyRun:
    """build_tiny_run plus what train and evaluate leave in a run folder for the app to read: metrics.json
    (evaluate, as a user runs it), val_predictions.npz (train's own pass over the validation split) and
    history.csv (Keras' CSVLogger, as train writes it)."""
    tiny = build_tiny_run(root, n=N_IMAGES, shards=1)
    run_dir = tiny.run_dir
    assert evaluate_main(["--run-dir", str(run_dir), "--data", str(tiny.data_dir), "--split", "validation",
                          "--gallery-size", "0"]) == 0
    folder = RunFolder(run_dir)
    model = keras.models.load_model(folder.model, compile=False)
    config = load_config(folder.config)
    dataset = make_dataset(config.data, "validation", False, len(tiny.label_map), with_ids=True)
    write_predictions(folder, *score_split(model, dataset, len(tiny.label_map)))  # as train writes them
    model.compile(optimizer="adam", loss="binary_crossentropy")
    model.fit(tiny.images.astype(np.float32), tiny.positive.astype(np.float32), validation_split=0.25, epochs=2,
              batch_size=4, verbose=0, callbacks=[keras.callbacks.CSVLogger(str(folder.history))])
    return tiny


@pytest.fixture(autouse=True)
def restore_main_module():
    """Streamlit's script runner installs the page as sys.modules["__main__"] and leaves it there; a later test
    that starts processes with multiprocessing's spawn would then run the page script in each child."""
    main = sys.modules["__main__"]
    yield
    sys.modules["__main__"] = main


@pytest.fixture(scope="module")
def tiny(app_run) -> TinyRun:
    return app_run  # conftest.py: build_app_run, once per session


@pytest.fixture(scope="module")
def run(tiny):
    return load_run(tiny.run_dir)


@pytest.fixture(scope="module")
def model(run):
    return predict.load_model(run)


def thresholds_of(tiny: TinyRun) -> np.ndarray:
    doc = json.loads(RunFolder(tiny.run_dir).thresholds.read_text())
    return np.array([entry["threshold"] for entry in doc["labels"]])


def expected_chosen(tiny: TinyRun, row: int, mode: str = "thresholds", k: int = 1) -> dict[str, list[str]]:
    """Independently: per group, the label names the page should name for image `row`."""
    scores, thresholds, lm = tiny.scores()[row], thresholds_of(tiny), tiny.label_map
    chosen = {}
    for group in lm.group_names():
        members = sorted(lm.group_members(group), key=lambda i: -scores[i])
        if mode == "top_k":
            picked = members[:k]
        else:
            picked = [i for i in members if scores[i] >= thresholds[i]]
            picked = picked[:1] if group in SINGLE_CHOICE else picked
        chosen[group] = [lm.names[i] for i in picked]
    return chosen


def independent_margins(tiny: TinyRun, columns) -> np.ndarray:
    scores, positive, thresholds = tiny.scores()[:, columns], tiny.positive[:, columns], thresholds_of(tiny)[columns]
    wrong = (scores >= thresholds) != positive
    return (np.abs(scores - thresholds) * wrong).sum(axis=1)


class CountingModel:
    """The real model, counting its calls and batch sizes."""

    def __init__(self, model):
        self.model, self.batches = model, []

    def __call__(self, images, training=False):
        self.batches.append(int(images.shape[0]))
        return self.model(images, training=training)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# ---------------------------------------------------------------------------- labelling
def test_items_are_scored_in_one_model_call_with_predicts_decoding_and_checks(tiny, run, model):
    png = [(tiny.image_dir / f"img{i:03d}.png").read_bytes() for i in range(3)]
    items = [
        labelling.upload_item("a.png", png[0], 1 << 20),
        labelling.upload_item("notes.txt", b"just text", 1 << 20),
        labelling.upload_item("truncated.png", png[2][: len(png[2]) // 2], 1 << 20),
        labelling.upload_item("bomb.png", png_bomb(20_000, 5_000), 1 << 20),
        labelling.upload_item("big.png", png[1] + b"\0" * 5000, len(png[1]) + 4999),
        labelling.upload_item("b.png", png[1], 1 << 20),
    ]
    counting = CountingModel(model)
    labelled = labelling.label_items(counting, run, items)
    assert counting.batches == [2]  # the two readable images, one call
    assert [item.name for item in labelled] == ["a.png", "notes.txt", "truncated.png", "bomb.png", "big.png", "b.png"]
    assert labelled[0].scores == pytest.approx(tiny.scores()[0], abs=1e-5)
    assert labelled[5].scores == pytest.approx(tiny.scores()[1], abs=1e-5)
    assert [item.error for item in labelled] == [
        None, "not a readable image (JPEG, PNG, GIF or BMP)", "not a readable image (JPEG, PNG, GIF or BMP)",
        "too_many_pixels: 20000x5000 declared > 89,478,485 pixels allowed",
        f"larger than the {(len(png[1]) + 4999) / 2**20:.3g} MiB limit ({(len(png[1]) + 5000) / 2**20:.3g} MiB)", None]
    assert labelled[1].data is None and labelled[3].data is None  # nothing unreadable is kept for display


def test_download_rows_are_the_lines_predict_prints(tiny, run, model, capsys):
    paths = [str(tiny.image_dir / f"img{i:03d}.png") for i in (3, 4, 5)] + [str(RunFolder(tiny.run_dir).config)]
    items = [labelling.Item(path, Path(path).read_bytes()) for path in paths]
    records = labelling.prediction_records(labelling.label_items(model, run, items), run)
    assert predict.main(["--run-dir", str(tiny.run_dir), *paths]) == 1  # config.json is not an image
    printed = capsys.readouterr().out
    assert json.loads("[" + ",".join(labelling.jsonl_text(records).splitlines()) + "]") == [
        json.loads(line) for line in printed.splitlines()]
    rows = list(csv.DictReader(io.StringIO(labelling.csv_text(records))))
    flattened = [(r["input"], r["id"], r["error"]) for r in rows]
    expected = []
    for record in records:
        if "error" in record:
            expected.append((record["input"], "", record["error"]))
        else:
            expected += [(record["input"], label["id"], "") for label in record["labels"]] or [(record["input"], "", "")]
    assert flattened == expected and len(rows) >= 4


def test_group_results_follow_thresholds_single_choice_and_top_k(tiny, run):
    for row in range(N_IMAGES):
        scores = tiny.scores()[row]
        groups = labelling.group_results(scores, run, SINGLE_CHOICE, "thresholds")
        assert {g.group: [label.name for label in g.chosen] for g in groups} == expected_chosen(tiny, row)
        for group in groups:
            assert [b.score for b in group.bars] == sorted((b.score for b in group.bars), reverse=True)
            assert [b.name for b in group.bars if b.chosen] == [label.name for label in group.chosen]
        top2 = labelling.group_results(scores, run, SINGLE_CHOICE, "top_k", top_k=2)
        assert {g.group: [label.name for label in g.chosen] for g in top2} == expected_chosen(tiny, row, "top_k", 2)
    assert [len(g.bars) for g in labelling.group_results(tiny.scores()[0], run, max_bars=2)] == [2, 2, 2]


def test_urls_go_through_url_fetch_with_the_apps_limits(tiny):
    options = AppOptions(run_dir=tiny.run_dir, allow_private_urls=True, max_image_mb=0.001)  # 1,048 bytes
    big = tiny.image_dir / "img000.png"
    assert big.stat().st_size > 1048
    with serve_folder(tiny.image_dir) as server:
        server.add_file("/small.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
        server.add_fault("/gone.png", Fault(status=404))
        urls = [server.url("small.png"), server.url("gone.png"), server.url("img000.png"), "ftp://example.com/a.png",
                f"http://127.0.0.1:{closed_port()}/a.png"]
        got = labelling.url_items(urls, options.fetch_options())
        refused = labelling.url_items([server.url("small.png")], replace(options, allow_private_urls=False).fetch_options())
    assert got[0].data == b"\x89PNG\r\n\x1a\n" + b"\0" * 100 and got[0].error is None
    assert [item.error for item in got[1:]] == [
        "download failed: HTTP 404", "download failed: larger than the 1,048 bytes limit (" + f"{big.stat().st_size:,} bytes)",
        "not an http:// or https:// URL", "download failed: cannot connect to 127.0.0.1 (Connection refused)"]
    assert refused[0].error == "download failed: refused: 127.0.0.1 is a loopback address (--allow-private-urls allows it)"
    assert labelling.parse_urls("  http://a/1.png \n\n# a comment\nhttps://b/2.png") == ["http://a/1.png", "https://b/2.png"]
    assert labelling.within_limit(["u1", "u2"], ["l1", "l2", "l3"], 3) == (["u1", "u2"], ["l1"], 2)


# ---------------------------------------------------------------------------- run_view and shard_images
def test_worst_mistakes_match_numpy_and_filter_by_group_and_label(tiny, run):
    preds = run_view.read_val_predictions(run)
    assert preds.ids == tiny.ids and preds.scores == pytest.approx(tiny.scores(), abs=1e-5)
    lm = tiny.label_map
    for group, label, columns in ((None, None, np.arange(len(lm))), ("accessory", None, lm.group_members("accessory")),
                                  (None, 7, np.array([7]))):
        margins = independent_margins(tiny, columns)
        expected = [tiny.ids[i] for i in sorted(np.flatnonzero(margins > 1e-9), key=lambda i: -margins[i])]
        mistakes = run_view.worst_mistakes(preds, run, group, label)
        assert [m.image_id for m in mistakes] == expected
        assert [m.margin for m in mistakes] == pytest.approx([margins[tiny.ids.index(i)] for i in expected], abs=1e-5)
    first = run_view.worst_mistakes(preds, run)[0]
    row = tiny.ids.index(first.image_id)
    predicted = tiny.scores()[row] >= thresholds_of(tiny)
    assert first.true == np.flatnonzero(tiny.positive[row]).tolist()
    assert sorted(first.predicted) == np.flatnonzero(predicted).tolist()
    assert first.wrong == set(np.flatnonzero(predicted != tiny.positive[row]).tolist()) and first.wrong
    assert run_view.page_of(list(range(30)), 3, 12) == list(range(24, 30)) and run_view.page_count(30, 12) == 3


def test_figures_per_label_f1_and_curves_come_from_the_runs_files(tiny):
    metrics = json.loads(RunFolder(tiny.run_dir).metrics_json.read_text())
    assert run_view.read_metrics(tiny.run_dir) == metrics
    assert run_view.headline_figures(metrics) == [("micro F1", metrics["micro_f1"]), ("macro F1", metrics["macro_f1"]),
                                                  ("samples F1", metrics["samples_f1"]), ("mAP", metrics["mAP"])]
    rows = run_view.per_label_f1(metrics)
    assert sorted(row["label"] for row in rows) == sorted(tiny.label_map.names)
    assert [row["F1"] for row in rows] == sorted(row["f1"] for row in metrics["labels"])
    assert {row["group"] for row in run_view.top1_rows(metrics)} == set(SINGLE_CHOICE)
    history = run_view.read_history(tiny.run_dir)
    assert history["epoch"] == [0.0, 1.0] and len(history["loss"]) == 2
    assert ("loss", ["loss", "val_loss"]) in run_view.curve_groups(history)
    assert run_view.read_metrics(tiny.data_dir) is None


def test_single_choice_groups_from_shard_info_else_from_labels(tiny, run, tmp_path):
    preds = run_view.read_val_predictions(run)
    assert run_view.single_choice_groups(run, tiny.data_dir, preds) == list(SINGLE_CHOICE)  # no groups recorded
    shards = tmp_path / "shards"
    shutil.copytree(tiny.data_dir, shards)
    info = json.loads((shards / "shard_info.json").read_text())
    info["groups"] = {"category": {"labels": [0, 1, 2], "exclusive": True}, "colour": {"labels": [3, 4, 5], "exclusive": False}}
    (shards / "shard_info.json").write_text(json.dumps(info))
    assert run_view.single_choice_groups(run, shards, preds) == ["category"]
    assert run_view.single_choice_groups(run, tmp_path / "gone", None) == []


def test_shard_index_reads_only_the_records_asked_for(tiny, tmp_path):
    index = ShardIndex.build(tiny.data_dir, "validation")
    assert len(index) == N_IMAGES
    for image_id in (tiny.ids[0], tiny.ids[-1]):
        assert index.encoded(image_id) == (tiny.image_dir / f"{image_id}.png").read_bytes()
    assert index.encoded("no-such-id") is None
    with pytest.raises(UserError, match="not found"):
        ShardIndex.build(tmp_path / "gone", "validation")
    broken = tmp_path / "broken"
    shutil.copytree(tiny.data_dir, broken)
    shard = next(broken.glob("validation-*.tfrecord"))
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(UserError, match="truncated record at byte"):
        ShardIndex.build(broken, "validation")


# ---------------------------------------------------------------------------- the page, in Streamlit's harness
def _page_script(options):
    from fashion_tf.app.page import render

    render(options)


def app_test(options: AppOptions) -> AppTest:
    at = AppTest.from_function(_page_script, kwargs={"options": options}, default_timeout=180)
    at.run()
    assert not at.exception, at.exception
    return at


def _label_lines(at) -> list[str]:
    return [m.value for m in at.markdown if "**category**" in m.value]


def _line(group: str, names: list[str], scores: dict[str, float], top_k: bool = False, passes=None) -> str:
    kind = " (one label)" if group in SINGLE_CHOICE else ""
    shown = ", ".join(f"{n} {scores[n]:.2f}" + (" ✓" if top_k and passes[n] else "") for n in names)
    return f"- **{group}**{kind}: {shown or '_none above its threshold_'}"


def _expected_markdown(tiny: TinyRun, row: int, mode: str = "thresholds", k: int = 1) -> str:
    scores, thresholds, lm = tiny.scores()[row], thresholds_of(tiny), tiny.label_map
    by_name = {lm.names[i]: float(scores[i]) for i in range(len(lm))}
    passes = {lm.names[i]: bool(scores[i] >= thresholds[i]) for i in range(len(lm))}
    chosen = expected_chosen(tiny, row, mode, k)
    lines = [_line(group, names, by_name, mode == "top_k", passes) for group, names in chosen.items()]
    return "\n".join(lines + (["\n✓ reaches its threshold"] if mode == "top_k" else []))


def test_label_page_labels_good_items_and_reports_each_bad_one_beside_it(tiny):
    png = {i: (tiny.image_dir / f"img{i:03d}.png").read_bytes() for i in range(4)}
    options = AppOptions(run_dir=tiny.run_dir, allow_private_urls=True, max_image_mb=0.02)  # 20,971 bytes
    with serve_folder(tiny.image_dir) as server:
        at = app_test(options)
        assert at.sidebar.radio(key="page").value == "Label photos" and not at.error
        at.file_uploader(key="uploads").set_value([
            ("img000.png", png[0], "image/png"), ("notes.txt", b"not an image", "text/plain"),
            ("truncated.png", png[2][:200], "image/png"), ("bomb.png", png_bomb(20_000, 5_000), "image/png"),
            ("big.png", b"\x89PNG" + bytes(30_000), "image/png"), ("img001.png", png[1], "image/png")])
        unreachable = f"http://127.0.0.1:{closed_port()}/x.png"
        at.text_area(key="urls").input(f"{server.url('img003.png')}\n{unreachable}\n")
        at.button[0].click().run(timeout=180)
    assert not at.exception, at.exception
    assert [e.value for e in at.error] == [
        "notes.txt: not a readable image (JPEG, PNG, GIF or BMP)",
        "truncated.png: not a readable image (JPEG, PNG, GIF or BMP)",
        "bomb.png: too_many_pixels: 20000x5000 declared > 89,478,485 pixels allowed",
        "big.png: larger than the 0.02 MiB limit (0.0286 MiB)",
        f"{unreachable}: download failed: cannot connect to 127.0.0.1 (Connection refused)"]
    assert _label_lines(at) == [_expected_markdown(tiny, row) for row in (0, 1, 3)]
    table = at.dataframe[0].value
    assert list(table["input"].drop_duplicates()) == [
        "img000.png", "notes.txt", "truncated.png", "bomb.png", "big.png", "img001.png", server.url("img003.png"), unreachable]
    assert (table["error"] != "").sum() == 5 and table.loc[table["id"] != "", "score"].notna().all()

    at.radio(key="mode").set_value("top_k").run()
    at.number_input(key="top_k").set_value(2).run()
    assert _label_lines(at) == [_expected_markdown(tiny, row, "top_k", 2) for row in (0, 1, 3)]
    assert len(at.error) == 5  # switching the view does not label again: the same results, no new fetches


def test_without_urls_there_is_no_url_field(tiny):
    at = app_test(AppOptions(run_dir=tiny.run_dir, urls=False))
    assert len(at.text_area) == 0 and len(at.file_uploader) == 1


def _cards(at) -> list[str]:
    return [m.value.split("**")[1].replace("\\", "") for m in at.markdown if " · margin " in m.value]


def test_inside_page_shows_the_runs_figures_and_a_filterable_gallery(tiny):
    metrics = json.loads(RunFolder(tiny.run_dir).metrics_json.read_text())
    lm = tiny.label_map
    at = app_test(AppOptions(run_dir=tiny.run_dir))
    at.sidebar.radio(key="page").set_value("Look inside the run").run()
    assert not at.exception and not at.warning
    assert [m.value for m in at.metric] == [f"{metrics[key]:.3f}" for key in ("micro_f1", "macro_f1", "samples_f1", "mAP")]
    assert list(at.dataframe[1].value["F1"]) == sorted(row["f1"] for row in metrics["labels"])

    def expected(columns) -> list[str]:
        margins = independent_margins(tiny, columns)
        return [tiny.ids[i] for i in sorted(np.flatnonzero(margins > 1e-9), key=lambda i: -margins[i])]

    every = expected(np.arange(len(lm)))
    assert _cards(at) == every and f"{len(every)} of {N_IMAGES} validation images have a wrong decision," in at.main.caption[-1].value
    assert len(at.get("image")) == len(every)  # each card shows its image, read from the shards
    at.selectbox(key="gallery_group").set_value("accessory").run()
    accessory = expected(lm.group_members("accessory"))
    assert _cards(at) == accessory and f"{len(accessory)} of {N_IMAGES} validation images have a wrong decision in accessory" in at.main.caption[-1].value
    at.selectbox(key="gallery_label_accessory").set_value(7).run()
    hat = expected(np.array([7]))
    assert _cards(at) == hat and f"wrong decision on {lm.names[7]}" in at.main.caption[-1].value
    assert set(hat) <= set(accessory) <= set(every) and hat != every


def test_inside_page_without_metrics_or_shards_says_so_and_still_shows_the_mistakes(tiny, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny.run_dir, run_dir)
    RunFolder(run_dir).metrics_json.unlink()
    config = load_config(RunFolder(run_dir).config)
    save_config(replace(config, data=replace(config.data, tfrecords=str(tmp_path / "deleted_shards"))),
                RunFolder(run_dir).config)
    at = app_test(AppOptions(run_dir=run_dir))
    at.sidebar.radio(key="page").set_value("Look inside the run").run()
    assert not at.exception
    assert "no metrics.json yet" in at.warning[0].value
    assert at.code[0].value == (f"python -m fashion_tf.evaluate --run-dir {run_dir} --data {tmp_path / 'deleted_shards'} "
                                "--split validation")
    assert "The images cannot be shown" in at.warning[1].value and "deleted_shards" in at.warning[1].value
    assert len(_cards(at)) > 0 and len(at.get("image")) == 0
    assert len(at.metric) == 0 and len(at.get("vega_lite_chart")) == 1  # the loss curves are still there


# ---------------------------------------------------------------------------- command line
def test_command_line_checks_the_run_before_starting_a_server(tiny, tmp_path):
    result = run_module("fashion_tf.app", "--run-dir", str(tmp_path / "nowhere"))
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [f"error: {tmp_path / 'nowhere'}: run directory not found"]
    result = run_module("fashion_tf.app", "--run-dir", str(tiny.run_dir), "--max-image-mb", "0")
    assert result.returncode == 2 and "--max-image-mb must be > 0" in result.stderr
    assert "(default: 127.0.0.1)" in run_module("fashion_tf.app", "--help").stdout
    command = streamlit_command(AppOptions(run_dir=tiny.run_dir, max_image_mb=2.5))
    flags = dict(zip(command[5:command.index("--"):2], command[6:command.index("--"):2]))
    assert flags["--server.address"] == "127.0.0.1" and flags["--browser.gatherUsageStats"] == "false"
    assert flags["--server.maxUploadSize"] == "3" and flags["--server.headless"] == "true"
