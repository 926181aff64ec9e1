"""Searching a flat index on a GPU (GpuIndexBinaryFlat) with the store's ids."""

from __future__ import annotations

import numpy as np

from hashkit.errors import HashkitError
from hashkit.index.build import (
    _faiss,
    _inner,
    index_ids,
    index_type_of,
)

GPU_MAX_K = 2048  # the largest k GPU k-selection supports


def gpu_count() -> int:
    """Number of GPUs this faiss build can use (0 for a CPU-only build)."""
    faiss = _faiss()
    try:
        return int(faiss.get_num_gpus()) if hasattr(faiss, "GpuIndexBinaryFlat") else 0
    except (AttributeError, RuntimeError):
        return 0


class DeviceFlatIndex:
    """A brute-force index on another device (GpuIndexBinaryFlat) that returns store ids.

    ``device_index`` holds the codes at positions 0..n-1; ``ids`` (int64 n) maps a position
    to the store's id. Searches with k above GPU_MAX_K go to ``cpu_index``.
    """

    def __init__(self, device_index, ids: np.ndarray, cpu_index=None, resources=None) -> None:
        self.device_index = device_index
        self.ids = np.ascontiguousarray(ids, dtype=np.int64)
        self.cpu_index = cpu_index
        self.resources = resources
        self.d = device_index.d
        self.ntotal = device_index.ntotal

    def search(self, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if k > GPU_MAX_K:
            if self.cpu_index is None:
                raise HashkitError(f"k={k} is above the GPU's limit of {GPU_MAX_K}: use --no-gpu")
            return self.cpu_index.search(xq, k)
        D, I = self.device_index.search(xq, k)
        return D, np.where(I >= 0, self.ids[np.maximum(I, 0)], -1)


def flat_codes(index) -> tuple[np.ndarray, np.ndarray]:
    """The packed codes (ntotal x d/8 uint8) and ids (int64) of a flat IDMap index."""
    faiss = _faiss()
    inner = _inner(index)
    if not isinstance(inner, faiss.IndexBinaryFlat):
        raise HashkitError(f"not a flat index: {index_type_of(index)}")
    codes = faiss.vector_to_array(inner.xb).reshape(-1, inner.code_size)
    ids = index_ids(index)
    return codes, (np.arange(len(codes), dtype=np.int64) if ids is None else ids)


def to_gpu(index, device: int = 0) -> DeviceFlatIndex:
    """A GpuIndexBinaryFlat copy of a flat index, returning the same ids."""
    faiss = _faiss()
    codes, ids = flat_codes(index)
    resources = faiss.StandardGpuResources()
    config = faiss.GpuIndexBinaryFlatConfig()
    config.device = device
    gpu = faiss.GpuIndexBinaryFlat(resources, index.d, config)
    gpu.add(codes)
    return DeviceFlatIndex(gpu, ids, cpu_index=index, resources=resources)


def search_index_for(index, gpu: bool | None = None):
    """The index to search with: a GPU copy of a flat index when ``gpu`` is True, or None
    (auto) and faiss sees a GPU; else ``index`` itself. Returns ``(index, on_gpu)``.

    ``gpu=True`` without a GPU, or for a non-flat index, raises HashkitError.
    """
    if gpu is False:
        return index, False
    kind = index_type_of(index)
    n_gpu = gpu_count()
    if gpu is True:
        if n_gpu == 0:
            raise HashkitError("--gpu: this faiss build sees no GPU (use --no-gpu)")
        if kind != "flat":
            raise HashkitError(f"--gpu searches flat indexes only; this index is {kind}")
    if n_gpu == 0 or kind != "flat":
        return index, False
    return to_gpu(index), True
