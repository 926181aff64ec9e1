"""The HDF5 code store: plain-h5py readable, streamed, appended, and never half-written."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from hashkit.codes import pack_codes
from hashkit.errors import DataError
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
    codes = np.packbits(np.eye(16, dtype=bool)[:5], axis=1)
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["codes"] = codes
        f.attrs["bits"] = 16
    store = read_store(tmp_path / "x.h5")
    assert np.array_equal(store.codes, codes) and store.ids.tolist() == [0, 1, 2, 3, 4]


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


def test_a_file_that_is_not_a_store_is_a_data_error(tmp_path):
    (tmp_path / "x.h5").write_text("not hdf5")
    with pytest.raises(DataError, match="not an HDF5"):
        read_store(tmp_path / "x.h5")
    with pytest.raises(DataError, match="not found"):
        read_store(tmp_path / "missing.h5")
