"""FAISS binary indexes: plain-faiss round trips, padding, incremental adds, interrupted
writes, the GPU wrapper's id mapping, and every mismatch error."""

from __future__ import annotations

import json

import faiss
import h5py
import numpy as np
import pytest

from hashkit.codes import hamming_distances, pack_codes
from hashkit.errors import HashkitError, MismatchError
from hashkit.index import (
    INDEX_TYPES,
    DeviceFlatIndex,
    IndexAppender,
    append_code_batches,
    build_index,
    check_compatible,
    check_nflip,
    describe_index,
    gpu_count,
    index_params,
    read_index,
    search_index_for,
    set_search_params,
    sidecar_path,
    write_index,
)
from hashkit.lock import FileLock
from hashkit.search import Searcher
from hashkit.store import CodeStore, StoreWriter, read_store, read_store_attrs, write_store


def make_codes(n, bits, seed=0):
    return pack_codes(np.random.default_rng(seed).random((n, bits)) > 0.5)


@pytest.fixture
def indexed(tmp_path):
    """A 12-bit store of 400 codes under ids 1000.. and a function writing an index of it."""
    bits = 12
    codes = make_codes(400, bits)
    ids = np.arange(1000, 1400, dtype=np.int64)
    store_path = tmp_path / "s.h5"
    write_store(
        store_path,
        CodeStore(codes, ids, bits, paths=[f"/img/{i}.png" for i in range(400)], fingerprint="ab"),
    )

    def make(index_type="flat", name="out.faiss", **kw):
        index = build_index(codes, ids, bits, index_type, **kw)
        write_index(
            index,
            tmp_path / name,
            bits=bits,
            store=store_path,
            model=None,
            model_fingerprint="ab",
            store_uuid=read_store_attrs(store_path)["uuid"],
        )
        return tmp_path / name

    return codes, ids, store_path, make


@pytest.mark.parametrize("index_type", INDEX_TYPES)
def test_plain_faiss_reads_the_index_and_finds_what_hashkit_finds(indexed, index_type):
    codes, ids, _, make = indexed
    path = make(index_type)
    plain = faiss.read_index_binary(str(path))
    searcher = Searcher(path, gpu=False)
    params = json.loads(sidecar_path(path).read_text())["params"]
    if "nflip" in params:  # search defaults FAISS does not keep live in the sidecar
        faiss.downcast_IndexBinary(plain.index).nflip = params["nflip"]
    if "ef_search" in params:
        faiss.downcast_IndexBinary(plain.index).hnsw.efSearch = params["ef_search"]
    D0, I0 = plain.search(codes[:20], 5)
    D, I = searcher.search(codes[:20], 5)
    assert np.array_equal(D, D0) and np.array_equal(I, I0)
    assert set(I[I >= 0].tolist()) <= set(ids.tolist())
    assert (I[:, 0] == ids[:20]).sum() >= 10 and (D[:, 0] == 0).all()


def test_flat_search_of_twelve_bit_codes_equals_unpacked_hamming_counts(indexed):
    codes, ids, _, make = indexed
    D, I = Searcher(make("flat"), gpu=False).search(codes[:30], 400)
    full = hamming_distances(codes[:30], codes)
    for q in range(30):
        assert np.array_equal(D[q], full[q, I[q] - 1000])
        assert np.array_equal(np.sort(D[q]), np.sort(full[q]))


def test_ivf_keeps_nprobe_and_hnsw_ef_search_as_search_defaults(indexed):
    _, _, _, make = indexed
    index, info = read_index(make("ivf", "ivf.faiss", nlist=8, nprobe=3))
    assert info.params == {"nlist": 8, "nprobe": 3} and index.nprobe == 3
    index, info = read_index(make("hnsw", "h.faiss", ef_search=77))
    assert faiss.downcast_IndexBinary(index.index).hnsw.efSearch == 77
    assert describe_index(make("multihash", "m.faiss", nflip=2))["params"]["nflip"] == 2


def test_ivf_on_few_codes_prints_no_faiss_clustering_warning(capfd):
    codes = make_codes(36, 12)
    index = build_index(codes, np.arange(36), 12, "ivf", nlist=2)
    assert index.ntotal == 36
    assert capfd.readouterr().err == ""


def test_factory_string_builds_any_binary_index_with_the_store_ids(indexed):
    codes, ids, _, _ = indexed
    index = build_index(codes, ids, 12, factory="BHNSW8")
    assert index.search(codes[:1], 1)[1][0, 0] == ids[0]


def test_nflip_that_would_never_finish_is_refused_at_build_search_and_read(indexed):
    codes, ids, _, make = indexed
    with pytest.raises(HashkitError, match="nflip 10 is larger than the 9 bits of a hash key"):
        build_index(codes, ids, 12, "multihash", nflip=10)
    index, _ = read_index(make("multihash", nflip=2))
    with pytest.raises(HashkitError, match="nflip 13 is larger"):
        set_search_params(index, nflip=13)
    with pytest.raises(HashkitError, match="probes 5130659561 buckets"):
        check_nflip(8, 64)
    check_nflip(3, 32)
    single = build_index(codes, ids, 12, factory="BHash8", nflip=2)
    assert index_params(single) == {"type": "IndexBinaryHash", "hash_bits": 8, "nflip": 2}
    with pytest.raises(HashkitError, match="nflip 9"):
        set_search_params(single, nflip=9)


def test_ids_stay_aligned_after_several_adds(indexed):
    codes, _, store_path, make = indexed
    path = make("ivf", nlist=4, nprobe=4)
    for round_ in range(3):
        new = make_codes(7, 12, seed=10 + round_)
        names = [f"/new/{round_}/{i}.png" for i in range(7)]
        report = append_code_batches(path, [(new[:4], names[:4]), (new[4:], names[4:])])
        assert report.added == 7 and report.first_id == 1400 + 7 * round_
        assert append_code_batches(path, [(new, names)]).skipped_existing == names
    store = read_store(store_path)
    assert len(store) == 421 and len(set(store.ids.tolist())) == 421
    searcher = Searcher(path, gpu=False)
    assert searcher.index.ntotal == 421 and not searcher.alignment.warning()
    D, I = searcher.search(store.codes, 421)
    for row, (d, i) in enumerate(zip(D, I)):
        own = set(i[d == 0].tolist())
        assert store.ids[row] in own
    hits = searcher.search_codes(store.codes[-1:], 1)
    row = searcher.rows_of(np.array([hits[0][0].id]))
    assert searcher.paths_of_rows(row)[0].startswith("/") and hits[0][0].path.startswith("/")


def files_of(tmp_path):
    return {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}


def test_an_add_past_the_largest_int64_id_is_refused_and_changes_nothing(tmp_path):
    from hashkit.errors import DataError
    from hashkit.index import create_index

    ids = np.array([5, 2**63 - 3], dtype=np.int64)
    paths = ["/img/0.png", "/img/1.png"]
    write_store(tmp_path / "s.h5", CodeStore(make_codes(2, 12), ids, 12, paths=paths))
    create_index(tmp_path / "s.h5", tmp_path / "o.faiss")
    report = append_code_batches(tmp_path / "o.faiss", [(make_codes(1, 12), ["/img/2.png"])])
    assert report.first_id == 2**63 - 2
    files = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    new = [(make_codes(2, 12, seed=1), ["/img/3.png", "/img/4.png"])]
    with pytest.raises(DataError, match="would not fit in int64"):
        append_code_batches(tmp_path / "o.faiss", new)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == files


def test_an_add_interrupted_inside_the_writer_leaves_every_file_intact(indexed, tmp_path):
    _, _, _, make = indexed
    path = make("flat")
    before = files_of(tmp_path)

    def batches():
        yield make_codes(3, 12, seed=5), ["/a.png", "/b.png", "/c.png"]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        append_code_batches(path, batches())
    assert files_of(tmp_path) == before


def test_a_build_interrupted_while_writing_keeps_the_previous_index(indexed, tmp_path, monkeypatch):
    codes, ids, store_path, make = indexed
    path = make("flat")
    before = files_of(tmp_path)

    def broken(index, writer):
        raise RuntimeError("disk full")

    monkeypatch.setattr(faiss, "write_index_binary", broken)
    with pytest.raises(HashkitError, match=r"cannot write \S*out.faiss: disk full"):
        write_index(
            build_index(codes, ids, 12, "hnsw"), path, bits=12, store=store_path, model=None
        )
    assert files_of(tmp_path) == before


def test_a_store_ahead_of_its_index_is_detected_and_caught_up_by_the_next_add(indexed):
    """What an add of hashkit versions before the commit journal left when killed between
    its store and index renames."""
    _, _, store_path, make = indexed
    path = make("flat")
    with FileLock(store_path):
        writer = StoreWriter.append_to(store_path)
        writer.append(
            make_codes(5, 12, seed=9), np.arange(1400, 1405), [f"/n{i}" for i in range(5)]
        )
        writer.close()
    searcher = Searcher(path, gpu=False)
    assert searcher.alignment.pending == 5 and "hashkit add" in searcher.alignment.warning()
    assert "lacks" in describe_index(path)["warning"]
    report = append_code_batches(path, [])
    assert report.recovered == 5 and report.count == 405
    assert Searcher(path, gpu=False).alignment.warning() == ""


def test_mismatched_bits_and_fingerprints_are_refused():
    with pytest.raises(MismatchError, match="32 bits but .* 64 bits"):
        check_compatible(bits_a=32, bits_b=64, what_a="model", what_b="index")
    with pytest.raises(MismatchError, match="different models"):
        check_compatible(
            bits_a=32, bits_b=32, what_a="a", what_b="b", fingerprint_a="1", fingerprint_b="2"
        )


def test_sidecar_bits_that_disagree_with_the_index_are_refused(indexed):
    path = indexed[3]("flat")
    meta = json.loads(sidecar_path(path).read_text())
    sidecar_path(path).write_text(json.dumps({**meta, "bits": 32}))
    with pytest.raises(MismatchError, match="sidecar says 32 bits"):
        read_index(path)


def test_the_index_type_comes_from_the_index_not_an_edited_sidecar(indexed):
    path = indexed[3]("flat")
    meta = json.loads(sidecar_path(path).read_text())
    sidecar_path(path).write_text(json.dumps({**meta, "type": "ivf"}))
    _, info = read_index(path)
    assert info.type == "flat"


def test_a_store_from_another_model_is_refused(indexed):
    path = indexed[3]("flat")
    meta = json.loads(sidecar_path(path).read_text())
    sidecar_path(path).write_text(json.dumps({**meta, "model_fingerprint": "cd"}))
    with pytest.raises(MismatchError, match="different models"):
        Searcher(path)


def test_a_rebuilt_store_is_not_mistaken_for_the_indexed_one(indexed):
    codes, ids, store_path, make = indexed
    path = make("flat")
    write_store(store_path, CodeStore(codes, ids, 12, fingerprint="ab"))
    with pytest.raises(MismatchError, match="another code store"):
        Searcher(path)


def test_an_index_larger_than_its_store_or_with_other_ids_is_refused(indexed, tmp_path):
    codes, ids, store_path, make = indexed
    path = make("flat")
    meta = json.loads(sidecar_path(path).read_text())
    for name, store_ids, error in (
        ("small.h5", ids[:10], "only 10"),
        ("other.h5", ids + 1, "not the ids"),
    ):
        write_store(tmp_path / name, CodeStore(codes[: len(store_ids)], store_ids, 12))
        uuid = read_store_attrs(tmp_path / name)["uuid"]
        sidecar_path(path).write_text(json.dumps({**meta, "store": name, "store_uuid": uuid}))
        with pytest.raises(MismatchError, match=error):
            Searcher(path)


def test_a_sidecar_or_store_without_a_store_uuid_is_refused(indexed, tmp_path):
    """Rebuilding from another store with the same ids would otherwise map hits to the
    wrong paths without a word."""
    codes, ids, store_path, make = indexed
    path = make("flat")
    meta = json.loads(sidecar_path(path).read_text())
    write_store(tmp_path / "other.h5", CodeStore(codes[::-1].copy(), ids, 12, fingerprint="ab"))
    sidecar_path(path).write_text(json.dumps({**meta, "store": "other.h5", "store_uuid": ""}))
    with pytest.raises(MismatchError, match="records no store uuid"):
        Searcher(path)
    with h5py.File(tmp_path / "other.h5", "a") as f:
        del f.attrs["uuid"]
    sidecar_path(path).write_text(json.dumps({**meta, "store": "other.h5"}))
    with pytest.raises(MismatchError, match="has no uuid"):
        Searcher(path)


def test_query_codes_of_another_width_are_refused(indexed):
    searcher = Searcher(indexed[3]("flat"), gpu=False)
    with pytest.raises(MismatchError, match="query codes"):
        searcher.search(make_codes(2, 32), 3)


def test_a_model_of_other_bits_is_refused_by_add(indexed):
    path = indexed[3]("flat")
    with pytest.raises(MismatchError):
        with IndexAppender(path) as appender:
            check_compatible(bits_a=32, bits_b=appender.bits, what_a="model", what_b=str(path))
    assert read_index(path)[0].ntotal == 400


@pytest.mark.skipif(gpu_count() > 0, reason="checks the CPU fallback")
def test_without_a_gpu_search_falls_back_to_the_cpu_and_gpu_true_is_an_error(indexed):
    codes, ids, _, make = indexed
    index = build_index(codes, ids, 12, "flat")
    assert search_index_for(index, None) == (index, False)
    assert search_index_for(index, False) == (index, False)
    with pytest.raises(HashkitError, match="no GPU"):
        search_index_for(index, True)
    assert Searcher(make("flat"), gpu=None).on_gpu is False


def test_device_flat_index_maps_positions_to_store_ids(indexed):
    codes, ids, _, _ = indexed
    device = faiss.IndexBinaryFlat(16)  # stands in for GpuIndexBinaryFlat
    device.add(codes)
    wrapped = DeviceFlatIndex(device, ids)
    reference = build_index(codes, ids, 12, "flat")
    D, I = wrapped.search(codes[:10], 5)
    D0, I0 = reference.search(codes[:10], 5)
    assert np.array_equal(D, D0) and (I[:, 0] == ids[:10]).all()
