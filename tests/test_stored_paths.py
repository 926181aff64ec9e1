"""What ``hashkit add`` reads of a store: the paths it holds through sorted path hashes (each
hit confirmed against the stored path; stores and segments without hashes get them built
once), and the index-vs-store check through the CRC-32 of the store's ids that the store
records, which still refuses an index of another store."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest

from hashkit import stored_paths
from hashkit.codes import pack_codes
from hashkit.errors import MismatchError
from hashkit.index import (
    append_code_batches,
    build_index,
    describe_index,
    read_index,
    write_index,
)
from hashkit.segments import IDS_CRC32, segment_dir
from hashkit.store import CodeStore, ids_crc32, read_store, read_store_attrs, write_store
from hashkit.stored_paths import CACHE_SUFFIX, HASHES, ROWS, StoredPaths, hash_keys, path_key

BITS = 12


def codes(n: int, seed: int = 0) -> np.ndarray:
    return pack_codes(np.random.default_rng(seed).random((n, BITS)) > 0.5)


def indexed_store(tmp_path, paths: list[str], first_id: int = 0):
    """A store of ``paths`` and a flat index (with ids) built from it."""
    path = tmp_path / "s.h5"
    ids = np.arange(first_id, first_id + len(paths), dtype=np.int64)
    write_store(path, CodeStore(codes=codes(len(paths)), ids=ids, bits=BITS, paths=paths))
    store = read_store(path)
    index = tmp_path / "out.faiss"
    write_index(build_index(store.codes, store.ids, BITS), index, bits=BITS, store=path,
                model=None, store_uuid=store.attrs["uuid"])  # fmt: skip
    return path, index


def add(index, paths: list[str], seed: int = 1):
    return append_code_batches(index, [(codes(len(paths), seed), paths)])


def strip_hashes_and_checksum(file) -> None:
    """Make a store or segment look written by hashkit before path hashes and ids_crc32."""
    with h5py.File(file, "r+") as f:
        for name in (HASHES, ROWS):
            del f[name]
        if IDS_CRC32 in f.attrs:
            del f.attrs[IDS_CRC32]


def test_path_key_normalises_like_abspath_and_normpath():
    paths = ["/a/b", "/a//b", "/a/./b", "/a/../b", "/a/b/", "rel/x", "/a/.h", "//x", "/."]
    assert [path_key(p) for p in paths] == [os.path.normpath(os.path.abspath(p)) for p in paths]
    assert path_key("") == ""


def test_a_written_store_carries_sorted_path_hashes_and_its_ids_checksum(tmp_path):
    paths = [f"/img/{i}.png" for i in range(30)] + ["", "/img/../img/0.png"]
    path, _ = indexed_store(tmp_path, paths, first_id=7)
    with h5py.File(path, "r") as f:
        hashes, rows = f[HASHES][...], f[ROWS][...]
        assert f[HASHES].attrs["rows"] == 32 and f.attrs[IDS_CRC32] == ids_crc32(np.arange(7, 39))
    assert np.all(hashes[1:] >= hashes[:-1]) and sorted(rows.tolist()) == [*range(30), 31]
    keys = [path_key(paths[r]) for r in rows]
    assert hashes.tolist() == hash_keys(keys).tolist()


def test_add_skips_paths_of_every_segment_and_repeats_within_the_new_batches(tmp_path):
    path, index = indexed_store(tmp_path, [f"/base/{i}.png" for i in range(20)])
    add(index, ["/seg1/a.png", "/seg1/b.png"])
    add(index, ["/seg2/a.png"])
    assert len(read_store_attrs(path)["segments"]) > 0
    batch = ["/base/3.png", "/new/x.png", "/seg1/b.png", "/new/x.png", "/seg2/a.png"]
    report = append_code_batches(
        index, [(codes(5, 2), batch), (codes(3, 3), ["/new/y.png", "/new//x.png", "/base/19.png"])]
    )
    assert report.added == 2
    assert report.skipped_existing == [
        "/base/3.png", "/seg1/b.png", "/new/x.png", "/seg2/a.png", "/new//x.png", "/base/19.png",
    ]  # fmt: skip
    assert read_store(path).paths[-2:] == ["/new/x.png", "/new/y.png"]
    assert read_index(index)[0].ntotal == 25


def test_a_hash_hit_is_confirmed_against_the_stored_path(tmp_path, monkeypatch):
    # Every key hashes alike: every new path is a hit, and only the stored paths may match.
    monkeypatch.setattr(stored_paths, "hash_keys", lambda keys: np.zeros(len(keys), np.uint64))
    path, index = indexed_store(tmp_path, [f"/base/{i}.png" for i in range(10)])
    add(index, ["/seg/a.png"])
    report = add(index, ["/base/4.png", "/other/4.png", "/seg/a.png", "/seg/b.png"])
    assert report.skipped_existing == ["/base/4.png", "/seg/a.png"] and report.added == 2


def test_a_store_without_path_hashes_still_skips_its_paths_and_keeps_them_for_next_time(
    tmp_path, monkeypatch
):
    path, index = indexed_store(tmp_path, [f"/base/{i}.png" for i in range(10)])
    strip_hashes_and_checksum(path)
    report = add(index, ["/base/1.png", "/new/1.png"])
    assert report.skipped_existing == ["/base/1.png"] and report.added == 1
    first = next(segment_dir(path).glob("*-0.h5"))  # the old file, linked as it is
    cache = first.with_name(first.name + CACHE_SUFFIX)
    assert cache.is_file()
    # The next add reads the cached hashes, not the old segment's paths.
    monkeypatch.setattr(stored_paths, "build_path_hashes", None)
    report = add(index, ["/base/2.png", "/new/1.png", "/new/2.png"])
    assert report.skipped_existing == ["/base/2.png", "/new/1.png"] and report.added == 1


def test_segments_without_path_hashes_get_a_cache_rebuilt_when_the_segment_changes(tmp_path):
    path, index = indexed_store(tmp_path, [f"/base/{i}.png" for i in range(10)])
    add(index, ["/seg/a.png", "/seg/b.png"])
    segment_files = sorted(segment_dir(path).glob("seg-*.h5"))
    for file in segment_files:
        strip_hashes_and_checksum(file)
    assert add(index, ["/seg/b.png", "/base/9.png"]).added == 0
    caches = sorted(segment_dir(path).glob(f"*{CACHE_SUFFIX}"))
    assert [c.name for c in caches] == [f.name + CACHE_SUFFIX for f in segment_files]
    # A cache that does not describe its segment (another size or time) is not used.
    with h5py.File(caches[1], "r+") as f:
        f[HASHES][...] = 0
        f.attrs["segment_mtime_ns"] = 1
    assert add(index, ["/seg/a.png"]).skipped_existing == ["/seg/a.png"]
    with h5py.File(caches[1], "r") as f:
        assert f.attrs["segment_mtime_ns"] == os.stat(segment_files[1]).st_mtime_ns


def test_a_cache_whose_segment_is_gone_is_removed_by_the_next_writer(tmp_path):
    path, index = indexed_store(tmp_path, [f"/base/{i}.png" for i in range(10)])
    add(index, ["/seg/a.png"])
    orphan = segment_dir(path) / f"seg-000000000000.h5{CACHE_SUFFIX}"
    orphan.write_bytes(b"x")
    add(index, ["/seg/b.png"])
    assert not orphan.exists()


def test_stored_relative_paths_are_compared_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path, index = indexed_store(tmp_path, ["img/0.png", "/abs/1.png", "img/2.png"])
    with h5py.File(path, "r") as f:
        assert f[HASHES].attrs["relative_paths"] == 2 and len(f[HASHES]) == 1
    report = add(index, [str(tmp_path / "img" / "2.png"), "/abs/1.png", "img/3.png"])
    assert report.skipped_existing == [str(tmp_path / "img" / "2.png"), "/abs/1.png"]
    assert StoredPaths(path).find([path_key("img/3.png")]) == {path_key("img/3.png")}


def test_add_checks_the_index_against_the_stores_checksum_without_reading_its_ids(
    tmp_path, monkeypatch
):
    path, index = indexed_store(tmp_path, [f"/base/{i}.png" for i in range(10)])
    add(index, ["/seg/a.png"])
    import hashkit.store

    def no_full_read(*args, **kwargs):
        raise AssertionError("read the store's ids or paths whole")

    monkeypatch.setattr(hashkit.store, "read_store", no_full_read)
    assert add(index, ["/seg/b.png", "/seg/a.png"]).added == 1


def test_the_checksum_check_refuses_an_index_of_other_ids_and_a_wrong_checksum(tmp_path):
    path, index = indexed_store(tmp_path, [f"/base/{i}.png" for i in range(10)])
    uuid = read_store_attrs(path)["uuid"]
    # Another store with the same uuid and count, other ids: its own checksum is right.
    other = CodeStore(codes=codes(10), ids=np.arange(100, 110), bits=BITS,
                      paths=[f"/o/{i}" for i in range(10)])  # fmt: skip
    write_store(path, other)
    with h5py.File(path, "r+") as f:
        f.attrs["uuid"] = uuid
        assert f.attrs[IDS_CRC32] == ids_crc32(np.arange(100, 110))
    with pytest.raises(MismatchError, match="the ids in .* are not the ids of"):
        add(index, ["/new/1.png"])
    # The same ids as the index, but a checksum that does not say so.
    write_store(path, CodeStore(codes=codes(10), ids=np.arange(10), bits=BITS))
    with h5py.File(path, "r+") as f:
        f.attrs["uuid"] = uuid
        f.attrs[IDS_CRC32] = ids_crc32(np.arange(10)) ^ 1
    with pytest.raises(MismatchError, match="the ids in .* are not the ids of"):
        add(index, ["/new/1.png"])


def test_info_compares_the_ids_one_by_one_whatever_the_checksum_says(tmp_path):
    path, index = indexed_store(tmp_path, [f"/base/{i}.png" for i in range(10)])
    with h5py.File(path, "r+") as f:  # edited by another program: the checksum is stale
        f["ids"][...] = np.arange(50, 60)
    assert "are not the ids of" in describe_index(index)["warning"]


def test_a_store_ahead_of_its_index_is_caught_up_with_the_ids_read(tmp_path):
    path, index = indexed_store(tmp_path, [f"/base/{i}.png" for i in range(10)])
    store = read_store(path)
    # An index of the first 6 codes only (an add of an older version stopped half-way).
    write_index(build_index(store.codes[:6], store.ids[:6], BITS), index, bits=BITS,
                store=path, model=None, store_uuid=store.attrs["uuid"])  # fmt: skip
    report = add(index, ["/new/1.png"])
    assert report.recovered == 4 and report.added == 1 and read_index(index)[0].ntotal == 11
