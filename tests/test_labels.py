import numpy as np
import pytest

from fashion_tf.errors import UserError
from fashion_tf.labels import LabelMap


def write_csv(tmp_path, text, name="label_map.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture
def label_map(tmp_path):
    return LabelMap.from_csv(
        write_csv(
            tmp_path,
            "labelId,taskId,labelName,taskName\n"
            "10,2,Red,color\n1,1,Shirt,category\n2,1,Dress,category\n9,2,Blue,color\n",
        )
    )


def test_csv_is_ordered_by_numeric_id(label_map):
    assert label_map.ids == ("1", "2", "9", "10")
    assert label_map.names == ("Shirt", "Dress", "Blue", "Red")
    assert label_map.groups == ("category", "category", "color", "color")


def test_ids_as_strings_or_ints_map_to_zero_based_indices(label_map):
    assert label_map.index_of("1") == 0
    assert label_map.index_of(10) == 3
    assert label_map.index_of(" 9 ") == 2


def test_unknown_label_id_is_a_user_error_naming_it(label_map):
    with pytest.raises(UserError, match="unknown label id '77'"):
        label_map.index_of(77)


def test_encode_deduplicates_and_decode_inverts(label_map):
    row = label_map.encode(["10", "1", "1", 10])
    assert row.dtype == np.float32
    assert row.tolist() == [1, 0, 0, 1]
    assert label_map.decode(row) == ["1", "10"]
    assert label_map.indices(["10", "1", "1"]).tolist() == [0, 3]


def test_encode_many_matches_row_by_row(label_map):
    lists = [[0, 3], [], [1], [2, 1]]
    matrix = label_map.encode_many(lists)
    assert matrix.dtype == np.uint8 and matrix.shape == (4, 4)
    assert matrix.tolist() == [[1, 0, 0, 1], [0, 0, 0, 0], [0, 1, 0, 0], [0, 1, 1, 0]]
    assert label_map.encode_many([]).shape == (0, 4)


def test_groups_and_exclusive_groups(label_map):
    assert label_map.group_names() == ["category", "color"]
    assert label_map.group_members("color").tolist() == [2, 3]
    labels = label_map.encode_many([[0, 2, 3], [1, 2]])
    assert label_map.exclusive_groups(labels) == ["category"]
    with pytest.raises(UserError, match="unknown label group 'size'"):
        label_map.group_members("size")


def test_json_round_trip(label_map, tmp_path):
    label_map.to_json(tmp_path / "label_map.json")
    assert LabelMap.from_json(tmp_path / "label_map.json") == label_map


def test_derive_vocabulary_from_data():
    derived = LabelMap.from_ids(["66", 95, "9", "66"])
    assert derived.ids == ("9", "66", "95")
    with pytest.raises(UserError, match="no labels found"):
        LabelMap.from_ids([])


def test_from_groups_numbers_labels_from_one():
    lm = LabelMap.from_groups([("gender", ["Men", "Women"]), ("season", ["Summer"])])
    assert lm.ids == ("1", "2", "3") and lm.groups == ("gender", "gender", "season")


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "label map is empty"),
        ("labelId,taskId,labelName,taskName\n", "label map is empty"),
        ("id,name\n1,a\n", "missing column 'labelId'"),
        ("labelId,taskId,labelName,taskName\n1,1,a,g\n1,1,b,g\n", "line 3: label id '1' appears twice"),
        ("labelId,taskId,labelName,taskName\n,1,a,g\n", "line 2: empty label id"),
    ],
)
def test_bad_label_map_files(tmp_path, text, message):
    with pytest.raises(UserError, match=message):
        LabelMap.from_csv(write_csv(tmp_path, text))


def test_missing_and_corrupt_json(tmp_path):
    with pytest.raises(UserError, match="label map file not found"):
        LabelMap.from_json(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text('{"labels": [{"index": 1, "id": "1"}]}')
    with pytest.raises(UserError, match="without gaps"):
        LabelMap.from_json(tmp_path / "bad.json")


def test_real_imaterialist_style_label_map(fashion_products):
    lm = LabelMap.from_csv(fashion_products / "label_map.csv")
    assert len(lm) == 169
    assert "articleType" in lm.group_names()
    assert lm.index_of("1") == 0


def test_labels_outside_groups_keeps_label_order():
    from fashion_tf.labels import labels_outside_groups

    assert labels_outside_groups([[4, 0], [2]], 6) == [1, 3, 5]
    assert labels_outside_groups([], 2) == [0, 1]
