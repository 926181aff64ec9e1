"""Searching an index: the index's sidecar names its code store and model, the model encodes
query images (or the queries are codes already, from a code store), FAISS ranks by Hamming
distance, and the store maps ids to paths.

``Searcher.search`` is the thin batch path (arrays in, arrays out) whose cost over calling
FAISS directly the benchmark measures; ``hits`` turns its result into Hit records.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hashkit.errors import DataError, ModelError
from hashkit.index import (
    check_alignment,
    check_compatible,
    range_search,
    read_index,
    search,
    search_index_for,
)
from hashkit.store import CodeStore, read_store


@dataclass
class Hit:
    rank: int
    id: int
    distance: int
    path: str


class Searcher:
    """An index with its store and (lazily) its model, checked to agree on bits and model.

    ``gpu``: None uses GpuIndexBinaryFlat for a flat index when faiss sees a GPU, True
    requires it, False keeps the CPU index. ``alignment.warning()`` says when the store is
    ahead of the index (an interrupted ``add``); search still works on what is indexed.
    """

    def __init__(
        self,
        index_path: str | os.PathLike,
        model_path: str | os.PathLike | None = None,
        device: str = "auto",
        gpu: bool | None = None,
    ) -> None:
        self.index_path = Path(index_path)
        self.index, self.info = read_index(index_path)
        if self.info.store is None:
            raise DataError(f"{index_path} has no sidecar naming its code store")
        self.store: CodeStore = read_store(self.info.store, codes=False, paths=False)
        check_compatible(
            bits_a=self.info.bits,
            bits_b=self.store.bits,
            what_a=str(index_path),
            what_b=str(self.info.store),
            fingerprint_a=self.info.model_fingerprint,
            fingerprint_b=self.store.fingerprint,
        )
        self.alignment = check_alignment(
            self.index, self.info, self.store.ids, self.store.attrs, index_path=index_path
        )
        self.search_index, self.on_gpu = search_index_for(self.index, gpu)
        self._model_path = Path(model_path) if model_path else self.info.model
        self._bundle = None
        self._paths: list[str] | None = None
        self._rows_by_path: dict[str, int] | None = None
        self.device = device
        ids = self.store.ids
        self._order = None if np.all(ids[1:] > ids[:-1]) else np.argsort(ids, kind="stable")
        self._sorted_ids = ids if self._order is None else ids[self._order]

    @property
    def bits(self) -> int:
        return self.info.bits

    @property
    def fingerprint(self) -> str:
        return self.info.model_fingerprint or self.store.fingerprint

    @property
    def paths(self) -> list[str]:
        """The store's paths, read on first use (N str)."""
        if self._paths is None:
            self._paths = read_store(self.info.store, codes=False).paths
        return self._paths

    @property
    def bundle(self):
        if self._bundle is None:
            from hashkit.bundle import load_bundle

            if self._model_path is None:
                raise ModelError("the index does not name its model: pass --model")
            bundle = load_bundle(self._model_path)
            check_compatible(
                bits_a=bundle.bits,
                bits_b=self.info.bits,
                what_a=f"model {self._model_path}",
                what_b="the index",
                fingerprint_a=bundle.fingerprint,
                fingerprint_b=self.fingerprint,
            )
            self._bundle = bundle
        return self._bundle

    def encode_images(self, paths: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Packed codes ``n x ceil(bits/8)`` of query images (all must be readable)."""
        from hashkit.encode import iter_file_codes

        out = [
            codes
            for _, codes in iter_file_codes(
                self.bundle, paths, batch_size=batch_size, device=self.device, strict=True
            )
        ]
        return np.concatenate(out)

    def search(self, xq: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """``D`` int32 nq x k Hamming distances and ``I`` int64 nq x k store ids (-1: none) of
        packed query codes ``xq`` (nq x ceil(bits/8) uint8)."""
        return search(self.search_index, xq, k)

    def range_search(
        self, xq: np.ndarray, radius: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every stored code within Hamming distance ``radius`` of each packed query code:
        ``lims`` int64 nq+1, ``D`` int32, ``I`` int64 (see hashkit.index.range_search). Runs on
        the CPU index: FAISS has no range search on a GPU."""
        return range_search(self.index, xq, radius)

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        """Store rows of store ids (any shape); -1 where an id is not in the store."""
        ids = np.asarray(ids, dtype=np.int64)
        pos = np.searchsorted(self._sorted_ids, ids)
        pos = np.minimum(pos, len(self._sorted_ids) - 1)
        found = (ids >= 0) & (self._sorted_ids[pos] == ids)
        rows = pos if self._order is None else self._order[pos]
        return np.where(found, rows, -1)

    def hits(self, D: np.ndarray, I: np.ndarray) -> list[list[Hit]]:
        """Hit records (rank, id, distance, path) of a ``search`` result, per query."""
        rows = self.rows_of(I)
        paths = self.paths
        return [
            [
                Hit(rank, int(i), int(d), paths[r] if r >= 0 else "")
                for rank, (d, i, r) in enumerate(zip(drow, irow, rrow), start=1)
                if i >= 0
            ]
            for drow, irow, rrow in zip(D, I, rows)
        ]

    def range_hits(self, lims: np.ndarray, D: np.ndarray, I: np.ndarray) -> list[list[Hit]]:
        """Hit records of a ``range_search`` result, per query."""
        return [self.hits(D[None, a:b], I[None, a:b])[0] for a, b in zip(lims[:-1], lims[1:])]

    def search_codes(
        self, codes: np.ndarray, k: int = 10, radius: int | None = None
    ) -> list[list[Hit]]:
        """For each packed query code, the k nearest stored items, or with ``radius`` every
        stored item within that Hamming distance (nearest first)."""
        if radius is not None:
            return self.range_hits(*self.range_search(codes, radius))
        return self.hits(*self.search(codes, k))

    def search_images(
        self, paths: Sequence[str], k: int = 10, radius: int | None = None
    ) -> list[list[Hit]]:
        """For each query image, the k nearest stored items (or those within ``radius``).

        A query that is itself in the store (same file, same code) is ranked first: among
        codes at distance 0 FAISS's order is arbitrary, and a user looking up a stored image
        expects to see that image on top.
        """
        codes = self.encode_images(paths)
        results = self.search_codes(codes, k, radius)
        if radius is not None:
            return results
        for query, code, hits in zip(paths, codes, results):
            row = self._row_of_path().get(str(Path(query).resolve()))
            if row is None:
                continue
            stored = read_store(self.info.store, paths=False, rows=slice(row, row + 1))
            if not np.array_equal(stored.codes[0], code):
                continue
            own_id = int(stored.ids[0])
            others = [h for h in hits if h.id != own_id][: max(0, k - 1)]
            hits[:] = [Hit(1, own_id, 0, self.paths[row])] + [
                Hit(rank, h.id, h.distance, h.path) for rank, h in enumerate(others, start=2)
            ]
        return results

    def _row_of_path(self) -> dict[str, int]:
        if self._rows_by_path is None:
            self._rows_by_path = {str(Path(p).resolve()): r for r, p in enumerate(self.paths) if p}
        return self._rows_by_path

    def search_store(
        self,
        path: str | os.PathLike,
        k: int = 10,
        batch_size: int = 10000,
        radius: int | None = None,
    ) -> Iterator[tuple[np.ndarray, list[str], list[list[Hit]]]]:
        """Batch search with the codes of a code store (``.h5``) or a ``.npy`` array of packed
        codes as queries (k nearest, or within ``radius``); yields ``(query ids int64 n, query
        paths n, hits)`` per batch."""
        path = Path(path)
        if path.suffix == ".npy":
            xq = np.load(path, mmap_mode="r")
            if xq.dtype != np.uint8 or xq.ndim != 2:
                raise DataError(f"{path}: packed codes must be uint8 N x bytes, got {xq.dtype}")
            check_compatible(
                bits_a=8 * xq.shape[1],
                bits_b=8 * ((self.bits + 7) // 8),
                what_a=f"query codes {path}",
                what_b=str(self.index_path),
            )
            for s in range(0, len(xq), batch_size):
                batch = np.asarray(xq[s : s + batch_size])
                ids = np.arange(s, s + len(batch), dtype=np.int64)
                yield ids, [""] * len(batch), self.search_codes(batch, k, radius)
            return
        from hashkit.store import store_count

        n = store_count(path)
        for s in range(0, max(n, 1), batch_size):
            queries = read_store(path, rows=slice(s, s + batch_size))
            if s == 0:
                check_compatible(
                    bits_a=queries.bits,
                    bits_b=self.bits,
                    what_a=f"query codes {path}",
                    what_b=str(self.index_path),
                    fingerprint_a=queries.fingerprint,
                    fingerprint_b=self.fingerprint,
                )
            if len(queries):
                yield queries.ids, queries.paths, self.search_codes(queries.codes, k, radius)
