"""The GPU search path, on CPU: faiss's GPU classes are replaced by a stand-in that wraps a CPU
IndexBinaryFlat and, like GpuIndexBinaryFlat, refuses k above GPU_MAX_K."""

from __future__ import annotations

import csv
import io

import faiss
import numpy as np
import pytest

import hashkit.index.gpu
from hashkit.codes import pack_codes
from hashkit.index import build_index, write_index
from hashkit.search import Searcher
from hashkit.store import CodeStore, read_store_attrs, write_store


class FakeGpuIndexBinaryFlat:
    """Stands in for faiss.GpuIndexBinaryFlat(resources, d, config)."""

    searches: list[int] = []

    def __init__(self, resources, d, config) -> None:
        self.cpu = faiss.IndexBinaryFlat(d)
        self.d = d

    @property
    def ntotal(self) -> int:
        return self.cpu.ntotal

    def add(self, codes) -> None:
        self.cpu.add(codes)

    def search(self, xq, k):
        if k > hashkit.index.gpu.GPU_MAX_K:
            raise RuntimeError(f"k {k} > GPU_MAX_K")  # as GPU k-selection does
        FakeGpuIndexBinaryFlat.searches.append(k)
        return self.cpu.search(xq, k)


class FakeConfig:
    device = 0


@pytest.fixture
def fake_gpu(monkeypatch):
    monkeypatch.setattr(hashkit.index.gpu, "gpu_count", lambda: 1)
    monkeypatch.setattr(faiss, "StandardGpuResources", object, raising=False)
    monkeypatch.setattr(faiss, "GpuIndexBinaryFlatConfig", FakeConfig, raising=False)
    monkeypatch.setattr(faiss, "GpuIndexBinaryFlat", FakeGpuIndexBinaryFlat, raising=False)
    monkeypatch.setattr(hashkit.index.gpu, "GPU_MAX_K", 8)
    FakeGpuIndexBinaryFlat.searches = []


@pytest.fixture
def flat_index(tmp_path):
    codes = pack_codes(np.random.default_rng(0).random((300, 16)) > 0.5)
    ids = np.arange(500, 800)
    store = tmp_path / "s.h5"
    write_store(store, CodeStore(codes, ids, 16, paths=[f"/img/{i}.png" for i in ids]))
    write_store(tmp_path / "q.h5", CodeStore(codes[:5], np.arange(5), 16))
    out = tmp_path / "out.faiss"
    write_index(build_index(codes, ids, 16), out, bits=16, store=store, model=None,
                store_uuid=read_store_attrs(store)["uuid"])  # fmt: skip
    return out, codes


def test_search_on_the_gpu_wrapper_accepts_search_parameters(fake_gpu, flat_index, run_cli):
    """`hashkit search` set IVF/HNSW parameters on the GPU wrapper and crashed wherever faiss
    saw a GPU."""
    out, _ = flat_index
    args = ("search", out, "--codes", out.parent / "q.h5", "-k", "3", "--format", "csv")
    result = run_cli(*args, "--nprobe", "4", "--ef-search", "9", "--nflip", "1")
    assert result.exit_code == 0, result.output
    assert FakeGpuIndexBinaryFlat.searches == [3]
    on_cpu = run_cli(*args, "--no-gpu")
    assert list(csv.reader(io.StringIO(result.stdout))) == list(
        csv.reader(io.StringIO(on_cpu.stdout))
    )


def test_k_above_the_gpu_limit_is_searched_on_the_cpu_with_the_same_ids(fake_gpu, flat_index):
    out, codes = flat_index
    searcher = Searcher(out)
    assert searcher.on_gpu
    reference = Searcher(out, gpu=False)
    for k in (8, 9, 300):
        D, I = searcher.search(codes[:4], k)
        D0, I0 = reference.search(codes[:4], k)
        assert np.array_equal(D, D0) and set(I[0].tolist()) == set(I0[0].tolist())
        assert I.min() >= 500 and np.array_equal(np.sort(D, axis=1), D)
    assert FakeGpuIndexBinaryFlat.searches == [8]
