"""The HDF5 code store: plain-h5py readable, streamed, appended, and never half-written."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from hashkit.codes import pack_codes, unpack_codes
from hashkit.errors import DataError, HashkitError
from hashkit.store import (
    CodeStore,
    StoreWriter,
    describe_store,
    read_store,
    store_count,
    write_store,
)


def random_store(n=50, bits=12, seed=0, labels=True) -> CodeStore:
    rng = np.random.default_rng(seed)
    return CodeStore(
        codes=pack_codes(rng.random((n, bits)) > 0.5),
        ids=np.arange(100, 100 + n, dtype=np.int64),
        bits=bits,
        paths=[f"img/{i}.png" for i in range(n)],
        labels=rng.integers(0, 3, n) if labels else None,
        fingerprint="f" * 64,
        class_names=["a", "b", "c"],
    )


def test_store_is_readable_with_plain_h5py(tmp_path):
    store = random_store()
    write_store(tmp_path / "s.h5", store)
    with h5py.File(tmp_path / "s.h5", "r") as f:
        assert f["codes"].dtype == np.uint8 and f["codes"].shape == (50, 2)
        assert np.array_equal(f["codes"][...], store.codes)
        assert np.array_equal(f["ids"][...], store.ids)
        assert [p.decode() for p in f["paths"][...]] == store.paths
        assert np.array_equal(f["labels"][...], store.labels)
        assert f.attrs["bits"] == 12 and f.attrs["bit_order"] == "little"
        assert f.attrs["model_fingerprint"] == "f" * 64
        assert f["codes"].chunks is not None and f["codes"].compression == "gzip"
        assert f["codes"].maxshape == (None, 2)
        assert f.attrs["uuid"] and f.attrs["created"] and f.attrs["hashkit_version"]


def test_store_written_by_plain_h5py_is_read_back(tmp_path):
    codes = np.packbits(np.eye(16, dtype=bool)[:5], axis=1, bitorder="little")
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["codes"] = codes
        f.attrs["bits"] = 16
        f.attrs["bit_order"] = "little"
    store = read_store(tmp_path / "x.h5")
    assert np.array_equal(store.codes, codes) and store.ids.tolist() == [0, 1, 2, 3, 4]


def write_old_store(path, signs, bit_order_attr=None, **extra):
    """A store in the layout hashkit wrote before it adopted FAISS's bit order: codes packed
    "big" (numpy.packbits's default), resizable, with or without a bit_order attribute."""
    codes = np.packbits(signs, axis=1)
    n = len(codes)
    with h5py.File(path, "w") as f:
        f.create_dataset("codes", data=codes, maxshape=(None, codes.shape[1]), chunks=True)
        f.create_dataset("ids", data=np.arange(n, dtype=np.int64), maxshape=(None,), chunks=True)
        f.create_dataset(
            "paths",
            data=[f"/img/{i}.png" for i in range(n)],
            dtype=h5py.string_dtype("utf-8"),
            maxshape=(None,),
            chunks=True,
        )
        f.attrs["bits"] = signs.shape[1]
        if bit_order_attr is not None:
            f.attrs["bit_order"] = bit_order_attr
        for key, value in extra.items():
            f.attrs[key] = value
    return codes


@pytest.mark.parametrize("bit_order_attr", [None, "big"])
@pytest.mark.parametrize("bits", [12, 32])
def test_old_big_order_store_is_read_in_faiss_order(tmp_path, bit_order_attr, bits):
    signs = np.random.default_rng(bits).random((40, bits)) > 0.5
    write_old_store(tmp_path / "old.h5", signs, bit_order_attr)
    store = read_store(tmp_path / "old.h5")
    assert np.array_equal(store.codes, np.packbits(signs, axis=1, bitorder="little"))
    assert np.array_equal(unpack_codes(store.codes, bits), signs)
    part = read_store(tmp_path / "old.h5", rows=slice(30, None))
    assert np.array_equal(part.codes, pack_codes(signs[30:]))


def test_appending_to_an_old_store_converts_it_so_old_and_new_codes_agree(tmp_path):
    rng = np.random.default_rng(0)
    old_signs, new_signs = rng.random((30, 12)) > 0.5, rng.random((5, 12)) > 0.5
    write_old_store(tmp_path / "old.h5", old_signs)
    with StoreWriter.append_to(tmp_path / "old.h5") as writer:
        writer.append(pack_codes(new_signs), np.arange(30, 35), [f"/n/{i}" for i in range(5)])
    with h5py.File(tmp_path / "old.h5") as f:
        assert f.attrs["bit_order"] == "little"
    store = read_store(tmp_path / "old.h5")
    assert np.array_equal(unpack_codes(store.codes, 12), np.vstack([old_signs, new_signs]))


def test_partial_reads_skip_codes_or_paths_and_slice_rows(tmp_path):
    store = random_store()
    write_store(tmp_path / "s.h5", store)
    light = read_store(tmp_path / "s.h5", codes=False, paths=False)
    assert light.codes.shape == (0, 2) and light.paths == [] and len(light.ids) == 50
    part = read_store(tmp_path / "s.h5", rows=slice(40, None))
    assert np.array_equal(part.codes, store.codes[40:]) and part.paths == store.paths[40:]
    assert store_count(tmp_path / "s.h5") == 50


def test_writer_interrupted_midway_leaves_the_old_store_and_no_temp_file(tmp_path):
    path = tmp_path / "s.h5"
    write_store(path, random_store(seed=1))
    before = path.read_bytes()
    new = random_store(seed=2)
    with pytest.raises(RuntimeError):
        with StoreWriter(path, 12, label_width=0) as writer:
            writer.append(new.codes[:10], new.ids[:10], new.paths[:10], new.labels[:10])
            raise RuntimeError("killed")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.h5"]


def test_append_to_extends_a_copy_and_commits_only_on_close(tmp_path):
    path = tmp_path / "s.h5"
    old = random_store(n=20)
    write_store(path, old)
    before = path.read_bytes()
    writer = StoreWriter.append_to(path)
    assert writer.count == 20 and writer.next_id == 120
    extra = random_store(n=5, seed=3)
    writer.append(extra.codes, np.arange(120, 125), extra.paths, extra.labels)
    assert path.read_bytes() == before
    writer.close()
    store = read_store(path)
    assert len(store) == 25 and store.ids[-5:].tolist() == [120, 121, 122, 123, 124]
    assert np.array_equal(store.codes[:20], old.codes)


def test_aborted_append_leaves_the_store_as_it_was(tmp_path):
    path = tmp_path / "s.h5"
    write_store(path, random_store(n=20))
    before = path.read_bytes()
    with pytest.raises(KeyboardInterrupt):
        with StoreWriter.append_to(path) as writer:
            extra = random_store(n=5, seed=3)
            writer.append(extra.codes, np.arange(120, 125), extra.paths, extra.labels)
            raise KeyboardInterrupt
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.h5"]


def test_a_store_with_labels_refuses_a_batch_without_them(tmp_path):
    with StoreWriter(tmp_path / "s.h5", 12, label_width=0) as writer:
        with pytest.raises(Exception, match="labels"):
            writer.append(np.zeros((2, 2), np.uint8), [0, 1])
        writer.append(np.zeros((2, 2), np.uint8), [0, 1], labels=[1, 2])


def test_describe_store_reports_bits_count_labels_and_size(tmp_path):
    write_store(tmp_path / "s.h5", random_store())
    info = describe_store(tmp_path / "s.h5")
    assert info["bits"] == 12 and info["count"] == 50 and info["labels"] == "int64 N"
    assert info["file_size"] > 0 and info["model_fingerprint"] == "f" * 64


def test_describe_store_finds_an_id_repeated_in_two_blocks_and_a_bad_row_in_the_last(
    tmp_path, monkeypatch
):
    """info checks a store a block of rows at a time: a repeat across blocks and a padding
    bit in the last, short block are found all the same."""
    import hashkit.store

    monkeypatch.setattr(hashkit.store, "_CHECK_ROWS", 2)
    codes = pack_codes(np.eye(12, dtype=bool)[:5])
    with h5py.File(tmp_path / "s.h5", "w") as f:
        f["codes"], f["ids"] = codes, np.array([0, 1, 2, 0, 4])
        f.attrs.update(bits=12, bit_order="little")
    with pytest.raises(DataError, match="distinct"):
        describe_store(tmp_path / "s.h5")
    codes[4, 1] |= 0x80  # bit 15 of a 12-bit code
    with h5py.File(tmp_path / "s.h5", "a") as f:
        f["ids"][3] = 3
        f["codes"][...] = codes
    with pytest.raises(DataError, match="s.h5"):
        describe_store(tmp_path / "s.h5")
    codes[4, 1] &= 0x0F
    with h5py.File(tmp_path / "s.h5", "a") as f:
        f["codes"][...] = codes
    assert describe_store(tmp_path / "s.h5")["count"] == 5


def test_a_file_that_is_not_a_store_is_a_data_error(tmp_path):
    (tmp_path / "x.h5").write_text("not hdf5")
    with pytest.raises(DataError, match="not an HDF5"):
        read_store(tmp_path / "x.h5")
    with pytest.raises(DataError, match="not found"):
        read_store(tmp_path / "missing.h5")


# --- malformed stores: one DataError naming the file -----------------------------------------


def _good(f):
    f["codes"] = pack_codes(np.eye(12, dtype=bool)[:4])
    f.attrs["bits"] = 12
    f.attrs["bit_order"] = "little"


def _replace(name, value, **kw):
    def build(f):
        _good(f)
        if name in f:
            del f[name]
        f.create_dataset(name, data=value, **kw)

    return build


def _attr(name, value):
    def build(f):
        _good(f)
        f.attrs[name] = value

    return build


def _without_attr(name):
    def build(f):
        _good(f)
        del f.attrs[name]

    return build


def _codes_group(f):
    f.create_group("codes")
    f.attrs["bits"] = 8


MALFORMED = {
    "no codes": (lambda f: f.attrs.__setitem__("bits", 12), "no 'codes'"),
    "codes a group": (_codes_group, "group"),
    "float codes": (_replace("codes", np.zeros((4, 2))), "uint8"),
    "1-d codes": (_replace("codes", np.zeros(4, np.uint8)), "uint8 N x bytes"),
    "no bits": (_without_attr("bits"), "no 'bits'"),
    "bits a string": (_attr("bits", "12"), "integer"),
    "bits a float": (_attr("bits", 12.5), "integer"),
    "bits zero": (_attr("bits", 0), "bits=0"),
    "bits too many for the width": (_attr("bits", 24), "bits=24"),
    "bits too few for the width": (_attr("bits", 8), "bits=8"),
    "unknown bit order": (_attr("bit_order", "middle"), "bit_order"),
    "padding bits set": (_replace("codes", np.full((4, 2), 0xFF, np.uint8)), "padding"),
    "string ids": (_replace("ids", ["a", "b", "c", "d"]), "'ids'"),
    "float ids": (_replace("ids", np.arange(4.0)), "'ids'"),
    "2-d ids": (_replace("ids", np.zeros((4, 2), np.int64)), "'ids'"),
    "too few ids": (_replace("ids", np.arange(3)), "'ids'"),
    "duplicate ids": (_replace("ids", np.array([5, 6, 5, 7])), "distinct"),
    "negative ids": (_replace("ids", np.array([0, 1, -1, 2])), ">= 0"),
    "integer paths": (_replace("paths", np.arange(4)), "'paths'"),
    "string labels": (_replace("labels", ["a", "b", "c", "d"]), "'labels'"),
    "3-d labels": (_replace("labels", np.zeros((4, 2, 2))), "'labels'"),
    "NaN labels": (_replace("labels", np.array([0.0, np.nan, 1.0, 2.0])), "whole numbers"),
    "negative labels": (_replace("labels", np.array([0, -1, 1, 2])), ">= 0"),
    "half multi-hot": (_replace("labels", np.full((4, 3), 0.5)), "0 or 1"),
    "class_names not JSON": (_attr("class_names", "[oops"), "class_names"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_a_malformed_store_is_one_data_error_naming_the_file(tmp_path, case):
    build, message = MALFORMED[case]
    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as f:
        build(f)
    with pytest.raises(DataError, match=message) as caught:
        read_store(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    "case",
    [
        "no codes",
        "codes a group",
        "float codes",
        "no bits",
        "bits a string",
        "bits zero",
        "string ids",
        "2-d ids",
    ],
)
def test_info_and_append_refuse_a_malformed_layout_too(tmp_path, case):
    build, message = MALFORMED[case]
    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as f:
        build(f)
    for read in (describe_store, store_count, StoreWriter.append_to):
        with pytest.raises(DataError, match=message):
            read(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.h5"]


def test_a_zero_byte_store_is_a_data_error_naming_it(tmp_path):
    (tmp_path / "empty.h5").write_bytes(b"")
    for read in (read_store, describe_store):
        with pytest.raises(DataError, match="empty.h5"):
            read(tmp_path / "empty.h5")


def test_n_x_1_labels_in_a_store_are_class_indices(tmp_path):
    with h5py.File(tmp_path / "s.h5", "w") as f:
        _good(f)
        f["labels"] = np.array([[3], [0], [3], [1]])
    labels = read_store(tmp_path / "s.h5").labels
    assert labels.dtype == np.int64 and labels.tolist() == [3, 0, 3, 1]


# --- writing refuses what reading would refuse -------------------------------------------------


@pytest.mark.parametrize("bits", [0, -3, 2.5])
def test_writer_refuses_bits_below_one_or_not_integers(tmp_path, bits):
    with pytest.raises(HashkitError, match="bits"):
        StoreWriter(tmp_path / "s.h5", bits)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "codes,ids,labels,message",
    [
        (np.zeros((2, 2)), [0, 1], [0, 1], "float64"),
        (np.full((2, 2), 0xF0, np.uint8), [0, 1], [0, 1], "padding"),
        (np.zeros((2, 2), np.uint8), [0, -1], [0, 1], ">= 0"),
        (np.zeros((2, 2), np.uint8), [4, 4], [0, 1], "distinct"),
        (np.zeros((2, 2), np.uint8), [0.0, 1.0], [0, 1], "integer"),
        (np.zeros((2, 2), np.uint8), [0, 1], [0.5, 1], "whole numbers"),
        (np.zeros((2, 2), np.uint8), [0, 1], [np.nan, 1], "whole numbers"),
        (np.zeros((2, 2), np.uint8), [0, 1], [-2, 1], ">= 0"),
    ],
)
def test_writer_refuses_bad_codes_ids_and_labels_without_casting(
    tmp_path, codes, ids, labels, message
):
    with pytest.raises(HashkitError, match=message):
        with StoreWriter(tmp_path / "s.h5", 12, label_width=0) as writer:
            writer.append(codes, ids, labels=labels)
    assert list(tmp_path.iterdir()) == []


def test_writer_refuses_ids_already_in_the_store(tmp_path):
    path = tmp_path / "s.h5"
    write_store(path, random_store(n=20))
    with pytest.raises(DataError, match="already in"):
        with StoreWriter.append_to(path) as writer:
            extra = random_store(n=2, seed=5)
            writer.append(extra.codes, [130, 105], extra.paths, extra.labels)
    assert read_store(path).ids.tolist() == list(range(100, 120))


def test_multi_hot_store_refuses_half_labels_and_keeps_one_hot_rows_multi_hot(tmp_path):
    with StoreWriter(tmp_path / "s.h5", 12, label_width=3) as writer:
        with pytest.raises(HashkitError, match="0 or 1"):
            writer.append(np.zeros((1, 2), np.uint8), [0], labels=[[0.5, 0, 1]])
        writer.append(np.zeros((2, 2), np.uint8), [0, 1], labels=[[0, 1, 0], [1, 0, 0]])
    assert read_store(tmp_path / "s.h5").labels.tolist() == [[0, 1, 0], [1, 0, 0]]
