"""What "Label photos" computes, without Streamlit: read uploads and URLs, score them with predict's code path
as one batch, the labels of each group to show, and predict's own rows for the download.

Reading and scoring are predict's (`read_item`, `score_encoded`, `prediction_record`): the page decodes, checks
and thresholds exactly as `python -m fashion_tf.predict` does.
"""

from __future__ import annotations

import concurrent.futures
import csv
import io
import json
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from fashion_tf import predict
from fashion_tf.run_folder import Run
from fashion_tf.url_fetch import FetchOptions

URL_WORKERS = 8
MODES = ("thresholds", "top_k")
DEFAULT_BARS = 10  # bars drawn per group: the highest scores (and every chosen label)
CSV_FIELDS = ("input", "id", "name", "group", "score", "error")


@dataclass
class Item:
    """One image to label: its name (a file name or URL, the "input" of predict's rows) and bytes, or an error."""

    name: str
    data: bytes | None = None
    error: str | None = None


@dataclass
class Labelled:
    name: str
    data: bytes | None  # the encoded image, for display (None when it could not be read)
    scores: np.ndarray | None  # float32 [C]
    error: str | None


# ---------------------------------------------------------------------------- reading
def _size_mb(count: int) -> str:
    return f"{count / 2**20:.3g} MiB"


def upload_item(name: str, data: bytes, max_bytes: int) -> Item:
    if len(data) > max_bytes:
        return Item(name, error=f"larger than the {_size_mb(max_bytes)} limit ({_size_mb(len(data))})")
    return Item(name, data)


def parse_urls(text: str) -> list[str]:
    """One URL per line; blank lines and lines starting with # are skipped."""
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def url_items(urls: Sequence[str], fetch_options: FetchOptions) -> list[Item]:
    """Each URL fetched (in parallel) through predict's reader, i.e. fashion_tf.url_fetch's checks and limits."""
    def read(url: str) -> Item:
        if not predict.is_url(url):
            return Item(url, error="not an http:// or https:// URL")
        data, error = predict.read_item(url, fetch_options)
        return Item(url, data, error)

    if not urls:
        return []
    with concurrent.futures.ThreadPoolExecutor(min(URL_WORKERS, len(urls))) as pool:
        return list(pool.map(read, urls))


def within_limit(uploads: Sequence, urls: Sequence[str], max_items: int) -> tuple[Sequence, Sequence[str], int]:
    """(uploads, urls, how many were left out): at most max_items in all, uploads first; nothing left out is fetched."""
    kept_uploads = uploads[:max_items]
    kept_urls = urls[:max_items - len(kept_uploads)]
    return kept_uploads, kept_urls, len(uploads) + len(urls) - len(kept_uploads) - len(kept_urls)


# ---------------------------------------------------------------------------- scoring
def label_items(model, run: Run, items: Sequence[Item]) -> list[Labelled]:
    """Every readable item scored in ONE model call (predict.score_encoded); the others keep their error."""
    readable = [item for item in items if item.error is None]
    scored = iter(predict.score_encoded(model, run.config.data, [item.data for item in readable]))
    labelled = []
    for item in items:
        scores, error = (None, item.error) if item.error is not None else next(scored)
        labelled.append(Labelled(item.name, item.data if error is None else None, scores, error))
    return labelled


# ---------------------------------------------------------------------------- what each group shows
@dataclass
class LabelScore:
    index: int
    id: str
    name: str
    score: float
    threshold: float
    chosen: bool = False

    @property
    def passes(self) -> bool:
        return self.score >= self.threshold  # predict's rule


@dataclass
class GroupResult:
    group: str
    single_choice: bool
    chosen: list[LabelScore]  # the labels the page names for this group, highest score first
    bars: list[LabelScore]  # the scores drawn, highest first (every chosen label among them)
    total: int  # labels in the group


def group_results(scores: np.ndarray, run: Run, single_choice: Sequence[str] = (), mode: str = "thresholds",
                  top_k: int = 1, max_bars: int = DEFAULT_BARS) -> list[GroupResult]:
    """Per label group, in label-map order: the chosen labels and the bars to draw.

    mode "thresholds": the labels whose score reaches their threshold (predict's rule); in a single-choice
    group only the highest of them. mode "top_k": the top_k highest scores of each group, thresholds aside.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    lm = run.label_map
    results = []
    for group in lm.group_names():
        members = lm.group_members(group)
        ranked = [LabelScore(int(i), lm.ids[i], lm.names[i], float(scores[i]), float(run.thresholds[i]))
                  for i in members[np.argsort(-scores[members], kind="stable")]]
        is_single = group in single_choice
        if mode == "top_k":
            chosen = ranked[:max(1, top_k)]
        else:
            chosen = [label for label in ranked if label.passes][:1 if is_single else None]
        for label in chosen:
            label.chosen = True
        bars = ranked[:max(max_bars, len(chosen))]
        results.append(GroupResult(group, is_single, chosen, bars, len(members)))
    return results


# ---------------------------------------------------------------------------- the download: predict's rows
def prediction_records(labelled: Sequence[Labelled], run: Run) -> list[dict]:
    """The JSON lines `python -m fashion_tf.predict` prints for the same images (every label over its threshold)."""
    return [predict.prediction_record(item.name, item.scores, item.error, run) for item in labelled]


def jsonl_text(records: Sequence[dict]) -> str:
    return "".join(json.dumps(record) + "\n" for record in records)


def csv_rows(records: Sequence[dict]) -> list[dict]:
    """predict's records flattened: one row per (image, label); an image with no label or an error gets one row
    (the fields it lacks are None, empty in the CSV)."""
    rows = []
    for record in records:
        base = {field: None for field in CSV_FIELDS} | {"input": record["input"]}
        if "error" in record:
            rows.append(base | {"error": record["error"]})
            continue
        rows.extend(base | {key: label[key] for key in ("id", "name", "group", "score")} for label in record["labels"])
        if not record["labels"]:
            rows.append(base)
    return rows


def csv_text(records: Sequence[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(csv_rows(records))
    return buffer.getvalue()
