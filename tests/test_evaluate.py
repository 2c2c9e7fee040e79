"""fashion_tf.evaluate on a tiny real run: a 32-px Keras model, real TFRecord shards read by fashion_tf.data,
a thresholds.json in threshold_search's format; metrics checked against sklearn/numpy on the same predictions."""

from __future__ import annotations

import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from PIL import Image  # noqa: E402
from sklearn.metrics import average_precision_score, f1_score, precision_score, recall_score  # noqa: E402

from conftest import run_module  # noqa: E402
from fashion_tf import schema  # noqa: E402
from fashion_tf.evaluate import figures, metrics, scoring  # noqa: E402
from fashion_tf.evaluate.__main__ import main  # noqa: E402
from fashion_tf.config import Config, DataConfig, ModelConfig, save_config  # noqa: E402
from fashion_tf.errors import run_cli  # noqa: E402
from fashion_tf.fileio import write_json_atomic  # noqa: E402
from fashion_tf.labels import LabelMap  # noqa: E402
from fashion_tf.run_folder import thresholds_document  # noqa: E402

SIZE = 32
GROUPS = [("category", ["shirt", "dress", "shoe"]), ("colour", ["red", "green", "blue"]), ("accessory", ["belt", "hat"])]
COLOURS = {"red": (200, 40, 40), "green": (40, 170, 60), "blue": (40, 60, 200)}


@dataclass
class TinyRun:
    run_dir: Path
    data_dir: Path
    image_dir: Path  # <id>.png of every image
    ids: list
    images: np.ndarray  # uint8 [N, S, S, 3]
    positive: np.ndarray  # bool [N, C]
    label_map: LabelMap
    _scores: np.ndarray | None = None

    def scores(self) -> np.ndarray:
        """The saved model's scores on the original pixels (computed once)."""
        if self._scores is None:
            model = keras.models.load_model(self.run_dir / "model.keras", compile=False)
            self._scores = np.asarray(model.predict(self.images.astype(np.float32), verbose=0), np.float32)
        return self._scores


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _draw(rng, colour: str, category: int, accessories: list) -> np.ndarray:
    """A coloured block whose shape depends on the category, plus small marks for accessories, on noise."""
    image = rng.integers(0, 80, (SIZE, SIZE, 3)).astype(np.uint8)
    rgb = np.array(COLOURS[colour], np.uint8)
    if category == 0:
        image[6:26, 6:26] = rgb
    elif category == 1:
        image[2:30, 12:20] = rgb
    else:
        image[18:28, 2:30] = rgb
    if 0 in accessories:
        image[0:3, :] = 255
    if 1 in accessories:
        image[:, 0:3] = 230
    return image


def write_thresholds(run_dir: Path, label_map: LabelMap, thresholds) -> None:
    write_json_atomic(run_dir / "thresholds.json", thresholds_document(
        np.asarray(thresholds, np.float64), label_map.ids, label_map.names, label_map.groups, "micro", "per_label", 0.5))


def build_tiny_run(root: Path, n: int = 22, seed: int = 0, shards: int = 2) -> TinyRun:
    """Images, shards (validation split, `shards` files), and a run dir with an untrained 32-px model whose
    thresholds are the per-label medians of its scores (so every label has positive and negative decisions)."""
    rng = np.random.default_rng(seed)
    label_map = LabelMap.from_groups(GROUPS)
    colour_names = GROUPS[1][1]
    images, index_lists, ids = [], [], []
    for i in range(n):
        category, colour = int(rng.integers(3)), int(rng.integers(3))
        accessories = [a for a in range(2) if rng.random() < 0.4]
        images.append(_draw(rng, colour_names[colour], category, accessories))
        index_lists.append([category, 3 + colour] + [6 + a for a in accessories])
        ids.append(f"img{i:03d}")
    images = np.stack(images)
    positive = label_map.encode_many(index_lists).astype(bool)
    assert positive.any(axis=0).all(), "every label needs a positive; change the seed"

    image_dir = root / "images"
    image_dir.mkdir(parents=True)
    data_dir = root / "tfrecords"
    data_dir.mkdir()
    names = [f"validation-{k:05d}-of-{shards:05d}.tfrecord" for k in range(shards)]
    writers = [tf.io.TFRecordWriter(str(data_dir / name)) for name in names]
    for i, (image, indices, image_id) in enumerate(zip(images, index_lists, ids)):
        encoded = _png(image)
        (image_dir / f"{image_id}.png").write_bytes(encoded)
        writers[i * shards // n].write(schema.serialize_example(encoded, "png", SIZE, SIZE, indices, image_id, "0" * 64))
    for writer in writers:
        writer.close()
    label_map.to_json(data_dir / "label_map.json")
    write_json_atomic(data_dir / "shard_info.json", {
        "num_labels": len(label_map),
        "splits": {"validation": {"num_examples": n, "shards": names,
                                  "label_counts": positive.sum(axis=0).tolist()}},
    })

    run_dir = root / "run"
    run_dir.mkdir()
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.Rescaling(1.0 / 255.0)(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(len(label_map), activation="sigmoid", name="scores")(x)
    model = keras.Model(inputs, outputs)
    model.save(run_dir / "model.keras")
    config = Config(data=DataConfig(tfrecords=str(data_dir), image_size=SIZE, batch_size=8),
                    model=ModelConfig(backbone="small_cnn", weights=None), output_dir=str(run_dir))
    save_config(config, run_dir / "config.json")
    label_map.to_json(run_dir / "label_map.json")
    tiny = TinyRun(run_dir, data_dir, image_dir, ids, images, positive, label_map)
    write_thresholds(run_dir, label_map, np.median(tiny.scores(), axis=0).astype(np.float64))
    return tiny


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> TinyRun:
    return build_tiny_run(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def evaluated(tiny) -> dict:
    """evaluate run once (batch 8 over 22 images in 2 shards: a partial last batch), metrics.json parsed."""
    code = main(["--run-dir", str(tiny.run_dir), "--data", str(tiny.data_dir), "--split", "validation",
                          "--batch-size", "8", "--gallery-size", "6"])
    assert code == 0
    return json.loads((tiny.run_dir / "metrics.json").read_text())


def test_headline_metrics_equal_sklearn_on_the_same_predictions(tiny, evaluated):
    scores = tiny.scores()
    thresholds = np.array([e["threshold"] for e in json.loads((tiny.run_dir / "thresholds.json").read_text())["labels"]])
    y_true, y_pred = tiny.positive.astype(int), (scores >= thresholds).astype(int)
    assert 0 < y_pred.sum() < y_pred.size  # a real mix of decisions, not a degenerate case
    assert evaluated["num_images"] == len(tiny.ids)
    for average in ("micro", "macro", "samples"):
        assert evaluated[f"{average}_f1"] == pytest.approx(f1_score(y_true, y_pred, average=average, zero_division=0), abs=1e-9)
        assert evaluated[f"{average}_precision"] == pytest.approx(
            precision_score(y_true, y_pred, average=average, zero_division=0), abs=1e-9)
        assert evaluated[f"{average}_recall"] == pytest.approx(
            recall_score(y_true, y_pred, average=average, zero_division=0), abs=1e-9)
    assert evaluated["mAP"] == pytest.approx(average_precision_score(y_true, scores, average="macro"), abs=1e-6)
    per_label_f1 = f1_score(y_true, y_pred, average=None, zero_division=0)
    assert [row["f1"] for row in evaluated["labels"]] == pytest.approx(per_label_f1.tolist(), abs=1e-9)
    assert [row["support"] for row in evaluated["labels"]] == y_true.sum(axis=0).tolist()
    assert [row["name"] for row in evaluated["labels"]] == list(tiny.label_map.names)


def test_group_rows_and_exclusive_top1_match_numpy(tiny, evaluated):
    scores = tiny.scores()
    thresholds = np.array([row["threshold"] for row in evaluated["labels"]])
    predicted = scores >= thresholds
    groups = {row["group"]: row for row in evaluated["groups"]}
    assert set(groups) == {"category", "colour", "accessory"}
    members = np.array([6, 7])  # accessory
    tp = (predicted & tiny.positive)[:, members].sum()
    fp = (predicted & ~tiny.positive)[:, members].sum()
    fn = (~predicted & tiny.positive)[:, members].sum()
    assert groups["accessory"]["micro_f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn), abs=1e-9)
    assert groups["accessory"]["exclusive"] is False and groups["accessory"]["top1_accuracy"] is None
    assert set(evaluated["top1_accuracy"]) == {"category", "colour"}
    for group, members in (("category", [0, 1, 2]), ("colour", [3, 4, 5])):
        expected = np.mean(np.argmax(scores[:, members], 1) == np.argmax(tiny.positive[:, members], 1))
        assert evaluated["top1_accuracy"][group] == {"accuracy": pytest.approx(expected), "images": len(tiny.ids)}
        assert groups[group]["top1_accuracy"] == pytest.approx(expected)


def test_top1_accuracy_within_an_exclusive_group_hand_made():
    label_map = LabelMap.from_groups([("category", ["shirt", "dress", "shoe"]), ("accessory", ["belt", "hat"])])
    positive = np.array([
        [1, 0, 0, 1, 1],  # shirt (+ two accessories: accessory is not exclusive)
        [0, 1, 0, 0, 0],  # dress
        [0, 0, 1, 0, 0],  # shoe
        [0, 0, 0, 1, 0],  # no category: not counted
    ], bool)
    scores = np.array([
        [0.9, 0.2, 0.1, 0.5, 0.5],  # shirt: right
        [0.1, 0.3, 0.6, 0.5, 0.5],  # dress scored below shoe: wrong
        [0.2, 0.2, 0.3, 0.5, 0.5],  # shoe: right, although every score is low
        [0.9, 0.9, 0.9, 0.5, 0.5],
    ], np.float32)
    result = metrics.exclusive_top1(scores, positive, label_map)
    assert result == {"category": {"accuracy": pytest.approx(2 / 3), "images": 3}}


def test_confusion_counts_and_reduction_to_top_classes():
    positive = np.zeros((6, 4), bool)
    for row, label in enumerate([0, 0, 0, 1, 1, 2]):
        positive[row, label] = True
    scores = np.zeros((6, 4), np.float32)
    for row, label in enumerate([0, 0, 1, 1, 3, 2]):
        scores[row, label] = 1.0
    counts = figures.group_confusion(scores, positive, np.arange(4))
    assert counts.tolist() == [[2, 1, 0, 0], [0, 1, 0, 1], [0, 0, 1, 0], [0, 0, 0, 0]]
    matrix, rows, cols = figures.reduce_confusion(counts, ["a", "b", "c", "d"], max_classes=2)
    assert rows == ["a", "b"] and cols == ["a", "b", "(other classes)"]
    assert matrix.tolist() == [[2, 1, 0], [0, 1, 1]]


def test_error_margin_ranks_confident_mistakes_first():
    positive = np.array([[1, 0], [1, 0], [1, 0]], bool)
    scores = np.array([[0.9, 0.1], [0.4, 0.1], [0.05, 0.95]], np.float32)
    margins = scoring.error_margins(scores, positive, np.array([0.5, 0.5]))
    assert margins[0] == 0
    assert margins[1] == pytest.approx(0.1)
    assert margins[2] == pytest.approx(0.45 + 0.45)


def _assert_real_png(path: Path, min_side: int = 300) -> None:
    assert path.is_file(), path
    with Image.open(path) as image:
        assert image.format == "PNG"
        pixels = np.asarray(image.convert("RGB"))
    assert min(pixels.shape[:2]) >= min_side
    packed = (pixels[..., 0].astype(np.int32) << 16) | (pixels[..., 1].astype(np.int32) << 8) | pixels[..., 2]
    assert pixels.std() > 10 and np.unique(packed).size > 50  # drawn, not blank


def test_plots_are_written_and_drawn(tiny, evaluated):
    assert evaluated["plot_group"] == "category"  # exclusive groups tie at 3 labels: the first one
    files = evaluated["plots"]
    assert Path(files["confusion"]).name == "confusion_category.png"
    assert Path(files["pca"]).name == "pca_category.png"
    for path in files.values():
        _assert_real_png(Path(path))
    markdown = (tiny.run_dir / "metrics.md").read_text()
    assert "| micro | macro | samples |" in markdown and "confusion_category.png" in markdown


def test_gallery_holds_the_worst_images(tiny, evaluated):
    scores = tiny.scores()
    thresholds = np.array([row["threshold"] for row in evaluated["labels"]])
    margins = scoring.error_margins(scores, tiny.positive, thresholds)
    worst = scoring.WorstImages(3)
    worst.offer(tiny.images.astype(np.float32), scores, tiny.positive, tiny.ids, thresholds)
    chosen = [item[2] for item in worst.worst_first()]
    assert chosen == [tiny.ids[i] for i in np.argsort(-margins, kind="stable")[:3]]
    assert np.array_equal(worst.worst_first()[0][3], tiny.images[tiny.ids.index(chosen[0])])


def test_group_option_and_default_thresholds(tiny, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny.run_dir, run_dir)
    (run_dir / "thresholds.json").unlink()
    (run_dir / "plots").exists() and shutil.rmtree(run_dir / "plots")
    assert main(["--run-dir", str(run_dir), "--data", str(tiny.data_dir), "--group", "accessory",
                          "--gallery-size", "0"]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["thresholds"].startswith("0.5 for every label")
    assert all(row["threshold"] == 0.5 for row in metrics["labels"])
    assert Path(metrics["plots"]["confusion"]).name == "confusion_accessory.png"
    assert metrics["plots"]["worst_misclassified"] is None
    y_pred = (tiny.scores() >= 0.5).astype(int)
    assert metrics["micro_f1"] == pytest.approx(f1_score(tiny.positive.astype(int), y_pred, average="micro", zero_division=0))
    assert "0.5 for every label" in capsys.readouterr().out


@pytest.mark.parametrize("case", ["missing_run_dir", "missing_model", "unknown_group", "unknown_split", "bad_batch"])
def test_bad_input_is_one_line_and_exit_2(tiny, tmp_path, capsys, case):
    run_dir, extra = tiny.run_dir, []
    if case == "missing_run_dir":
        run_dir = tmp_path / "nowhere"
    elif case == "missing_model":
        run_dir = tmp_path / "run"
        shutil.copytree(tiny.run_dir, run_dir)
        (run_dir / "model.keras").unlink()
    elif case == "unknown_group":
        extra = ["--group", "sleeves"]
    elif case == "unknown_split":
        extra = ["--split", "test"]
    else:
        extra = ["--batch-size", "0"]
    argv = ["--run-dir", str(run_dir), "--data", str(tiny.data_dir), *extra]
    if case == "missing_run_dir":  # once as a user types it: no traceback, no TensorFlow start-up lines
        result = run_module("fashion_tf.evaluate", *argv)
        code, stderr = result.returncode, result.stderr
    else:
        code, stderr = run_cli(main, argv), capsys.readouterr().err
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    expected = {"missing_run_dir": "nowhere: run directory not found", "missing_model": "model.keras: not found",
                "unknown_group": "unknown label group 'sleeves'", "unknown_split": "no split 'test'",
                "bad_batch": "--batch-size must be >= 1"}[case]
    assert expected in lines[0]
