"""Label images with a trained run: files, folders (recursive) or http(s) URLs -> one JSON line per image.

    python -m fashion_tf.predict --run-dir RUN photo.jpg shots/ https://example.com/a.jpg [--top-k 5]

Each line is {"input": ..., "labels": [{"id", "name", "group", "score"}, ...]} with the labels whose
score reaches their threshold (thresholds.json of the run; 0.5 where it has none), highest score first.
An input that cannot be read gives {"input": ..., "error": ...}; the others go on, and the exit code is 1.
URLs are fetched with fashion_tf.url_fetch: loopback, private and link-local addresses are refused unless
--allow-private-urls.

    python -m fashion_tf.predict --run-dir RUN --kaggle-submission test.json --images DIR --out submission.csv

writes the iMaterialist Fashion 2018 submission (`image_id,label_id`, label ids separated by spaces) with a
row for every image of test.json; an image missing from DIR (or unreadable) gets an empty row and is counted.

The run directory is checked before TensorFlow is imported, so a wrong path costs no start-up time and
prints one line.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np

from fashion_tf.errors import UserError, run_cli
from fashion_tf.fileio import atomic_open
from fashion_tf.image_guard import DEFAULT_MAX_PIXELS, UnsafeImage, check_image
from fashion_tf.inference import score_images
from fashion_tf.run_folder import DEFAULT_THRESHOLD, Run, load_run
from fashion_tf.url_fetch import FetchError, FetchOptions, fetch

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp")
MAX_IMAGE_BYTES = 50 * 1024 * 1024
NOT_READABLE = "not a readable image (JPEG, PNG, GIF or BMP)"
DOWNLOAD_WORKERS = 8


# ---------------------------------------------------------------------------- the run and its model
def quiet_tensorflow() -> None:
    """Keep TensorFlow's start-up chatter (CUDA probing, CPU features) off the user's stderr."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def load_model(run: Run):
    """The run's Keras model, checked against the label map and the configured image size."""
    quiet_tensorflow()
    import keras

    import fashion_tf.models  # noqa: F401  registers the custom layers a saved model may hold

    try:
        model = keras.models.load_model(run.model_path, compile=False)
    except Exception as err:  # a corrupt or foreign file: one line naming it
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise UserError(f"{run.model_path}: cannot load the model ({type(err).__name__}: {first_line[:200]})") from None
    width = model.output_shape[-1] if not isinstance(model.output_shape, list) else None
    if width != run.num_labels:
        raise UserError(f"{run.model_path}: model outputs {width} scores but {run.folder.label_map.name} has {run.num_labels} labels")
    return model


# ---------------------------------------------------------------------------- images
def decode_image(data: bytes, data_cfg):
    """Encoded bytes (JPEG, PNG, GIF, BMP) -> float32 [S, S, 3] in [0, 255], exactly as evaluation decodes."""
    import tensorflow as tf

    from fashion_tf.data import decode_for_eval

    return decode_for_eval(tf.constant(data), data_cfg)


def is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def expand_inputs(inputs: Sequence[str]) -> list[str]:
    """Files and URLs as given; folders replaced by their image files (recursive, sorted)."""
    expanded: list[str] = []
    for item in inputs:
        path = Path(item)
        if not is_url(item) and path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                print(f"warning: {path}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in this folder", file=sys.stderr)
            expanded.extend(str(p) for p in found)
        else:
            expanded.append(item)
    return expanded


def url_options(allow_private: bool = False, max_bytes: int = MAX_IMAGE_BYTES) -> FetchOptions:
    """predict's URL limits: its old 30 s read timeout, two minutes in all, MAX_IMAGE_BYTES."""
    return FetchOptions(read_timeout=30.0, total_timeout=120.0, max_bytes=max_bytes, allow_private=allow_private)


def read_input_bytes(item: str, fetch_options: FetchOptions | None = None) -> bytes:
    """The raw bytes of a file or URL; errors are one-line UserErrors naming the input."""
    if is_url(item):
        try:
            return fetch(item, fetch_options or url_options())
        except FetchError as err:
            hint = " (--allow-private-urls allows it)" if err.reason == "private_address" else ""
            raise UserError(f"download failed: {err}{hint}") from None
    path = Path(item)
    if not path.exists():
        raise UserError("no such file")
    if path.stat().st_size > MAX_IMAGE_BYTES:
        raise UserError(f"file larger than {MAX_IMAGE_BYTES // 2**20} MiB")
    try:
        return path.read_bytes()
    except OSError as err:
        raise UserError(f"cannot read: {err.strerror}") from None


def read_item(item: str, fetch_options: FetchOptions | None = None) -> tuple[bytes | None, str | None]:
    """(bytes, None) or (None, error message) for a file or URL."""
    try:
        return read_input_bytes(item, fetch_options), None
    except UserError as err:
        return None, str(err)


def decode_checked(data: bytes, data_cfg, max_pixels: int = DEFAULT_MAX_PIXELS):
    """(pixels, None) or (None, error message). The header is checked before decoding (image_guard)."""
    import tensorflow as tf

    try:
        check_image(data, max_pixels)
    except UnsafeImage as err:
        return None, str(err) if err.reason == "too_many_pixels" else NOT_READABLE
    try:
        return decode_image(data, data_cfg), None
    except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError, ValueError):
        return None, NOT_READABLE


def score_encoded(model, data_cfg, blobs: Sequence[bytes], max_pixels: int = DEFAULT_MAX_PIXELS,
                  pool: concurrent.futures.Executor | None = None) -> list[tuple[np.ndarray | None, str | None]]:
    """(scores [C], None) or (None, error message) for each encoded image, in order, from ONE model call.

    The one inference path of predict and the app: header check, evaluation decoding, the model. Decoding
    runs on `pool` when one is given.
    """
    decode = lambda data: decode_checked(data, data_cfg, max_pixels)  # noqa: E731
    decoded = list(pool.map(decode, blobs) if pool is not None else map(decode, blobs))
    good = [pixels for pixels, error in decoded if error is None]
    scores = iter(score_images(model, good)) if good else iter(())
    return [(next(scores), None) if error is None else (None, error) for _, error in decoded]


def _chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def score_batches(model, items: Sequence[str], data_cfg, batch_size: int, progress=None,
                  fetch_options: FetchOptions | None = None,
                  max_pixels: int = DEFAULT_MAX_PIXELS) -> Iterator[tuple[str, np.ndarray | None, str | None]]:
    """(input, scores [C] or None, error or None) for every input, in input order, `batch_size` images per model call."""
    with concurrent.futures.ThreadPoolExecutor(DOWNLOAD_WORKERS) as pool:
        for chunk in _chunks(list(items), batch_size):
            read = list(pool.map(lambda item: read_item(item, fetch_options), chunk))
            readable = [data for data, error in read if error is None]
            scored = iter(score_encoded(model, data_cfg, readable, max_pixels, pool=pool))
            for item, (_, read_error) in zip(chunk, read):
                scores, error = (None, read_error) if read_error is not None else next(scored)
                yield item, scores, error
            if progress is not None:
                progress.update(len(chunk))


def positive_labels(scores: np.ndarray, run: Run, top_k: int = 0) -> list[dict]:
    """The labels whose score reaches their threshold, highest score first (at most top_k when > 0)."""
    passing = np.flatnonzero(scores >= run.thresholds)
    order = passing[np.argsort(-scores[passing], kind="stable")]
    if top_k > 0:
        order = order[:top_k]
    lm = run.label_map
    return [{"id": lm.ids[i], "name": lm.names[i], "group": lm.groups[i], "score": round(float(scores[i]), 6)} for i in order]


def prediction_record(item: str, scores: np.ndarray | None, error: str | None, run: Run, top_k: int = 0) -> dict:
    """The JSON line predict prints for one input."""
    if error is not None:
        return {"input": item, "error": error}
    return {"input": item, "labels": positive_labels(scores, run, top_k)}


# ---------------------------------------------------------------------------- the two modes
def predict_inputs(run: Run, model, inputs: Sequence[str], batch_size: int, top_k: int, out=None,
                   fetch_options: FetchOptions | None = None,
                   max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """Write one JSON line per image (to stdout by default); returns (images labelled, failures)."""
    from tqdm import tqdm

    out = out if out is not None else sys.stdout
    items = expand_inputs(inputs)
    done = failed = 0
    with tqdm(total=len(items), unit="img", desc="predict", file=sys.stderr, disable=None) as progress:
        for item, scores, error in score_batches(model, items, run.config.data, batch_size, progress, fetch_options,
                                                 max_pixels):
            if error is not None:
                failed += 1
            else:
                done += 1
            out.write(json.dumps(prediction_record(item, scores, error, run, top_k)) + "\n")
            out.flush()
    return done, failed


def index_images(folder: Path) -> dict[str, Path]:
    """Image files under `folder` (recursive) by file stem, which is the image id for downloaded sets."""
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file():
            found.setdefault(path.stem, path)
    return found


def read_test_ids(test_json: Path) -> list[str]:
    """Image ids of test.json in file order (iMaterialist layout; annotations, if any, are ignored)."""
    try:
        from fashion_tf.sources import iter_source_records
    except ImportError:
        return _read_test_ids_plain(test_json)
    return [record.image_id for record in iter_source_records(test_json)]


def _read_test_ids_plain(test_json: Path) -> list[str]:
    if not test_json.is_file():
        raise UserError(f"{test_json}: no such file")
    try:
        images = json.loads(test_json.read_text(encoding="utf-8"))["images"]
        return [str(entry.get("imageId", entry.get("image_id"))) for entry in images]
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
        raise UserError(f"{test_json}: not an iMaterialist JSON with an \"images\" array ({type(err).__name__})") from None


def _sorted_label_ids(label_ids: Iterable[str]) -> list[str]:
    return sorted(label_ids, key=lambda x: (0, int(x), "") if x.isdigit() else (1, 0, x))


def write_kaggle_submission(run: Run, model, test_json: Path, images_dir: Path, out_path: Path, batch_size: int,
                            max_pixels: int = DEFAULT_MAX_PIXELS) -> dict:
    """submission.csv with a row for every test image; returns counts for the summary."""
    from tqdm import tqdm

    image_ids = read_test_ids(test_json)
    if not images_dir.is_dir():
        raise UserError(f"{images_dir}: images folder not found")
    files = index_images(images_dir)
    present = [image_id for image_id in image_ids if image_id in files]
    missing = [image_id for image_id in image_ids if image_id not in files]
    predicted: dict[str, list[str]] = {}
    unreadable: list[str] = []
    paths = [str(files[image_id]) for image_id in present]
    id_of_path = dict(zip(paths, present))
    with tqdm(total=len(paths), unit="img", desc="submission", file=sys.stderr, disable=None) as progress:
        for item, scores, error in score_batches(model, paths, run.config.data, batch_size, progress,
                                                 max_pixels=max_pixels):
            image_id = id_of_path[item]
            if error is not None:
                unreadable.append(image_id)
                continue
            predicted[image_id] = _sorted_label_ids(run.label_map.ids[i] for i in np.flatnonzero(scores >= run.thresholds))
    with atomic_open(out_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["image_id", "label_id"])
        for image_id in image_ids:
            writer.writerow([image_id, " ".join(predicted.get(image_id, []))])
    return {
        "rows": len(image_ids),
        "predicted": len(predicted),
        "with_labels": sum(1 for labels in predicted.values() if labels),
        "missing": missing,
        "unreadable": unreadable,
    }


def _examples(ids: Sequence[str], limit: int = 5) -> str:
    return ", ".join(ids[:limit]) + (", ..." if len(ids) > limit else "")


# ---------------------------------------------------------------------------- the stage
@dataclass
class Options:
    run_dir: str | Path
    inputs: Sequence[str] = ()  # image files, folders (recursive) or http(s) URLs
    thresholds: Optional[str | Path] = None  # None: RUN/thresholds.json, or 0.5 for every label without one
    batch_size: int = 32  # images per model call
    top_k: int = 0  # at most this many labels per image (0: every label over its threshold)
    kaggle_submission: Optional[str | Path] = None  # a test.json: write the submission CSV instead of JSON lines
    images: Optional[str | Path] = None  # with kaggle_submission: the downloaded test images
    out: str | Path = "submission.csv"  # with kaggle_submission: the CSV to write
    allow_private_urls: bool = False  # fetch URLs on loopback, private and link-local addresses too
    max_pixels: int = DEFAULT_MAX_PIXELS  # images declaring more pixels are refused before decoding

    def check(self) -> None:
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.top_k < 0:
            raise UserError(f"--top-k must be >= 0, got {self.top_k}")
        if self.max_pixels < 1:
            raise UserError(f"--max-pixels must be >= 1, got {self.max_pixels}")
        kaggle = self.kaggle_submission is not None
        if kaggle and self.inputs:
            raise UserError("give either INPUT... or --kaggle-submission, not both")
        if kaggle and self.images is None:
            raise UserError("--kaggle-submission needs --images DIR (the downloaded test images)")
        if not kaggle and not self.inputs:
            raise UserError("nothing to label: give image files, folders or URLs (or --kaggle-submission)")
        if kaggle and not Path(self.kaggle_submission).is_file():
            raise UserError(f"{self.kaggle_submission}: no such file")


def predict(options: Options, out=None) -> dict:
    """Label the inputs (JSON lines to `out`, stdout by default) or write the Kaggle submission; returns the counts
    and the summary line. Everything about the run is checked before TensorFlow is imported."""
    options.check()
    run = load_run(options.run_dir, options.thresholds)
    if run.thresholds_source.startswith(str(DEFAULT_THRESHOLD)):
        print(f"note: thresholds {run.thresholds_source}", file=sys.stderr)
    model = load_model(run)
    start = time.perf_counter()
    if options.kaggle_submission is not None:
        counts = write_kaggle_submission(run, model, Path(options.kaggle_submission), Path(options.images),
                                         Path(options.out), options.batch_size, options.max_pixels)
        summary = (f"wrote {options.out}: {counts['rows']} rows, {counts['predicted']} images labelled "
                   f"({counts['with_labels']} with at least one label) in {time.perf_counter() - start:.1f}s")
        if counts["missing"]:
            summary += (f"; {len(counts['missing'])} test images not found in {options.images} "
                        f"(empty rows: {_examples(counts['missing'])})")
        if counts["unreadable"]:
            summary += f"; {len(counts['unreadable'])} unreadable (empty rows: {_examples(counts['unreadable'])})"
        return {**counts, "failed": 0, "summary": summary + f"; thresholds: {run.thresholds_source}."}
    done, failed = predict_inputs(run, model, options.inputs, options.batch_size, options.top_k, out,
                                  url_options(options.allow_private_urls), options.max_pixels)
    elapsed = time.perf_counter() - start
    rate = (done + failed) / elapsed if elapsed > 0 else 0.0
    return {"labelled": done, "failed": failed,
            "summary": f"labelled {done} images, {failed} failed, in {elapsed:.1f}s ({rate:.1f} images/s); "
                       f"thresholds: {run.thresholds_source}."}


# ---------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    defaults = Options(run_dir="")
    parser = argparse.ArgumentParser(
        prog="python -m fashion_tf.predict",
        description="Label images with a trained run: one JSON line per image on stdout, or a Kaggle submission.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--run-dir", required=True, help="run directory written by fashion_tf.train")
    parser.add_argument("inputs", nargs="*", metavar="INPUT", help="image files, folders (searched recursively) or http(s) URLs")
    parser.add_argument("--thresholds", default=None, help="thresholds file; None: the run's, or 0.5 for every label without one")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help="images per model call")
    parser.add_argument("--top-k", type=int, default=defaults.top_k, help="at most this many labels per image (0: every label over its threshold)")
    parser.add_argument("--kaggle-submission", metavar="TEST_JSON", default=None, help="write a Kaggle submission for this test.json")
    parser.add_argument("--images", default=None, help="with --kaggle-submission: folder of downloaded test images named <image_id>.<ext> (searched recursively)")
    parser.add_argument("--out", default=defaults.out, help="with --kaggle-submission: the CSV to write")
    parser.add_argument("--allow-private-urls", action="store_true",
                        help="fetch URLs on loopback, private and link-local addresses too (refused by default)")
    parser.add_argument("--max-pixels", type=int, default=defaults.max_pixels,
                        help="refuse images whose header declares more pixels (decompression bombs), before decoding")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result = predict(Options(**vars(args)))
    print(result["summary"], file=sys.stderr)
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
