"""The unseen-class protocol: train on some classes, query and retrieve among the others;
the classes are disjoint, drawn by the seed or named, kept in the bundle, and the rotation is
learned on seen classes only."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from hashkit.bundle import load_bundle
from hashkit.config import TrainConfig
from hashkit.data.base import Dataset
from hashkit.data.protocol import class_numbers, load_split, make_split
from hashkit.errors import DataError

TEN_CLASSES = np.repeat(np.arange(10), 150)
SMALL = dict(queries_per_class=10, train_per_class=50)


def test_unseen_split_keeps_training_and_search_classes_apart():
    split = make_split(TEN_CLASSES, "unseen", seed=0, **SMALL)
    unseen = split.unseen_classes
    assert len(unseen) == 3 and unseen == sorted(unseen)
    train_classes = set(TEN_CLASSES[split.train])
    assert train_classes == set(range(10)) - set(unseen)
    assert set(TEN_CLASSES[split.query]) == set(unseen)
    assert set(TEN_CLASSES[split.database]) == set(unseen)
    assert len(split.query) == 30 and len(split.train) == 7 * 50
    # the database is every other image of the unseen classes
    assert len(split.database) == 3 * 150 - 30
    split.check(len(TEN_CLASSES))


def test_unseen_classes_are_reproducible_by_seed():
    a = make_split(TEN_CLASSES, "unseen", seed=4, **SMALL)
    b = make_split(TEN_CLASSES, "unseen", seed=4, **SMALL)
    assert a.unseen_classes == b.unseen_classes
    assert np.array_equal(a.train, b.train) and np.array_equal(a.query, b.query)
    drawn = {tuple(make_split(TEN_CLASSES, "unseen", s, **SMALL).unseen_classes) for s in range(6)}
    assert len(drawn) > 1


def test_named_unseen_classes_are_used():
    split = make_split(TEN_CLASSES, "unseen", 0, unseen_classes=[9, 7, 8], **SMALL)
    assert split.unseen_classes == [7, 8, 9]
    assert set(TEN_CLASSES[split.train]) == set(range(7))


@pytest.mark.parametrize(
    "unseen,message",
    [
        ([12], "unseen class 12 has no items"),
        ([1, 1], "repeat"),
        (list(range(9)), "two seen ones"),
        ([], "at least one unseen class"),
    ],
)
def test_bad_unseen_classes_are_refused_clearly(unseen, message):
    with pytest.raises(DataError, match=message):
        make_split(TEN_CLASSES, "unseen", 0, unseen_classes=unseen, **SMALL)


def test_unseen_protocol_refuses_what_it_cannot_split():
    with pytest.raises(DataError, match="single-label"):
        make_split(np.eye(10, dtype=np.uint8)[TEN_CLASSES], "unseen", 0, **SMALL)
    with pytest.raises(DataError, match="at least 3 classes"):
        make_split(np.repeat([0, 1], 100), "unseen", 0, **SMALL)
    with pytest.raises(DataError, match="more than 10"):
        make_split(np.repeat(np.arange(10), 10), "unseen", 0, unseen_classes=[0], **SMALL)
    with pytest.raises(DataError, match="not 'reduced'"):
        make_split(TEN_CLASSES, "reduced", 0, unseen_classes=[1], **SMALL)


def test_class_numbers_accepts_names_and_numbers_and_names_the_classes_otherwise():
    names = ["shirt", "bag", "boot"]
    assert class_numbers(["boot", "0"], names) == [2, 0]
    with pytest.raises(DataError, match="'sock' is neither.*0=shirt, 1=bag, 2=boot"):
        class_numbers(["sock"], names)
    with pytest.raises(DataError, match="'3'"):
        class_numbers(["3"], names)


@pytest.mark.parametrize("suffix", [".json", ".npz"])
def test_a_saved_unseen_split_keeps_its_classes(tmp_path, suffix):
    split = make_split(TEN_CLASSES, "unseen", 0, **SMALL)
    split.save(tmp_path / f"s{suffix}")
    loaded = load_split(tmp_path / f"s{suffix}", len(TEN_CLASSES))
    assert loaded.unseen_classes == split.unseen_classes and loaded.protocol == "unseen"


def test_training_and_the_rotation_see_only_seen_classes(monkeypatch):
    import hashkit.train as train_module

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 30)
    images = rng.integers(0, 255, (len(labels), 16, 16), dtype=np.uint8)
    ds = Dataset(images, labels=labels, name="toy")
    split = make_split(labels, "unseen", 0, queries_per_class=5, train_per_class=20)
    seen_by_search = []
    real_search = train_module.random_search_rotation

    def spy(hq, hb, lq, lb, **kwargs):
        seen_by_search.extend([*lq, *lb])
        return real_search(hq, hb, lq, lb, **kwargs)

    monkeypatch.setattr(train_module, "random_search_rotation", spy)
    config = TrainConfig(bits=8, epochs=1, batch_size=12, per_class=4, rotation_steps=5)
    result = train_module.train(ds, split, config)
    assert seen_by_search and not set(seen_by_search) & set(split.unseen_classes)
    assert result.bundle.train_config["protocol"] == "unseen"
    assert result.bundle.train_config["unseen_classes"] == split.unseen_classes


def _mnist_like_folder(root, sizes):
    """The four MNIST IDX files in ``root``: ``sizes[c]`` 8x8 images of class c, split between
    the "train" and "t10k" files (hashkit joins them)."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(len(sizes)), sizes).astype(np.uint8)
    images = (rng.integers(0, 60, (len(labels), 8, 8)) + 60 * labels[:, None, None]).astype(
        np.uint8
    )
    root.mkdir()
    half = len(labels) // 2
    for part, rows in (("train", slice(0, half)), ("t10k", slice(half, None))):
        for kind, array in (("images-idx3", images[rows]), ("labels-idx1", labels[rows])):
            header = struct.pack(">I", 0x0800 | array.ndim)
            header += struct.pack(f">{array.ndim}I", *array.shape)
            (root / f"{part}-{kind}-ubyte").write_bytes(header + array.tobytes())
    return root


def test_train_protocol_unseen_stores_the_named_classes_in_the_bundle(tmp_path, run_cli):
    # The protocol's sizes: 500 training images per seen class, 100 queries per unseen one.
    root = _mnist_like_folder(tmp_path / "mnist", [500, 500, 101])
    model = tmp_path / "m.pt"
    result = run_cli(
        "train", "--data", "mnist", "--root", root, "--protocol", "unseen",
        "--unseen-classes", "2", "--bits", "8", "--epochs", "1", "--per-class", "40",
        "--rotation", "none", "--out", model, "-q",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    config = load_bundle(model).train_config
    assert config["protocol"] == "unseen" and config["unseen_classes"] == [2]
    # The default batch (100: 2.5 classes of 40) shrinks to the 2 seen classes x 40.
    assert config["batch_size"] == 80
    # encode --model and bench --model read the split from the bundle: the same classes
    from hashkit.cli.options import load_data

    _, split = load_data(None, None, None, None, None, defaults=config)
    assert split.protocol == "unseen" and split.unseen_classes == [2]


@pytest.mark.parametrize(
    "args,message",
    [
        (["--unseen-classes", "1,2"], "needs --protocol unseen"),
        (["--protocol", "unseen", "--unseen-classes", "1,,2"], "empty entry"),
        (["--protocol", "unseen", "--unseen-classes", "1,1"], "twice"),
        (["--protocol", "unseen", "--unseen-classes", "1", "--split", __file__], "no --split"),
    ],
)
def test_unseen_class_option_mistakes_are_usage_errors(tmp_path, run_cli, args, message):
    result = run_cli("train", *args, "--out", tmp_path / "m.pt")
    assert result.exit_code == 2
    assert message in result.stderr


def test_an_unknown_unseen_class_is_one_line_naming_the_classes(tmp_path, image_folder, run_cli):
    root, _ = image_folder
    result = run_cli(
        "train", "--data", root, "--protocol", "unseen", "--unseen-classes", "class9",
        "--out", tmp_path / "m.pt",
    )  # fmt: skip
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "'class9'" in lines[0] and "0=class0" in lines[0]
    assert not (tmp_path / "m.pt").exists()
