"""Data loading, splits and the torch feed, on small files written here in the real formats."""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import struct
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

import hashkit.data.load as load_module
from hashkit.data import (
    Dataset,
    ImageTransform,
    Split,
    TorchImages,
    channel_stats,
    default_transform,
    load_dataset,
    load_split,
    make_split,
)
from hashkit.data.cifar import load_cifar10
from hashkit.data.folder import IMAGE_EXTENSIONS, load_image_folder
from hashkit.data.idx import read_idx
from hashkit.data.listfile import load_list_file
from hashkit.errors import DataError

# --- writers of the real formats ------------------------------------------------------------


def write_idx(path, array: np.ndarray) -> None:
    """uint8 IDX: magic 0x0000 08 ndim (2051 for 3-D images, 2049 for 1-D labels)."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if str(path).endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        with open(path, "wb") as f:
            f.write(data)


def write_mnist_folder(folder, rng, n_train=12, n_test=5, gz=True, dotted=False):
    os.makedirs(folder, exist_ok=True)
    parts = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for stem, array in parts.items():
        name = stem.replace("-idx", ".idx") if dotted else stem
        write_idx(os.path.join(folder, name + (".gz" if gz else "")), array)
    return parts


def cifar_batches(rng, per_batch=4) -> dict[str, bytes]:
    """The pickled files of a tiny CIFAR-10, as Python's pickle writes them."""
    files = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"batch_label": name.encode(),
            b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            b"labels": [int(v) for v in rng.integers(0, 10, per_batch)],
        }
        files[name] = pickle.dumps(batch, protocol=2)
    names = [
        b"plane",
        b"car",
        b"bird",
        b"cat",
        b"deer",
        b"dog",
        b"frog",
        b"horse",
        b"ship",
        b"lorry",
    ]
    files["batches.meta"] = pickle.dumps({b"label_names": names, b"num_vis": 3072})
    return files


def save_image(path, size=(10, 8), color=(200, 30, 40), fmt=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", size, color).save(path, format=fmt)


# --- IDX --------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".gz", ""])
def test_read_idx_round_trips_images_and_labels(tmp_path, suffix):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 7, dtype=np.uint8)
    write_idx(tmp_path / f"img{suffix}", images)
    write_idx(tmp_path / f"lab{suffix}", labels)
    raw = (gzip.open if suffix else open)(tmp_path / f"img{suffix}", "rb").read()
    assert struct.unpack(">I", raw[:4])[0] == 2051
    raw = (gzip.open if suffix else open)(tmp_path / f"lab{suffix}", "rb").read()
    assert struct.unpack(">I", raw[:4])[0] == 2049
    np.testing.assert_array_equal(read_idx(tmp_path / f"img{suffix}"), images)
    np.testing.assert_array_equal(read_idx(tmp_path / f"lab{suffix}"), labels)


def test_read_idx_rejects_bad_magic_and_truncation(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x12\x34\x08\x01" + b"\x00" * 8)
    with pytest.raises(DataError, match="bad magic"):
        read_idx(tmp_path / "bad")
    write_idx(tmp_path / "ok", np.zeros((3, 4, 4), np.uint8))
    (tmp_path / "short").write_bytes((tmp_path / "ok").read_bytes()[:-5])
    with pytest.raises(DataError, match="header says"):
        read_idx(tmp_path / "short")


def test_fashion_mnist_from_root_is_training_then_test_images(tmp_path):
    parts = write_mnist_folder(tmp_path / "fm", np.random.default_rng(1))
    ds = load_dataset("fashion-mnist", root=str(tmp_path / "fm"))
    np.testing.assert_array_equal(
        ds.images,
        np.concatenate([parts["train-images-idx3-ubyte"], parts["t10k-images-idx3-ubyte"]]),
    )
    np.testing.assert_array_equal(
        ds.labels,
        np.concatenate([parts["train-labels-idx1-ubyte"], parts["t10k-labels-idx1-ubyte"]]),
    )
    assert ds.labels.dtype == np.int64 and ds.paths == [] and not ds.multi_label
    assert ds.class_names[0] == "T-shirt/top" and len(ds) == 17


def test_mnist_found_raw_in_hashkit_data_subfolder(tmp_path, monkeypatch):
    write_mnist_folder(tmp_path / "data" / "mnist", np.random.default_rng(2), gz=False, dotted=True)
    monkeypatch.setenv("HASHKIT_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(load_module, "SYSTEM_DATA_DIRS", [])
    ds = load_dataset("MNIST")
    assert ds.name == "mnist" and ds.images.shape == (17, 28, 28) and ds.class_names[3] == "3"


def test_missing_builtin_dataset_says_where_it_looked_and_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HASHKIT_DATA", str(tmp_path / "env"))
    monkeypatch.setattr(load_module, "SYSTEM_DATA_DIRS", [str(tmp_path / "sys")])
    with pytest.raises(DataError) as err:
        load_dataset("fashion-mnist")
    message = str(err.value)
    assert str(tmp_path / "env" / "fashion-mnist") in message
    assert str(tmp_path / "sys" / "fashion-mnist") in message
    assert "apt-get install dataset-fashion-mnist" in message and "\n" not in message


def test_root_is_looked_in_first_then_hashkit_data_then_system_folders(tmp_path, monkeypatch):
    in_root = write_mnist_folder(tmp_path / "root", np.random.default_rng(3), n_train=4)
    write_mnist_folder(tmp_path / "env" / "fashion-mnist", np.random.default_rng(4), n_train=6)
    write_mnist_folder(tmp_path / "sys" / "fashion-mnist", np.random.default_rng(5), n_train=8)
    monkeypatch.setenv("HASHKIT_DATA", str(tmp_path / "env"))
    monkeypatch.setattr(load_module, "SYSTEM_DATA_DIRS", [str(tmp_path / "sys")])
    from_root = load_dataset("fashion-mnist", root=str(tmp_path / "root"))
    np.testing.assert_array_equal(from_root.images[:4], in_root["train-images-idx3-ubyte"])
    assert len(load_dataset("fashion-mnist", root=str(tmp_path / "wrong"))) == 6 + 5
    monkeypatch.delenv("HASHKIT_DATA")
    assert len(load_dataset("fashion-mnist", root=str(tmp_path / "wrong"))) == 8 + 5


def test_dataset_in_no_place_lists_every_place_looked_in(tmp_path, monkeypatch):
    monkeypatch.setenv("HASHKIT_DATA", str(tmp_path / "env"))
    monkeypatch.setattr(load_module, "SYSTEM_DATA_DIRS", [str(tmp_path / "sys")])
    with pytest.raises(DataError) as err:
        load_dataset("mnist", root=str(tmp_path / "wrong"))
    message = str(err.value)
    places = [
        tmp_path / "wrong",
        tmp_path / "wrong" / "mnist",
        tmp_path / "env" / "mnist",
        tmp_path / "env",
        tmp_path / "sys" / "mnist",
    ]
    positions = [
        message.index(f"{p}, ") if f"{p}, " in message else message.index(f"{p};") for p in places
    ]
    assert positions == sorted(positions)


# --- CIFAR-10 ---------------------------------------------------------------------------------


def test_cifar10_folder_and_archive_give_the_same_canonical_order(tmp_path):
    files = cifar_batches(np.random.default_rng(4))
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name, blob in files.items():
        (folder / name).write_bytes(blob)
    archive = tmp_path / "arch" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        for name, blob in files.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))

    from_folder = load_dataset("cifar10", root=str(tmp_path))
    from_archive = load_dataset("cifar10", root=str(archive.parent))
    np.testing.assert_array_equal(from_folder.images, from_archive.images)
    np.testing.assert_array_equal(from_folder.labels, from_archive.labels)

    batches = [pickle.loads(files[f"data_batch_{i}"]) for i in range(1, 6)]
    batches.append(pickle.loads(files["test_batch"]))
    assert from_folder.images.shape == (24, 32, 32, 3)
    expected_labels = np.concatenate([b[b"labels"] for b in batches])
    np.testing.assert_array_equal(from_folder.labels, expected_labels)
    # item 4 is the first image of data_batch_2: red plane first, row-major.
    flat = batches[1][b"data"][0]
    assert from_folder.images[4, 0, 1, 0] == flat[1]
    assert from_folder.images[4, 2, 3, 1] == flat[1024 + 2 * 32 + 3]
    assert from_folder.images[4, 31, 31, 2] == flat[3071]
    assert from_folder.class_names[1] == "car" and from_folder.class_names[9] == "lorry"
    assert from_folder.load_image(4).mode == "RGB"


def test_cifar10_pickle_that_would_run_code_is_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name, blob in cifar_batches(np.random.default_rng(5)).items():
        (folder / name).write_bytes(blob)
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": os.system}))
    with pytest.raises(DataError, match="refusing to load"):
        load_cifar10(str(folder))


def test_cifar10_pickles_of_numpy_arrays_load_under_every_protocol(tmp_path):
    rng = np.random.default_rng(6)
    folder = tmp_path / "b"
    folder.mkdir()
    for i, (name, blob) in enumerate(cifar_batches(rng).items()):
        batch = pickle.loads(blob)
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2 + i % 4))
    assert len(load_cifar10(str(folder))) == 24


def test_cifar10_with_malformed_labels_or_class_names_is_one_data_error(tmp_path):
    files = cifar_batches(np.random.default_rng(7))
    for name, change in [
        ("data_batch_3", lambda b: b.update({b"labels": ["cat"] * 4})),
        ("batches.meta", lambda b: b.update({b"label_names": 10})),
    ]:
        folder = tmp_path / name
        folder.mkdir()
        for member, blob in files.items():
            (folder / member).write_bytes(blob)
        batch = pickle.loads(files[name])
        change(batch)
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        with pytest.raises(DataError, match=name):
            load_cifar10(str(folder))


# --- list files -------------------------------------------------------------------------------


def test_list_file_reads_multi_hot_labels_and_images_relative_to_its_folder(tmp_path):
    save_image(str(tmp_path / "images" / "a.jpg"), color=(255, 0, 0), fmt="JPEG")
    save_image(str(tmp_path / "images" / "sub" / "b.png"), color=(0, 0, 255))
    (tmp_path / "nus_wide_21.txt").write_text(
        "images/a.jpg 1 0 1\n\nimages/sub/b.png 0 1 1\n", encoding="utf-8"
    )
    ds = load_dataset(str(tmp_path / "nus_wide_21.txt"))
    assert ds.multi_label and ds.labels.dtype == np.uint8
    np.testing.assert_array_equal(ds.labels, [[1, 0, 1], [0, 1, 1]])
    assert ds.paths[1] == os.path.join(str(tmp_path), "images", "sub", "b.png")
    assert ds.load_image(1).getpixel((0, 0)) == (0, 0, 255)
    assert ds.images is None and ds.class_names == ["0", "1", "2"]
    assert len(load_dataset("nus-wide", root=str(tmp_path))) == 2


def test_list_file_images_may_live_under_another_root(tmp_path):
    save_image(str(tmp_path / "img_root" / "x.png"))
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "train.txt").write_text("x.png 0 1\n", encoding="utf-8")
    with pytest.raises(DataError, match="x.png not found under"):
        load_dataset(str(tmp_path / "lists" / "train.txt"))
    ds = load_dataset(str(tmp_path / "lists" / "train.txt"), root=str(tmp_path / "img_root"))
    assert ds.load_image(0).size == (10, 8)


def test_list_file_with_uneven_or_non_binary_labels_names_the_line(tmp_path):
    (tmp_path / "l.txt").write_text("a.jpg 0 1\nb.jpg 1\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"l\.txt:2"):
        load_list_file(str(tmp_path / "l.txt"))
    (tmp_path / "m.txt").write_text("a.jpg 0 2\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"m\.txt:1: labels must be 0 or 1"):
        load_list_file(str(tmp_path / "m.txt"))


# --- image folders ----------------------------------------------------------------------------


def test_image_extensions_cover_torchvision_ones_and_gif():
    from torchvision.datasets.folder import IMG_EXTENSIONS

    assert set(IMG_EXTENSIONS) <= set(IMAGE_EXTENSIONS) and ".gif" in IMAGE_EXTENSIONS


def test_labelled_folder_has_sorted_classes_and_finds_images_recursively(tmp_path):
    save_image(str(tmp_path / "dogs" / "b.JPG"), fmt="JPEG")
    save_image(str(tmp_path / "dogs" / "deep" / "a.png"))
    save_image(str(tmp_path / "cats" / "z.Png"))
    save_image(str(tmp_path / "cats" / "y.gif"), fmt="GIF")
    save_image(str(tmp_path / "cats" / ".hidden.png"))
    (tmp_path / "cats" / "notes.txt").write_text("not an image")
    ds = load_dataset(str(tmp_path))
    assert ds.class_names == ["cats", "dogs"]
    rel = [os.path.relpath(p, tmp_path) for p in ds.paths]
    assert rel == [
        os.path.join("cats", "y.gif"),
        os.path.join("cats", "z.Png"),
        os.path.join("dogs", "b.JPG"),
        os.path.join("dogs", "deep", "a.png"),
    ]
    np.testing.assert_array_equal(ds.labels, [0, 0, 1, 1])
    assert ds.labels.dtype == np.int64 and ds.load_image(0).mode == "RGB"


def test_folder_with_loose_images_is_unlabelled_and_corrupt_image_is_named(tmp_path):
    save_image(str(tmp_path / "one.png"))
    save_image(str(tmp_path / "2024" / "two.webp"), fmt="WEBP")
    (tmp_path / "2024" / "broken.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    ds = load_image_folder(str(tmp_path))
    assert ds.labels is None and ds.class_names == [] and len(ds) == 3
    broken = ds.paths.index(os.path.join(str(tmp_path), "2024", "broken.jpg"))
    with pytest.raises(DataError, match="broken.jpg"):
        ds.load_image(broken)
    assert ds.load_image(ds.paths.index(os.path.join(str(tmp_path), "one.png"))).size == (10, 8)
    with pytest.raises(DataError, match="unlabelled"):
        make_split(ds.labels)


def test_empty_folder_and_unknown_name_are_data_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        load_dataset(str(tmp_path / "empty"))
    with pytest.raises(DataError, match="neither a built-in name"):
        load_dataset("imagenet-21k")


def test_subset_keeps_the_items_in_the_given_order():
    images = np.arange(5 * 2 * 2, dtype=np.uint8).reshape(5, 2, 2)
    ds = Dataset(images=images, labels=np.arange(5, dtype=np.int64), class_names=list("abcde"))
    sub = ds.subset([3, 1])
    np.testing.assert_array_equal(sub.images, images[[3, 1]])
    np.testing.assert_array_equal(sub.labels, [3, 1])
    with pytest.raises(DataError, match="out of range"):
        ds.subset([5])


# --- splits -----------------------------------------------------------------------------------


def test_reduced_split_has_the_paper_sizes_for_cifar_like_labels():
    labels = np.repeat(np.arange(10), 6000)
    np.random.default_rng(0).shuffle(labels)
    split = make_split(labels, "reduced", seed=0)
    assert (len(split.query), len(split.database), len(split.train)) == (1000, 59000, 5000)
    assert np.intersect1d(split.query, split.database).size == 0
    assert np.isin(split.train, split.database).all()
    np.testing.assert_array_equal(np.bincount(labels[split.query]), [100] * 10)
    np.testing.assert_array_equal(np.bincount(labels[split.train]), [500] * 10)
    assert split.train.dtype == np.int64 and split.protocol == "reduced"


def test_full_split_trains_on_the_whole_database_with_the_same_queries():
    labels = np.repeat(np.arange(3), 20)
    reduced = make_split(labels, "reduced", seed=7, queries_per_class=4, train_per_class=5)
    full = make_split(labels, "full", seed=7, queries_per_class=4, train_per_class=5)
    np.testing.assert_array_equal(reduced.query, full.query)
    np.testing.assert_array_equal(full.train, full.database)
    assert len(full.database) == 48


def test_split_is_determined_by_the_seed():
    labels = np.repeat(np.arange(4), 30)
    a = make_split(labels, seed=1, queries_per_class=5, train_per_class=10)
    b = make_split(labels, seed=1, queries_per_class=5, train_per_class=10)
    c = make_split(labels, seed=2, queries_per_class=5, train_per_class=10)
    np.testing.assert_array_equal(a.query, b.query)
    np.testing.assert_array_equal(a.train, b.train)
    assert not np.array_equal(a.query, c.query)


def test_split_of_a_single_class_says_one_class_and_what_it_needs():
    with pytest.raises(DataError, match=r"all 700 items are of one class \(3\).*at least two"):
        make_split(np.full(700, 3), "reduced")


def test_split_with_a_too_small_class_or_bad_protocol_is_refused():
    labels = np.array([0] * 20 + [1] * 6)
    with pytest.raises(DataError, match="class 1 has 6 items"):
        make_split(labels, queries_per_class=4, train_per_class=5)
    assert len(make_split(labels, "full", queries_per_class=4).query) == 8
    with pytest.raises(DataError, match="unknown protocol"):
        make_split(labels, "paper")


def test_multi_label_split_draws_per_concept_in_order():
    rng = np.random.default_rng(0)
    labels = (rng.random((400, 5)) < 0.3).astype(np.uint8)
    split = make_split(labels, "reduced", seed=3, queries_per_class=10, train_per_class=20)
    assert len(split.query) == 50 and len(split.train) == 100
    assert np.intersect1d(split.query, split.database).size == 0
    assert np.isin(split.train, split.database).all()
    assert len(split.query) + len(split.database) == 400
    # every concept got at least its own queries and training items
    assert (labels[split.query].sum(0) >= 10).all() and (labels[split.train].sum(0) >= 20).all()
    again = make_split(labels, "reduced", seed=3, queries_per_class=10, train_per_class=20)
    np.testing.assert_array_equal(split.train, again.train)
    with pytest.raises(DataError, match="concept"):
        make_split(labels, "reduced", queries_per_class=10, train_per_class=200)


@pytest.mark.parametrize("suffix", [".npz", ".json"])
def test_split_save_and_load_round_trip(tmp_path, suffix):
    split = make_split(np.repeat(np.arange(3), 10), seed=5, queries_per_class=2, train_per_class=3)
    split.save(tmp_path / f"split{suffix}")
    loaded = load_split(tmp_path / f"split{suffix}", n=30)
    for part in ("train", "query", "database"):
        np.testing.assert_array_equal(getattr(loaded, part), getattr(split, part))
        assert getattr(loaded, part).dtype == np.int64
    assert (loaded.protocol, loaded.seed) == ("reduced", 5)


def test_load_split_rejects_overlap_out_of_range_and_empty_parts(tmp_path):
    def write(doc):
        path = tmp_path / "s.json"
        path.write_text(json.dumps(doc))
        return path

    with pytest.raises(DataError, match="query and database indices overlap"):
        load_split(write({"train": [0], "query": [1, 2], "database": [2, 3]}))
    with pytest.raises(DataError, match="out of range"):
        load_split(write({"train": [0], "query": [1], "database": [2, 9]}), n=5)
    with pytest.raises(DataError, match="database indices must be a non-empty"):
        load_split(write({"train": [0], "query": [1], "database": []}))
    with pytest.raises(DataError, match="lacks database"):
        load_split(write({"train": [0], "query": [1]}))
    with pytest.raises(DataError, match=r"\.npz or \.json"):
        Split(np.array([0]), np.array([1]), np.array([2])).save(tmp_path / "s.csv")


# --- the torch feed ---------------------------------------------------------------------------


def test_batched_array_path_matches_the_pil_path():
    rng = np.random.default_rng(0)
    rgb = Dataset(images=rng.integers(0, 256, (6, 12, 12, 3), dtype=np.uint8), name="rgb")
    for channels in (1, 3):
        transform = default_transform(12, channels, train=False, mean=(0.4,), std=(0.2,))
        batched = torch.stack([x for x, _ in TorchImages(rgb, [4, 0, 2], transform)])
        via_pil = torch.stack([transform(rgb.load_image(i)) for i in (4, 0, 2)])
        assert batched.shape == (3, channels, 12, 12)
        # the tensor RGB-to-grey conversion may round differently from PIL's by one level
        assert torch.allclose(batched, via_pil, atol=1.01 / 255 / 0.2)
    grey = Dataset(images=rng.integers(0, 256, (2, 8, 8), dtype=np.uint8))
    x, _ = TorchImages(grey, None, default_transform(8, 1, train=False))[1]
    expected = (torch.from_numpy(grey.images[1]).float() / 255 - 0.5) / 0.5
    assert torch.allclose(x[0], expected)


def test_torch_images_feed_a_dataloader_with_labels_and_indices():
    rng = np.random.default_rng(1)
    ds = Dataset(
        images=rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
        labels=rng.integers(0, 3, 10).astype(np.int64),
    )
    feed = TorchImages(ds, [9, 3, 5, 7], default_transform(32, 3, train=True, augment=True))
    x, y, idx = next(iter(torch.utils.data.DataLoader(feed, batch_size=4)))
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and idx.tolist() == [9, 3, 5, 7]
    np.testing.assert_array_equal(y.numpy(), ds.labels[[9, 3, 5, 7]])


def test_augmentation_moves_pixels_but_evaluation_does_not():
    ds = Dataset(images=np.random.default_rng(2).integers(0, 256, (64, 16, 16), dtype=np.uint8))
    plain = ImageTransform(16, 1).batch(ds.images)
    for kind in ("crop", "crop-flip", "affine"):
        augmented = ImageTransform(16, 1, augment=kind).batch(
            ds.images, torch.Generator().manual_seed(0)
        )
        assert augmented.shape == plain.shape and not torch.allclose(augmented, plain)
    assert default_transform(16, 1, train=False, augment="affine").augment == "none"
    assert default_transform(16, 3, train=True, augment=True).augment == "crop-flip"


def test_file_dataset_feeds_multi_hot_labels_resized(tmp_path):
    save_image(str(tmp_path / "a.png"), size=(40, 20))
    save_image(str(tmp_path / "b.jpg"), size=(15, 30), fmt="JPEG")
    (tmp_path / "l.txt").write_text("a.png 1 0 1\nb.jpg 0 1 0\n", encoding="utf-8")
    ds = load_list_file(str(tmp_path / "l.txt"))
    x, y, idx = TorchImages(ds, None, default_transform(24, 3, train=False))[1]
    assert x.shape == (3, 24, 24) and y.dtype == torch.float32 and y.tolist() == [0, 1, 0]
    assert idx == 1


def test_channel_stats_are_the_pixel_mean_and_std():
    images = np.random.default_rng(3).integers(0, 256, (20, 6, 6, 3), dtype=np.uint8)
    mean, std = channel_stats(Dataset(images=images))
    np.testing.assert_allclose(mean, (images / 255).mean((0, 1, 2)), rtol=1e-9)
    np.testing.assert_allclose(std, (images / 255).std((0, 1, 2)), rtol=1e-6)
    (grey_mean,), _ = channel_stats(Dataset(images=images), channels=1)
    assert 0 < grey_mean < 1


def test_export_keeps_every_class_inside_the_folder_and_apart(tmp_path):
    from hashkit.data.export import export_images

    names = ["..", "a/b", "a_b", ".hidden", ""]
    images = np.zeros((5, 4, 4), dtype=np.uint8)
    ds = Dataset(images=images, labels=np.arange(5), class_names=names, name="t")
    out = tmp_path / "box" / "out"
    assert export_images(ds, np.arange(5), out) == 5
    written = sorted(str(p.relative_to(out)) for p in (tmp_path / "box").rglob("*.png"))
    assert written == ["0/0.png", "4/4.png", "a_b-2/2.png", "a_b/1.png", "hidden/3.png"]


def test_export_gives_each_class_its_own_folder_when_a_suffixed_name_is_taken(tmp_path):
    from hashkit.data.export import class_folders, export_images

    names = ["a-2", "a_", "a~", "A", "b", "b-5", "b?"]
    folders = class_folders(names)
    assert len({f.casefold() for f in folders}) == len(names)
    assert folders[:2] == ["a-2", "a"] and folders[4:6] == ["b", "b-5"]
    ds = Dataset(images=np.zeros((7, 4, 4), np.uint8), labels=np.arange(7), class_names=names)
    assert export_images(ds, np.arange(7), tmp_path) == 7
    assert sorted(len(list(d.iterdir())) for d in tmp_path.iterdir()) == [1] * 7


def test_an_export_interrupted_while_saving_leaves_no_half_written_file(tmp_path, monkeypatch):
    """Ctrl-C in the middle of a PNG: the file being written is removed, the ones before it
    stay, and the export run again writes the rest."""
    from hashkit.data.export import export_images

    ds = Dataset(images=np.zeros((3, 4, 4), np.uint8), labels=np.zeros(3, np.int64))
    save = Image.Image.save
    calls = []

    def save_then_interrupt(self, fp, *args, **kwargs):
        calls.append(fp)
        save(self, fp, *args, **kwargs)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        export_images(ds, np.arange(3), tmp_path)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["0.png"]
    monkeypatch.setattr(Image.Image, "save", save)
    assert export_images(ds, np.arange(3), tmp_path) == 2
