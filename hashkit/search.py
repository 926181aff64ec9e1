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

from hashkit.codes import BIT_ORDER, check_packed, convert_bit_order
from hashkit.errors import DataError, HashkitError, ModelError
from hashkit.index import (
    check_alignment,
    check_compatible,
    range_search,
    read_snapshot,
    search,
    search_index_for,
    set_search_params,
)
from hashkit.store import CodeStore, read_store, read_store_paths, rows_with_code


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
    The index, its sidecar and its store are read from one commit (``read_snapshot``), so a
    concurrent ``add`` or ``build-index`` is seen entirely or not at all.
    """

    def __init__(
        self,
        index_path: str | os.PathLike,
        model_path: str | os.PathLike | None = None,
        device: str = "auto",
        gpu: bool | None = None,
    ) -> None:
        self.index_path = Path(index_path)
        snapshot = read_snapshot(index_path)
        self.index, self.info = snapshot.index, snapshot.info
        if self.info.store is None:
            raise DataError(f"{index_path} has no sidecar naming its code store")
        if snapshot.store_error is not None:
            raise snapshot.store_error
        self.store: CodeStore = snapshot.store
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

    def set_search_params(
        self, *, nprobe: int | None = None, ef_search: int | None = None, nflip: int | None = None
    ) -> None:
        """Search-time parameters of the index (nprobe for IVF, ef_search for HNSW, nflip for
        hash indexes; the others are ignored). A GPU copy is always flat: nothing to set."""
        if not self.on_gpu:
            set_search_params(self.index, nprobe=nprobe, ef_search=ef_search, nflip=nflip)

    def paths_of_rows(self, rows: np.ndarray) -> list[str]:
        """The stored paths of store rows (int, any shape, flattened; -1 gives ""), reading
        those rows only; DataError if the store was replaced by another one since the
        searcher opened it (its rows would not be these ids')."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        known = rows >= 0
        try:
            found, attrs = read_store_paths(self.info.store, rows[known])
        except DataError:
            found, attrs = [], {}
        if attrs.get("uuid", "") != self.store.attrs.get("uuid", "") or len(found) != known.sum():
            raise DataError(
                f"{self.info.store} was replaced while searching {self.index_path}; search again"
            )
        it = iter(found)
        return [next(it) if k else "" for k in known]

    @property
    def bundle(self):
        if self._bundle is None:
            self._bundle = load_checked_bundle(
                self._model_path, self.info.bits, self.fingerprint, "the index"
            )
        return self._bundle

    def encode_images(self, paths: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Packed codes ``n x ceil(bits/8)`` of query images (all must be readable)."""
        return encode_query_images(self.bundle, paths, self.device, batch_size)

    def search(self, xq: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """``D`` int32 nq x k Hamming distances and ``I`` int64 nq x k store ids (-1: none) of
        packed query codes ``xq`` (nq x ceil(bits/8) uint8, FAISS's bit order)."""
        xq = check_packed(xq, self.bits, "query codes")
        # An index built from codes in the older bit order is searched in that order:
        # Hamming distances are the same when queries and database share one order.
        return search(self.search_index, convert_bit_order(xq, BIT_ORDER, self.info.bit_order), k)

    def range_search(
        self, xq: np.ndarray, radius: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every stored code within Hamming distance ``radius`` of each packed query code:
        ``lims`` int64 nq+1, ``D`` int32, ``I`` int64 (see hashkit.index.range_search). Runs on
        the CPU index: FAISS has no range search on a GPU."""
        xq = check_packed(xq, self.bits, "query codes")
        return range_search(
            self.index, convert_bit_order(xq, BIT_ORDER, self.info.bit_order), radius
        )

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
        paths = np.empty(rows.shape, dtype=object)
        paths.reshape(-1)[:] = self.paths_of_rows(np.where(I >= 0, rows, -1))
        return [
            [
                Hit(rank, int(i), int(d), p)
                for rank, (d, i, p) in enumerate(zip(drow, irow, prow), start=1)
                if i >= 0
            ]
            for drow, irow, prow in zip(D, I, paths)
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
            own = self._stored_row_of(query, code)
            if own is None:
                continue
            row, own_path = own
            own_id = int(self.store.ids[row])
            others = [h for h in hits if h.id != own_id][: max(0, k - 1)]
            hits[:] = [Hit(1, own_id, 0, own_path)] + [
                Hit(rank, h.id, h.distance, h.path) for rank, h in enumerate(others, start=2)
            ]
        return results

    def _stored_row_of(self, query: str, code: np.ndarray) -> tuple[int, str] | None:
        """The store row (and its stored path) holding the query image with the query's code:
        the last row whose path resolves to the query's file among the rows whose code is
        ``code``. Only those rows' paths are read and resolved, never the whole store's."""
        candidates = rows_with_code(self.info.store, code)
        if not len(candidates):
            return None
        target = Path(query).resolve()
        for row, stored in reversed(list(zip(candidates, self.paths_of_rows(candidates)))):
            if stored and Path(stored).resolve() == target:
                return int(row), stored
        return None

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
        for ids, paths, codes in iter_query_codes(
            path, self.bits, self.fingerprint, str(self.index_path), batch_size
        ):
            yield ids, paths, self.search_codes(codes, k, radius)


def iter_query_codes(
    path: str | os.PathLike,
    bits: int,
    fingerprint: str,
    what: str,
    batch_size: int = 10000,
) -> Iterator[tuple[np.ndarray, list[str], np.ndarray]]:
    """Query codes of a code store (``.h5``) or a ``.npy`` array of packed codes, checked
    against the searched codes' ``bits`` and model ``fingerprint`` (``what`` names them in
    errors); yields ``(query ids int64 n, query paths n, codes uint8 n x ceil(bits/8))``."""
    path = Path(path)
    if path.suffix == ".npy":
        xq = _load_npy_codes(path, bits)
        for s in range(0, len(xq), batch_size):
            batch = np.asarray(xq[s : s + batch_size])
            yield np.arange(s, s + len(batch), dtype=np.int64), [""] * len(batch), batch
        return
    from hashkit.store import check_store

    n = check_store(path)["datasets"]["codes"][0]  # a bad row is found before any result
    for s in range(0, max(n, 1), batch_size):
        queries = read_store(path, rows=slice(s, s + batch_size))
        if s == 0:
            check_compatible(
                bits_a=queries.bits,
                bits_b=bits,
                what_a=f"query codes {path}",
                what_b=what,
                fingerprint_a=queries.fingerprint,
                fingerprint_b=fingerprint,
            )
        if len(queries):
            yield queries.ids, queries.paths, queries.codes


def _load_npy_codes(path: Path, bits: int) -> np.ndarray:
    """Packed query codes (uint8 N x ceil(bits/8), FAISS's bit order) from a ``.npy`` file,
    memory-mapped and checked whole (dtype, width, padding bits) before any search."""
    try:
        xq = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path} is not a readable .npy array of packed codes ({exc})") from None
    try:
        return check_packed(xq, bits, f"query codes in {path}")
    except HashkitError as exc:
        raise DataError(str(exc)) from None


def load_checked_bundle(model_path, bits: int, fingerprint: str, what: str):
    """The model bundle at ``model_path``, checked against the ``bits`` and model
    ``fingerprint`` that ``what`` (an index, a collection) records; ModelError when there is
    no model to load."""
    from hashkit.bundle import load_bundle

    if model_path is None:
        raise ModelError(f"{what} does not name its model: pass --model")
    bundle = load_bundle(model_path)
    check_compatible(
        bits_a=bundle.bits,
        bits_b=bits,
        what_a=f"model {model_path}",
        what_b=what,
        fingerprint_a=bundle.fingerprint,
        fingerprint_b=fingerprint,
    )
    return bundle


def encode_query_images(bundle, paths: Sequence[str], device, batch_size: int = 256) -> np.ndarray:
    """Packed codes ``n x ceil(bits/8)`` of query images (all must be readable)."""
    from hashkit.encode import iter_file_codes

    out = [
        codes
        for _, codes in iter_file_codes(
            bundle, paths, batch_size=batch_size, device=device, strict=True
        )
    ]
    return np.concatenate(out)
