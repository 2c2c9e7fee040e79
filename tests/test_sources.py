"""fashion_tf.sources: both iMaterialist JSON shapes, CSV, duplicates, sharding, one-line errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fashion_tf.errors import UserError
from fashion_tf.sources import SourceReader, SourceRecord, SourceStats, iter_source_records, shard_of

DATA_DIR = Path(os.environ.get("FASHION_PRODUCTS_DIR", Path(__file__).resolve().parents[1].parent / "shared/data/fashion-products"))


def write_json(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def fashion_json(tmp_path: Path, n: int = 5) -> Path:
    return write_json(tmp_path / "train.json", {
        "images": [{"url": f"https://example.invalid/{i}.jpg", "imageId": str(i)} for i in range(1, n + 1)],
        "annotations": [{"labelId": [str(i), "66", str(i), "7"], "imageId": str(i)} for i in range(1, n + 1)],
        "license": {"url": "https://example.invalid/license", "name": "CC"},
        "info": {"year": 2018},
    })


def test_fashion_2018_json_gives_string_ids_urls_and_deduplicated_labels(tmp_path):
    records = list(iter_source_records(fashion_json(tmp_path, 3)))
    assert records == [
        SourceRecord("1", ("https://example.invalid/1.jpg",), ("1", "66", "7")),
        SourceRecord("2", ("https://example.invalid/2.jpg",), ("2", "66", "7")),
        SourceRecord("3", ("https://example.invalid/3.jpg",), ("3", "66", "7")),
    ]


def test_furniture_2018_json_int_ids_and_url_lists(tmp_path):
    path = write_json(tmp_path / "furniture.json", {
        "images": [{"image_id": 1, "url": ["https://a/1", "https://b/1"]}, {"image_id": 2, "url": "https://a/2"}],
        "annotations": [{"image_id": 1, "label_id": 95}, {"image_id": 2, "label_id": [66, 66, 3]}],
    })
    assert list(iter_source_records(path)) == [
        SourceRecord("1", ("https://a/1", "https://b/1"), ("95",)),
        SourceRecord("2", ("https://a/2",), ("66", "3")),
    ]


def test_test_json_without_annotations_and_annotations_before_images(tmp_path):
    no_labels = write_json(tmp_path / "test.json", {"info": {}, "images": [{"url": "u1", "imageId": "1"}]})
    assert list(iter_source_records(no_labels)) == [SourceRecord("1", ("u1",), ())]
    reordered = write_json(tmp_path / "reordered.json", {
        "annotations": [{"labelId": ["9"], "imageId": "1"}], "images": [{"url": "u1", "imageId": "1"}]})
    assert list(iter_source_records(reordered)) == [SourceRecord("1", ("u1",), ("9",))]


def test_csv_with_and_without_header(tmp_path):
    plain = tmp_path / "plain.csv"
    plain.write_text("1,https://a/1.jpg,3 5 3\n2,https://a/2.jpg https://b/2.jpg\n\n3,https://a/3.jpg,\n", encoding="utf-8")
    assert list(iter_source_records(plain)) == [
        SourceRecord("1", ("https://a/1.jpg",), ("3", "5")),
        SourceRecord("2", ("https://a/2.jpg", "https://b/2.jpg"), ()),
        SourceRecord("3", ("https://a/3.jpg",), ()),
    ]
    headed = tmp_path / "headed.csv"
    headed.write_text("image_id,labels,url\n7,1 2,https://a/7.jpg\n", encoding="utf-8")
    assert list(iter_source_records(headed)) == [SourceRecord("7", ("https://a/7.jpg",), ("1", "2"))]


def test_duplicate_image_ids_are_kept_once_and_reported(tmp_path):
    path = write_json(tmp_path / "dup.json", {
        "images": [{"url": "first", "imageId": "1"}, {"url": "u2", "imageId": "2"}, {"url": "second", "imageId": "1"},
                   {"url": "third", "imageId": "1"}],
        "annotations": [{"labelId": ["1"], "imageId": "1"}, {"labelId": ["2", "1"], "imageId": "1"}],
    })
    stats = SourceStats()
    records = list(iter_source_records(path, stats=stats))
    assert [(r.image_id, r.urls) for r in records] == [("1", ("first",)), ("2", ("u2",))]
    assert records[0].labels == ("1", "2")  # repeated annotation rows are merged
    assert (stats.duplicate_ids, stats.duplicate_examples, stats.duplicate_annotations) == (2, ["1", "1"], 1)
    assert stats.images_in_file == 4 and stats.records == 2
    assert "2 duplicate image ids" in stats.describe()


def test_shards_cover_every_image_exactly_once_and_are_stable(tmp_path):
    path = fashion_json(tmp_path, 200)
    shards = [[r.image_id for r in iter_source_records(path, shard_index=i, num_shards=7)] for i in range(7)]
    flat = [image_id for shard in shards for image_id in shard]
    assert sorted(flat, key=int) == [str(i) for i in range(1, 201)]
    assert all(shards)  # crc32 spreads 200 ids over 7 shards
    assert shard_of("1014544", 300) == 148  # crc32 is the same on every machine and Python version
    for i, shard in enumerate(shards):  # labels travel with their image in every shard
        for record in iter_source_records(path, shard_index=i, num_shards=7):
            assert record.labels == tuple(dict.fromkeys((record.image_id, "66", "7")))


def test_reader_streams_images_before_labels_are_loaded(tmp_path):
    reader = SourceReader(fashion_json(tmp_path, 4))
    reader.start_loading_labels()
    records = list(reader.records(with_labels=False))
    assert [r.image_id for r in records] == ["1", "2", "3", "4"]
    assert reader.labels_for(records[2]) == ("3", "66", "7")


@pytest.mark.parametrize("content, message", [
    ({"images": [{"url": "a", "imageId": "1"}, {"imageId": "2"}]}, 'bad.json: images[1]: missing "url"'),
    ({"images": [{"url": "a"}]}, 'bad.json: images[0]: missing "imageId"'),
    ({"images": [{"url": "a", "imageId": {"x": 1}}]}, "bad.json: images[0]: image id must be a string or integer"),
    ({"images": [{"url": 5, "imageId": "1"}]}, 'bad.json: images[0]: "url" must be a string or a list of strings'),
    ({"images": [], "annotations": [{"labelId": ["1"]}]}, 'bad.json: annotations[0]: missing "imageId"'),
    ({"images": [{"url": "a", "imageId": "1"}], "annotations": [{"labelId": [{"a": 1}], "imageId": "1"}]},
     "bad.json: annotations[0]: label ids must be strings or integers"),
    ({"pictures": []}, 'bad.json: no "images" array'),
    ([1, 2], "bad.json: top level is a JSON array"),
])
def test_malformed_json_raises_one_line_error_naming_file_and_place(tmp_path, content, message):
    path = write_json(tmp_path / "bad.json", content)
    with pytest.raises(UserError) as caught:
        list(iter_source_records(path))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_json_syntax_error_names_its_byte_offset(tmp_path):
    path = tmp_path / "train.json"
    text = '{"images": [{"url": "a", "imageId": "1"},\n {"url" "b", "imageId": "2"}]}'
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UserError) as caught:
        list(iter_source_records(path))
    message = str(caught.value)
    assert message.startswith("train.json: invalid JSON at byte ")
    offset = int(message.split("at byte ")[1].split()[0])
    assert text.index('"b"') <= offset <= text.index('"b"') + 3  # where the parser stopped: in or just after "b"
    assert "colon" in message and "\n" not in message


def test_truncated_json_is_reported_as_unexpected_end(tmp_path):
    path = tmp_path / "train.json"
    path.write_text('{"images": [{"url": "a", "imageId": "1"}, {"url": "b", "im', encoding="utf-8")
    with pytest.raises(UserError, match=r"train.json: invalid JSON: unexpected end of file at byte \d+"):
        list(iter_source_records(path))


def test_bad_csv_and_bad_arguments(tmp_path):
    bad_csv = tmp_path / "list.csv"
    bad_csv.write_text("1,https://a/1.jpg\n2\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"list.csv: line 2: expected id,url\[,labels\], got 1 column"):
        list(iter_source_records(bad_csv))
    with pytest.raises(UserError, match="no such file"):
        list(iter_source_records(tmp_path / "absent.json"))
    with pytest.raises(UserError, match="--shard-index must be in"):
        list(iter_source_records(bad_csv, shard_index=3, num_shards=3))
    with pytest.raises(UserError, match="--num-shards must be >= 1"):
        list(iter_source_records(bad_csv, num_shards=0))


def test_real_fashion_products_train_json():
    train = DATA_DIR / "train.json"
    if not train.is_file():
        pytest.skip(f"{DATA_DIR} not present")
    stats = SourceStats()
    records = list(iter_source_records(train, stats=stats))
    assert len(records) == stats.images_in_file == 7168 and stats.duplicate_ids == 0
    assert all(r.labels and r.urls[0].endswith(f"/{r.image_id}.jpg") for r in records)
