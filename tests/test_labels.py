"""Labels: class indices or 0/1 multi-hot, N x 1 as class indices, one-hot as single-label,
everything else refused where labels enter (metrics, stores, `hashkit eval`, list files)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from hashkit.data.listfile import load_list_file
from hashkit.errors import DataError, MismatchError
from hashkit.labels import check_labels, is_one_hot, normalize_label_pair, normalize_labels
from hashkit.metrics import protocol_top_k


@pytest.mark.parametrize(
    "labels,expected",
    [
        (np.array([2, 0, 5], dtype=np.uint8), [2, 0, 5]),
        (np.array([[2], [0], [5]]), [2, 0, 5]),
        (np.array([2.0, 0.0, 5.0]), [2, 0, 5]),
        (np.array([True, False, True]), [1, 0, 1]),
        ([3, 1], [3, 1]),
    ],
)
def test_class_indices_come_back_as_int64_n(labels, expected):
    out = check_labels(labels)
    assert out.dtype == np.int64 and out.ndim == 1 and out.tolist() == expected


def test_multi_hot_comes_back_as_uint8_and_is_kept_even_when_one_hot():
    multi = np.array([[1, 0, 1], [0, 0, 0]], dtype=bool)
    out = check_labels(multi)
    assert out.dtype == np.uint8 and out.tolist() == [[1, 0, 1], [0, 0, 0]]
    one_hot = np.eye(3, dtype=np.float32)[[2, 0]]
    assert check_labels(one_hot).tolist() == [[0, 0, 1], [1, 0, 0]]
    assert is_one_hot(check_labels(one_hot)) and not is_one_hot(out)


def test_normalize_turns_one_hot_rows_into_class_indices_only_when_every_row_is_one_hot():
    one_hot = np.eye(4, dtype=np.uint8)[[3, 1, 1]]
    out = normalize_labels(one_hot)
    assert out.dtype == np.int64 and out.tolist() == [3, 1, 1]
    almost = np.vstack([one_hot, [[0, 0, 0, 0]]])
    assert normalize_labels(almost).shape == (4, 4)


@pytest.mark.parametrize(
    "labels,message",
    [
        (np.array([0.0, np.nan]), "whole numbers"),
        (np.array([0.0, np.inf]), "whole numbers"),
        (np.array([1.5, 2.0]), "whole numbers"),
        (np.array([0, -3]), ">= 0"),
        (np.array([[0.5, 1.0], [1.0, 0.0]]), "0 or 1"),
        (np.array([[2, 0], [1, 0]]), "0 or 1"),
        (np.array([[np.nan, 1.0], [1.0, 0.0]]), "0 or 1"),
        (np.array(["cat", "dog"]), "numbers"),
        (np.array([{"a": 1}], dtype=object), "numbers"),
        (np.array(3), "shape"),
        (np.zeros((2, 2, 2)), "shape"),
        (np.zeros((2, 0)), "shape"),
        (np.array([2**64 - 1], dtype=np.uint64), "int64"),
    ],
)
def test_bad_labels_are_refused_with_a_message_naming_them(labels, message):
    with pytest.raises(DataError, match=message) as caught:
        check_labels(labels, "labels of q.h5")
    assert "labels of q.h5" in str(caught.value)


def test_pair_one_hot_beside_class_indices_is_single_label():
    lq, lb = normalize_label_pair(np.eye(3, dtype=np.uint8)[[0, 2]], np.array([2, 1, 0]))
    assert lq.tolist() == [0, 2] and lb.tolist() == [2, 1, 0]


def test_pair_one_hot_beside_true_multi_hot_stays_multi_hot():
    one_hot = np.eye(3, dtype=np.uint8)[[0, 2]]
    multi = np.array([[1, 1, 0], [0, 0, 1]], dtype=np.uint8)
    lq, lb = normalize_label_pair(one_hot, multi)
    assert lq.shape == (2, 3) and lb.shape == (2, 3)


def test_pair_multi_hot_beside_class_indices_or_other_widths_is_a_mismatch():
    multi = np.array([[1, 1, 0], [0, 0, 1]], dtype=np.uint8)
    with pytest.raises(MismatchError, match="multi-hot"):
        normalize_label_pair(multi, np.array([0, 1]))
    with pytest.raises(MismatchError, match="3 classes"):
        normalize_label_pair(multi, np.ones((2, 4), dtype=np.uint8))


def test_the_protocol_k_of_n_x_1_and_one_hot_labels_is_the_single_label_one():
    assert protocol_top_k(np.array([[1], [4], [2]])) == 1000
    assert protocol_top_k(np.eye(5, dtype=np.uint8)[[1, 4, 2]]) == 1000
    assert protocol_top_k(np.array([[1, 1, 0], [0, 1, 0]], dtype=np.uint8)) == 5000


def _list_file(tmp_path, rows):
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    text = "".join(f"a.png {' '.join(map(str, row))}\n" for row in rows)
    (tmp_path / "list.txt").write_text(text, encoding="utf-8")
    return str(tmp_path / "list.txt")


def test_a_one_hot_list_file_is_single_label_data(tmp_path):
    ds = load_list_file(_list_file(tmp_path, [[0, 0, 1], [1, 0, 0], [0, 0, 1]]))
    assert ds.labels.dtype == np.int64 and ds.labels.tolist() == [2, 0, 2]
    assert not ds.multi_label and ds.class_names == ["0", "1", "2"]
    assert protocol_top_k(ds.labels) == 1000


def test_a_multi_hot_list_file_stays_multi_label(tmp_path):
    ds = load_list_file(_list_file(tmp_path, [[0, 1, 1], [1, 0, 0]]))
    assert ds.multi_label and ds.labels.dtype == np.uint8
    assert protocol_top_k(ds.labels) == 5000
