"""Read image sources (id, URLs, labels) from iMaterialist JSON or CSV, streaming.

Formats, detected from the file's first bytes:

* iMaterialist Fashion 2018 JSON::

    {"images": [{"url": "https://...", "imageId": "1"}],
     "annotations": [{"labelId": ["95", "66"], "imageId": "1"}]}

* iMaterialist Furniture 2018 JSON (ids and labels are ints, ``url`` may be a list)::

    {"images": [{"image_id": 1, "url": ["https://a", "https://b"]}],
     "annotations": [{"image_id": 1, "label_id": [95, 66]}]}

  ``annotations`` may be absent (test.json); other top-level keys are ignored.

* CSV ``id,url[,labels]`` with an optional header row; ``labels`` is space-separated and
  ``url`` may hold several space-separated URLs (tried in order).

JSON is streamed with ijson (C backend when available) in two passes over the file:
pass 1 reads ``annotations.item`` and keeps only the labels of this shard's images, interned;
pass 2 streams ``images.item`` and yields records as it goes. The two passes cost about
twice a plain parse but never hold the image list in memory, and work whatever the order
of the two arrays in the file. `iter_source_records` runs them one after the other, so its first
record comes after the annotations pass; `SourceReader` (used by the downloader) streams images
at once and reads the annotations in a background thread (first record in milliseconds).
Measured on a synthetic 1,014,544-image train.json (183 MB), see bench/bench_download.py:
peak RSS ~335 MB for the whole file, ~20 MB for a 1/300 share.

Sharding: an image belongs to shard ``crc32(utf8(image_id)) % num_shards``. It needs no
extra pass (both passes can filter independently), is stable across runs, machines and
Python versions, and puts every copy of a duplicated id in the same shard, so every
image id lands in exactly one shard.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import re
import sys
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Protocol

import ijson

from fashion_tf.errors import UserError

try:  # the C backend parses ~10x faster than the pure-Python one
    _ijson = ijson.get_backend("yajl2_c")
except Exception:  # pragma: no cover - depends on the installed wheel
    _ijson = ijson

JSON_READ_CHUNK = 256 * 1024
DUPLICATE_EXAMPLES = 5
ID_KEYS = ("imageId", "image_id", "id")
LABEL_KEYS = ("labelId", "label_id", "labels")
CSV_ID_HEADERS = {"id", "image_id", "imageid"}


@dataclass(frozen=True)
class SourceRecord:
    image_id: str
    urls: tuple[str, ...]
    labels: tuple[str, ...] = ()


@dataclass
class SourceStats:
    """What a pass over a source file saw; filled in while iterating."""

    format: str = ""
    images_in_file: int = 0  # every shard
    records: int = 0  # yielded for this shard
    duplicate_ids: int = 0  # extra copies of an id in this shard, dropped
    duplicate_examples: list[str] = field(default_factory=list)
    annotations_in_file: int = 0
    duplicate_annotations: int = 0  # extra annotation rows for an id in this shard, merged

    def note_duplicate(self, image_id: str) -> None:
        self.duplicate_ids += 1
        if len(self.duplicate_examples) < DUPLICATE_EXAMPLES:
            self.duplicate_examples.append(image_id)

    def describe(self) -> str:
        text = f"{self.records} records ({self.format}, {self.images_in_file} images read)"
        if self.duplicate_ids:
            text += f", {self.duplicate_ids} duplicate image ids dropped (e.g. {', '.join(self.duplicate_examples)})"
        if self.duplicate_annotations:
            text += f", {self.duplicate_annotations} repeated annotation rows merged"
        return text


def shard_of(image_id: str, num_shards: int) -> int:
    """The shard an image id belongs to: stable crc32 of its UTF-8 bytes."""
    if num_shards == 1:
        return 0
    return zlib.crc32(image_id.encode("utf-8")) % num_shards


def check_shard_args(shard_index: int, num_shards: int) -> None:
    if num_shards < 1:
        raise UserError(f"--num-shards must be >= 1, got {num_shards}")
    if not 0 <= shard_index < num_shards:
        raise UserError(f"--shard-index must be in [0, {num_shards - 1}], got {shard_index}")


def detect_format(path: Path) -> str:
    """'json' or 'csv', from the first non-blank byte (extension only as a tie-breaker)."""
    with open(path, "rb") as handle:
        head = handle.read(4096)
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"{"):
        return "json"
    if text.startswith(b"["):
        raise UserError(f"{path.name}: top level is a JSON array; expected an object with an \"images\" array")
    if not text and path.suffix.lower() == ".json":
        raise UserError(f"{path.name}: file is empty")
    return "csv"


def iter_source_records(
    path: str | os.PathLike,
    shard_index: int = 0,
    num_shards: int = 1,
    stats: SourceStats | None = None,
) -> Iterator[SourceRecord]:
    """Yield this shard's records with their labels, each image id once, in file order.

    Raises UserError on bad input. For JSON the first record comes after one pass over the
    annotations (seconds for 1M images); SourceReader can start without waiting for it.
    """
    reader = SourceReader(path, shard_index, num_shards, stats)
    yield from reader.records(with_labels=True)


class LabelSource(Protocol):
    """Where the download loop gets each record's labels: a SourceReader (JSON annotations read in the background)
    or LabelsInRecords (records that carry their labels)."""

    stats: SourceStats

    def labels_ready(self) -> bool: ...

    def wait_for_labels(self) -> None: ...

    def labels_for(self, record: SourceRecord) -> tuple[str, ...]: ...


@dataclass
class LabelsInRecords:
    """The labels of records that carry them (a work list of a distributed download, say)."""

    stats: SourceStats = field(default_factory=lambda: SourceStats(format="work list"))

    def labels_ready(self) -> bool:
        return True

    def wait_for_labels(self) -> None:
        pass

    def labels_for(self, record: SourceRecord) -> tuple[str, ...]:
        return record.labels


class SourceReader:
    """A source file's records for one shard, with labels now or (JSON) later.

    `records(with_labels=False)` streams images at once while `start_loading_labels()` reads the
    annotations in a background thread; `labels_for(record)` then joins them (waiting if needed).
    """

    def __init__(self, path: str | os.PathLike, shard_index: int = 0, num_shards: int = 1, stats: SourceStats | None = None):
        self.path = Path(path)
        check_shard_args(shard_index, num_shards)
        if not self.path.is_file():
            raise UserError(f"{self.path}: no such file")
        self.shard_index, self.num_shards = shard_index, num_shards
        self.stats = stats if stats is not None else SourceStats()
        self.kind = detect_format(self.path)
        self._labels: dict[str, tuple[str, ...]] | None = {} if self.kind == "csv" else None
        self._labels_error: BaseException | None = None
        self._labels_done = threading.Event()
        self._labels_thread: threading.Thread | None = None
        if self.kind == "csv":
            self._labels_done.set()

    def records(self, with_labels: bool = True) -> Iterator[SourceRecord]:
        if self.kind == "csv":
            return _iter_csv(self.path, self.shard_index, self.num_shards, self.stats)
        if with_labels:
            self.load_labels()
        return self._iter_json_images()

    def __iter__(self) -> Iterator[SourceRecord]:
        return self.records(with_labels=True)

    # -- labels (JSON annotations)

    def load_labels(self) -> None:
        """Read the annotations now (or wait for the background read)."""
        if self._labels_thread is None and not self._labels_done.is_set():
            self._load_labels_into_self()
        self.wait_for_labels()

    def start_loading_labels(self) -> None:
        if self._labels_thread is None and not self._labels_done.is_set():
            self._labels_thread = threading.Thread(target=self._load_labels_into_self, name="annotations", daemon=True)
            self._labels_thread.start()

    def labels_ready(self) -> bool:
        """True once labels are known; raises the annotation pass's UserError if it failed."""
        if self._labels_error is not None:
            raise self._labels_error
        return self._labels_done.is_set()

    def wait_for_labels(self) -> None:
        self._labels_done.wait()
        self.labels_ready()

    def labels_for(self, record: SourceRecord) -> tuple[str, ...]:
        self.wait_for_labels()
        return self._labels.get(record.image_id, ()) or record.labels

    def _load_labels_into_self(self) -> None:
        try:
            self._labels = _read_annotations(self.path, self.shard_index, self.num_shards, self.stats)
        except BaseException as err:  # handed to the consumer's thread by labels_ready()
            self._labels_error = err
        finally:
            self._labels_done.set()

    def _iter_json_images(self) -> Iterator[SourceRecord]:
        path, stats, num_shards, shard_index = self.path, self.stats, self.num_shards, self.shard_index
        stats.format = "iMaterialist JSON"
        labels_by_id = self._labels if self._labels_done.is_set() and self._labels is not None else {}
        seen: set[str] = set()
        crc32 = zlib.crc32
        index = -1
        try:
            with _json_items(path, "images.item") as entries:
                for index, entry in enumerate(entries):
                    raw_id = entry.get("imageId") if type(entry) is dict else None
                    if type(raw_id) is not str:
                        raw_id = _checked_id(path, "images", index, entry)
                    url = entry.get("url")
                    if (type(url) is not str or not url) and "url" not in entry:
                        raise UserError(f"{path.name}: images[{index}]: missing \"url\"")
                    if num_shards > 1 and crc32(raw_id.encode("utf-8")) % num_shards != shard_index:
                        continue
                    if type(url) is str and url and url == url.strip():
                        urls = (url,)
                    else:
                        urls = _url_tuple(url, f"{path.name}: images[{index}]")
                    if raw_id in seen:
                        stats.note_duplicate(raw_id)
                        continue
                    seen.add(raw_id)
                    labels = labels_by_id.get(raw_id, ())
                    if not labels and len(entry) > 2:
                        labels = _label_tuple(_first_key(entry, LABEL_KEYS), f"{path.name}: images[{index}]")
                    stats.records += 1
                    yield SourceRecord(raw_id, urls, labels)
        finally:  # also when the consumer stops early (--limit)
            stats.images_in_file = index + 1
        if index < 0 and not _has_images_key(path):
            raise UserError(f"{path.name}: no \"images\" array (expected iMaterialist layout {{\"images\": [...], \"annotations\": [...]}})")


# ----------------------------------------------------------------------------- JSON


class _TrackingReader(io.RawIOBase):
    """A binary file that remembers the last chunk handed out, to place a JSON syntax error."""

    def __init__(self, handle):
        self._handle = handle
        self.chunk_start = 0
        self.chunk = b""

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        self.chunk_start += len(self.chunk)
        self.chunk = data
        return data

    def readinto(self, buffer) -> int:  # pragma: no cover - ijson uses read()
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _json_error(path: Path, reader: _TrackingReader, err: Exception) -> UserError:
    """One line: the parser's reason and the byte offset where it stopped."""
    lines = str(err).split("\n")
    reason = lines[0].removeprefix("parse error: ").strip() or type(err).__name__
    where = f"near byte {reader.chunk_start + len(reader.chunk)}"
    if "premature EOF" in reason:
        return UserError(f"{path.name}: invalid JSON: unexpected end of file at byte {reader.chunk_start + len(reader.chunk)} (truncated file?)")
    if len(lines) >= 3 and "^" in lines[2]:
        snippet_line, arrow = lines[1], lines[2].index("^")
        snippet = snippet_line.strip()
        lead = len(snippet_line) - len(snippet_line.lstrip())
        haystack = reader.chunk.decode("utf-8", "replace").translate({10: 32, 13: 32, 9: 32})
        found = haystack.find(snippet) if snippet else -1
        if found >= 0 and haystack.find(snippet, found + 1) < 0:
            offset = len(haystack[: found + arrow - lead].encode("utf-8"))
            where = f"at byte {reader.chunk_start + offset}"
        if snippet:
            where += f" ({snippet[max(0, arrow - lead - 20): arrow - lead + 10]!r})"
    return UserError(f"{path.name}: invalid JSON {where}: {reason}")


@contextlib.contextmanager
def _json_items(path: Path, prefix: str) -> Iterator[Iterator[Any]]:
    """ijson items under `prefix`; syntax errors inside the block become one-line UserErrors.

    A context manager rather than a generator: one generator layer less costs ~1 s per 1M items.
    """
    with open(path, "rb") as raw:
        reader = _TrackingReader(raw)
        try:
            yield _ijson.items(reader, prefix, buf_size=JSON_READ_CHUNK, use_float=True)
        except ijson.JSONError as err:
            raise _json_error(path, reader, err) from None
        except UnicodeDecodeError as err:
            raise UserError(f"{path.name}: not UTF-8 text ({err.reason} near byte {reader.chunk_start + err.start})") from None


def _first_key(entry: dict, keys: Iterable[str]) -> Any:
    for key in keys:
        if key in entry:
            return entry[key]
    return None


def _id_text(value: Any, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        raise UserError(f"{where}: image id must be a string or integer, got {value!r:.60}")
    text = str(value).strip()
    if not text:
        raise UserError(f"{where}: empty image id")
    return text


def _label_tuple(value: Any, where: str, intern=sys.intern) -> tuple[str, ...]:
    """Labels as strings, first occurrence kept, order kept."""
    if value is None:
        return ()
    if not isinstance(value, list):
        value = [value]
    seen: dict[str, None] = {}
    for item in value:
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            raise UserError(f"{where}: label ids must be strings or integers, got {item!r:.60}")
        if isinstance(item, float):
            if not item.is_integer():
                raise UserError(f"{where}: label id {item!r} is not an integer")
            item = int(item)
        text = str(item).strip()
        if text:
            seen[intern(text)] = None
    return tuple(seen)


def _url_tuple(value: Any, where: str) -> tuple[str, ...]:
    urls = value if isinstance(value, list) else [value]
    out = []
    for url in urls:
        if not isinstance(url, str):
            raise UserError(f"{where}: \"url\" must be a string or a list of strings, got {url!r:.60}")
        url = url.strip()
        if url:
            out.append(url)
    if not out:
        raise UserError(f"{where}: empty \"url\"")
    return tuple(dict.fromkeys(out))


def _read_annotations(path: Path, shard_index: int, num_shards: int, stats: SourceStats) -> dict[str, tuple[str, ...]]:
    """Labels of this shard's images. The loop is hot (1M rows): checks and messages only on the odd row."""
    labels_by_id: dict[str, tuple[str, ...]] = {}
    intern, crc32 = sys.intern, zlib.crc32
    index = -1
    with _json_items(path, "annotations.item") as entries:
        for index, entry in enumerate(entries):
            raw_id = entry.get("imageId") if type(entry) is dict else None
            if type(raw_id) is not str:
                raw_id = _checked_id(path, "annotations", index, entry)
            if num_shards > 1 and crc32(raw_id.encode("utf-8")) % num_shards != shard_index:
                continue
            raw_labels = entry.get("labelId")
            try:  # intern() raises TypeError on a non-str label: the slow path checks and converts
                if type(raw_labels) is not list:
                    raise TypeError
                labels = tuple(dict.fromkeys(map(intern, raw_labels)))
            except TypeError:
                labels = _label_tuple(_first_key(entry, LABEL_KEYS), f"{path.name}: annotations[{index}]")
            image_id = raw_id
            if image_id in labels_by_id:
                stats.duplicate_annotations += 1
                labels = tuple(dict.fromkeys(labels_by_id[image_id] + labels))
            labels_by_id[intern(image_id)] = labels
    stats.annotations_in_file = index + 1
    return labels_by_id


def _checked_id(path: Path, array: str, index: int, entry: Any) -> str:
    """The slow path for an id: other key spellings, ints, and one-line errors."""
    where = f"{path.name}: {array}[{index}]"
    if not isinstance(entry, dict):
        raise UserError(f"{where}: expected an object, got {type(entry).__name__}")
    raw_id = _first_key(entry, ID_KEYS)
    if raw_id is None:
        raise UserError(f"{where}: missing \"imageId\"")
    return _id_text(raw_id, where)


def _has_images_key(path: Path) -> bool:
    """Only on the error path: is there a top-level "images" key at all (maybe an empty list)?"""
    with open(path, "rb") as handle:
        for prefix, event, value in _ijson.parse(handle):
            if prefix == "" and event == "map_key" and value == "images":
                return True
    return False


# ----------------------------------------------------------------------------- CSV


def _iter_csv(path: Path, shard_index: int, num_shards: int, stats: SourceStats) -> Iterator[SourceRecord]:
    stats.format = "CSV"
    seen: set[str] = set()
    with open(path, newline="", encoding="utf-8-sig") as handle:
        rows = csv.reader(handle)
        columns = (0, 1, 2)
        try:
            for row in rows:
                line = rows.line_num
                if not row or all(not cell.strip() for cell in row):
                    continue
                if line == 1 and row[0].strip().lower() in CSV_ID_HEADERS:
                    columns = _csv_columns(path, row)
                    continue
                where = f"{path.name}: line {line}"
                id_col, url_col, label_col = columns
                if len(row) <= max(id_col, url_col):
                    raise UserError(f"{where}: expected id,url[,labels], got {len(row)} column(s)")
                stats.images_in_file += 1
                image_id = _id_text(row[id_col], where)
                if shard_of(image_id, num_shards) != shard_index:
                    continue
                urls = tuple(dict.fromkeys(row[url_col].split()))
                if not urls:
                    raise UserError(f"{where}: empty url")
                if image_id in seen:
                    stats.note_duplicate(image_id)
                    continue
                seen.add(image_id)
                label_text = row[label_col] if label_col is not None and len(row) > label_col else ""
                labels = tuple(dict.fromkeys(sys.intern(x) for x in re.split(r"[\s;|]+", label_text) if x))
                stats.records += 1
                yield SourceRecord(image_id, urls, labels)
        except UnicodeDecodeError as err:
            raise UserError(f"{path.name}: line {rows.line_num + 1}: not UTF-8 text ({err.reason})") from None
        except csv.Error as err:
            raise UserError(f"{path.name}: line {rows.line_num}: {err}") from None


def _csv_columns(path: Path, header: list[str]) -> tuple[int, int, int | None]:
    names = [cell.strip().lower() for cell in header]
    id_col = next(i for i, name in enumerate(names) if name in CSV_ID_HEADERS)
    url_col = next((i for i, name in enumerate(names) if name in ("url", "urls")), None)
    if url_col is None:
        raise UserError(f"{path.name}: line 1: header has no \"url\" column ({','.join(header)})")
    label_col = next((i for i, name in enumerate(names) if name in ("labels", "label_ids", "labelid", "label_id")), None)
    return id_col, url_col, label_col
