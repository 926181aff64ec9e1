"""Range search (every code within a Hamming radius) on binary indexes, in the library and in
``hashkit search --radius``."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from hashkit.codes import hamming_distances, pack_codes
from hashkit.errors import HashkitError
from hashkit.index import build_index, range_search, set_search_params
from hashkit.store import CodeStore, write_store

BITS = 24


@pytest.fixture(scope="module")
def codes():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2, (40, BITS))
    # Near copies of the first rows, so that small radii find several codes.
    flips = rng.random((160, BITS)) < 0.08
    near = np.logical_xor(base[rng.integers(0, 40, 160)], flips)
    return pack_codes(np.concatenate([base, near]))


def brute_force(xb, ids, xq, radius):
    d = hamming_distances(xq, xb)
    return [
        sorted((int(d[q, j]), int(ids[j])) for j in np.flatnonzero(d[q] <= radius))
        for q in range(len(xq))
    ]


def as_pairs(lims, D, I):
    return [list(zip(D[a:b].tolist(), I[a:b].tolist())) for a, b in zip(lims[:-1], lims[1:])]


@pytest.mark.parametrize("index_type", ["flat", "ivf"])
@pytest.mark.parametrize("radius", [0, 2, 5])
def test_range_search_returns_every_code_within_the_radius_inclusive_nearest_first(
    codes, index_type, radius
):
    ids = np.arange(100, 100 + len(codes), dtype=np.int64)
    index = build_index(codes, ids, BITS, index_type, nlist=4)
    set_search_params(index, nprobe=4)  # every list: exact
    lims, D, I = range_search(index, codes[:10], radius)
    assert D.dtype == np.int32 and I.dtype == np.int64 and lims[-1] == len(D)
    assert as_pairs(lims, D, I) == brute_force(codes, ids, codes[:10], radius)


def test_multihash_range_search_finds_a_subset_of_the_exact_answer(codes):
    ids = np.arange(len(codes), dtype=np.int64)
    index = build_index(codes, ids, BITS, "multihash", nhash=3, hash_bits=8, nflip=1)
    got = as_pairs(*range_search(index, codes[:10], 3))
    exact = brute_force(codes, ids, codes[:10], 3)
    for g, e in zip(got, exact):
        assert set(g) <= set(e) and g == sorted(g) and (0, g[0][1]) in e


def test_range_search_on_hnsw_is_a_clear_error(codes):
    index = build_index(codes, np.arange(len(codes)), BITS, "hnsw")
    with pytest.raises(HashkitError, match="range search .* this index is hnsw"):
        range_search(index, codes[:1], 2)


def test_hashkit_search_radius_on_a_code_store(tmp_path, codes, run_cli):
    ids = np.arange(len(codes), dtype=np.int64)
    write_store(tmp_path / "codes.h5", CodeStore(codes, ids, BITS))
    assert run_cli("build-index", tmp_path / "codes.h5", tmp_path / "i.faiss").exit_code == 0
    result = run_cli(
        "search", tmp_path / "i.faiss", "--codes", tmp_path / "codes.h5", "--radius", 3,
        "--format", "csv", "--no-gpu",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    got = [[] for _ in codes]
    for row in rows:
        got[int(row["query_id"])].append((int(row["distance"]), int(row["id"])))
    assert got == brute_force(codes, ids, codes, 3)
    assert [int(r["rank"]) for r in rows if r["query_id"] == "0"] == list(range(1, len(got[0]) + 1))
