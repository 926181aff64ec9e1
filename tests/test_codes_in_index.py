"""Codes on their way into FAISS: FAISS's bit order (so hash-based indexes hash real bits),
old big-order files still searched right, and codes and ids checked where they enter."""

from __future__ import annotations

import json

import faiss
import h5py
import numpy as np
import pytest

from hashkit.codes import code_bytes, pack_codes
from hashkit.errors import HashkitError, MismatchError
from hashkit.index import (
    IndexAppender,
    build_index,
    index_params,
    read_index,
    search,
    sidecar_path,
    write_index,
)
from hashkit.search import Searcher
from hashkit.store import CodeStore, read_store_attrs, write_store


def random_signs(n, bits, seed=0):
    return np.random.default_rng(seed).random((n, bits)) > 0.5


def write_flat_index(tmp_path, signs, name="out"):
    """A store and a flat index of ``signs`` packed by hashkit (ids 0..N-1)."""
    n, bits = signs.shape
    store = tmp_path / f"{name}.h5"
    codes = pack_codes(signs)
    ids = np.arange(n, dtype=np.int64)
    write_store(store, CodeStore(codes, ids, bits, paths=[f"/img/{i}.png" for i in range(n)]))
    index = build_index(codes, ids, bits, "flat")
    path = tmp_path / f"{name}.faiss"
    write_index(
        index,
        path,
        bits=bits,
        store=store,
        model=None,
        store_uuid=read_store_attrs(store)["uuid"],
    )
    return path


def write_old_index(tmp_path, signs, bit_order_key=None):
    """A store and flat index as hashkit wrote them before FAISS's bit order: codes packed
    "big", no bit_order attribute in the store, and none (or "big") in the sidecar."""
    n, bits = signs.shape
    old_codes = np.packbits(signs, axis=1)
    with h5py.File(tmp_path / "old.h5", "w") as f:
        f.create_dataset("codes", data=old_codes, maxshape=(None, old_codes.shape[1]))
        f.create_dataset("ids", data=np.arange(n, dtype=np.int64), maxshape=(None,))
        f.create_dataset(
            "paths",
            data=[f"/img/{i}.png" for i in range(n)],
            dtype=h5py.string_dtype("utf-8"),
            maxshape=(None,),
        )
        f.attrs["bits"] = bits
    index = faiss.index_binary_factory(8 * code_bytes(bits), "IDMap,BFlat")
    index.add_with_ids(old_codes, np.arange(n, dtype=np.int64))
    faiss.write_index_binary(index, str(tmp_path / "old.faiss"))
    sidecar = {
        "format": "hashkit-index",
        "hashkit_version": "0.1.0",
        "bits": bits,
        "count": n,
        "type": "flat",
        "params": {},
        "store": "old.h5",
        "store_uuid": "",
        "model": None,
        "model_fingerprint": "",
    }
    if bit_order_key is not None:
        sidecar["bit_order"] = bit_order_key
    sidecar_path(tmp_path / "old.faiss").write_text(json.dumps(sidecar))
    return tmp_path / "old.faiss"


# --- the bit order in files --------------------------------------------------------------------


def test_the_sidecar_and_the_store_record_the_bit_order(tmp_path):
    path = write_flat_index(tmp_path, random_signs(20, 12))
    assert json.loads(sidecar_path(path).read_text())["bit_order"] == "little"
    assert read_index(path)[1].bit_order == "little"
    with h5py.File(tmp_path / "out.h5") as f:
        assert f.attrs["bit_order"] == "little"


@pytest.mark.parametrize("bit_order_key", [None, "big"])
@pytest.mark.parametrize("bits", [12, 32])
def test_an_old_big_order_index_is_searched_in_its_own_order(tmp_path, bit_order_key, bits):
    signs = random_signs(300, bits, seed=bits)
    path = write_old_index(tmp_path, signs, bit_order_key)
    assert read_index(path)[1].bit_order == "big"
    searcher = Searcher(path, gpu=False)
    D, I = searcher.search(pack_codes(signs[:40]), 5)
    expected = (signs[:40, None, :] != signs[None, :, :]).sum(axis=2)
    assert np.array_equal(D, np.sort(expected, axis=1)[:, :5])
    assert np.array_equal(expected[np.arange(40)[:, None], I], D)


def test_a_sidecar_with_an_unknown_bit_order_is_refused(tmp_path):
    path = write_old_index(tmp_path, random_signs(10, 16), "middle")
    with pytest.raises(HashkitError, match="bit_order"):
        read_index(path)


def test_batch_search_of_an_old_store_against_an_old_index_finds_each_code_itself(
    tmp_path, run_cli
):
    signs = random_signs(200, 32, seed=4)
    path = write_old_index(tmp_path, signs)
    result = run_cli("search", path, "--codes", tmp_path / "old.h5", "-k", 1, "--format", "jsonl")
    assert result.exit_code == 0, result.output
    hits = [json.loads(line)["results"][0] for line in result.output.splitlines()]
    assert [h["distance"] for h in hits] == [0] * 200
    assert [h["id"] for h in hits] == list(range(200))


def test_adding_to_an_old_index_is_refused_with_the_command_that_rebuilds_it(tmp_path):
    path = write_old_index(tmp_path, random_signs(30, 12))
    before = path.read_bytes()
    with pytest.raises(MismatchError, match="hashkit build-index"):
        IndexAppender(path)
    assert path.read_bytes() == before


def test_rebuilding_an_old_index_from_its_store_gives_a_faiss_order_index(tmp_path, run_cli):
    signs = random_signs(100, 12, seed=2)
    write_old_index(tmp_path, signs)
    result = run_cli("build-index", tmp_path / "old.h5", tmp_path / "new.faiss")
    assert result.exit_code == 0, result.output
    assert read_index(tmp_path / "new.faiss")[1].bit_order == "little"
    D, I = Searcher(tmp_path / "new.faiss", gpu=False).search(pack_codes(signs[:10]), 1)
    assert D.ravel().tolist() == [0] * 10 and I.ravel().tolist() == list(range(10))


# --- hash-based indexes hash real bits --------------------------------------------------------


def test_a_12_bit_multi_hash_index_finds_exactly_the_codes_within_nflip(tmp_path):
    bits, n = 12, 4096
    codes = pack_codes(random_signs(n, bits, seed=7))
    ids = np.arange(n, dtype=np.int64)
    multihash = build_index(codes, ids, bits, "multihash", nflip=1)
    assert index_params(multihash) == {"type": "multihash", "nhash": 1, "hash_bits": 12, "nflip": 1}
    flat = build_index(codes, ids, bits, "flat")
    xq = codes[:50]
    D_flat, I_flat = search(flat, xq, n)
    D_hash, I_hash = search(multihash, xq, 64)
    for q in range(len(xq)):
        exact = set(I_flat[q][D_flat[q] == 0])
        near = set(I_flat[q][D_flat[q] <= 1])
        found = set(I_hash[q][I_hash[q] >= 0])
        assert exact <= found  # every exact match
        assert found == near  # and nothing a 12-bit key within 1 flip cannot reach


# --- codes and ids are checked where they enter -----------------------------------------------


@pytest.mark.parametrize(
    "codes,ids,message",
    [
        (np.zeros((4, 2), dtype=np.float32), np.arange(4), "float32"),
        (np.full((4, 2), -1, dtype=np.int16), np.arange(4), "int16"),
        (np.full((4, 2), 0xF0, dtype=np.uint8), np.arange(4), "padding"),
        (np.zeros((4, 2), dtype=np.uint8), np.array([0, 1, 1, 2]), "distinct"),
        (np.zeros((4, 2), dtype=np.uint8), np.array([0, 1, -1, 2]), ">= 0"),
        (np.zeros((4, 2), dtype=np.uint8), np.arange(4.0), "integer"),
    ],
)
def test_build_index_refuses_bad_codes_and_ids_instead_of_casting(codes, ids, message):
    with pytest.raises(HashkitError, match=message):
        build_index(codes, ids, 12, "flat")


def test_search_refuses_float_or_dirty_queries(tmp_path):
    index = build_index(pack_codes(random_signs(20, 12)), np.arange(20), 12, "flat")
    with pytest.raises(HashkitError, match="float64"):
        search(index, np.zeros((1, 2)), 3)
    searcher = Searcher(write_flat_index(tmp_path, random_signs(20, 12)), gpu=False)
    with pytest.raises(HashkitError, match="padding"):
        searcher.search(np.full((1, 2), 0xFF, dtype=np.uint8), 3)


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: np.array([{"a": 1}], dtype=object), "not a readable .npy"),
        (lambda: np.zeros((3, 2)), "float64"),
        (lambda: np.zeros((3, 2), dtype=np.int64), "int64"),
        (lambda: np.zeros((3, 4), dtype=np.uint8), "4"),
        (lambda: np.zeros(6, dtype=np.uint8), "2-d"),
        (lambda: np.full((3, 2), 0x80, dtype=np.uint8), "padding"),
    ],
)
def test_search_codes_npy_refuses_bad_arrays_in_one_line(tmp_path, run_cli, make, message):
    path = write_flat_index(tmp_path, random_signs(20, 12))
    np.save(tmp_path / "q.npy", make(), allow_pickle=True)
    result = run_cli("search", path, "--codes", tmp_path / "q.npy")
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hashkit: error:"), result.output
    assert message in lines[0] and "q.npy" in lines[0]


def test_search_codes_npy_of_faiss_order_codes_finds_each_code_itself(tmp_path, run_cli):
    signs = random_signs(50, 12, seed=3)
    path = write_flat_index(tmp_path, signs)
    np.save(tmp_path / "q.npy", pack_codes(signs[:5]))
    result = run_cli("search", path, "--codes", tmp_path / "q.npy", "-k", 1, "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = [line.split(",") for line in result.output.splitlines()[1:]]
    assert [(r[0], r[4]) for r in rows] == [(str(i), "0") for i in range(5)]
