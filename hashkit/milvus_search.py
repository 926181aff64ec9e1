"""Searching a Milvus collection written by ``hashkit export milvus``, with the interface of
:class:`hashkit.search.Searcher` (``search``, ``search_codes``, ``search_images``,
``search_store``) so that ``hashkit search --milvus`` prints what ``hashkit search INDEX`` does.

On the same codes, a BIN_FLAT collection returns the hits and distances of a FAISS flat index;
among hits at equal distance Milvus's order is arbitrary, so they are listed in id order.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from hashkit.codes import BIT_ORDER, code_bytes
from hashkit.errors import HashkitError, MismatchError
from hashkit.export.milvus import (
    MAX_ROWS,
    MilvusConnection,
    check_collection_name,
    milvus_errors,
    open_collection,
)
from hashkit.search import Hit, encode_query_images, iter_query_codes, load_checked_bundle

# Hits per search request (queries x k): keeps each reply far below gRPC's message limit.
HITS_PER_REQUEST = 100_000


class MilvusSearcher:
    """A hashkit collection at ``uri`` opened for search, with (lazily) the model that encodes
    query images: ``model_path``, else the one the collection's store was encoded with.

    ``nprobe``: IVF lists to visit on a BIN_IVF_FLAT collection (default nlist / 16).
    ``token``: a server's credentials. Call ``close()`` when done.
    """

    def __init__(
        self,
        uri: str | os.PathLike,
        collection: str,
        model_path: str | os.PathLike | None = None,
        *,
        device: str = "auto",
        nprobe: int | None = None,
        token: str = "",
    ) -> None:
        check_collection_name(collection)
        self.connection = MilvusConnection(uri, token, create=False)
        try:
            opened = open_collection(self.connection, collection)
        except BaseException:
            self.connection.close()
            raise
        self.name = f"collection {collection} at {self.connection.uri}"
        self.collection = opened.collection
        self.info = opened.info
        if self.info.bit_order != BIT_ORDER:
            self.close()
            raise MismatchError(
                f"{self.name} holds codes packed in bit order {self.info.bit_order!r}; this "
                f"hashkit packs queries {BIT_ORDER!r}: export the store again"
            )
        params = {}
        if opened.index_type == "bin_ivf_flat":
            params["nprobe"] = nprobe or max(1, opened.nlist // 16)
        self.search_params = {"metric_type": "HAMMING", "params": params}
        model = model_path or self.info.model_path
        self._model_path = Path(model) if model else None
        self._bundle = None
        self.device = device

    @property
    def bits(self) -> int:
        return self.info.bits

    @property
    def fingerprint(self) -> str:
        return self.info.model_fingerprint

    @property
    def bundle(self):
        if self._bundle is None:
            self._bundle = load_checked_bundle(
                self._model_path, self.bits, self.fingerprint, self.name
            )
        return self._bundle

    def encode_images(self, paths: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Packed codes ``n x ceil(bits/8)`` of query images (all must be readable)."""
        return encode_query_images(self.bundle, paths, self.device, batch_size)

    def _search(self, xq: np.ndarray, k: int, paths: bool) -> list[list[tuple[int, int, str]]]:
        """Per query, ``(distance, id, path)`` of the k nearest, by distance then id."""
        if not 1 <= k <= MAX_ROWS:
            raise HashkitError(f"Milvus returns at most {MAX_ROWS} hits per query, not k={k}")
        xq = np.ascontiguousarray(xq, dtype=np.uint8)
        if xq.ndim != 2 or xq.shape[1] != code_bytes(self.bits):
            raise HashkitError(
                f"query codes must be uint8 n x {code_bytes(self.bits)} for {self.name}, "
                f"got shape {xq.shape}"
            )
        step = max(1, HITS_PER_REQUEST // k)
        fields = ["path"] if paths else []
        out = []
        with milvus_errors(self.name):
            for s in range(0, len(xq), step):
                result = self.collection.search(
                    [code.tobytes() for code in xq[s : s + step]],
                    "code",
                    self.search_params,
                    limit=k,
                    output_fields=fields,
                )
                for hits in result:
                    found = zip(
                        (int(d) for d in hits.distances),
                        hits.ids,
                        (h.entity.get("path") for h in hits) if paths else [""] * len(hits),
                    )
                    out.append(sorted(found))
        return out

    def search(self, xq: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """``D`` int32 nq x k Hamming distances and ``I`` int64 nq x k ids (-1: none) of packed
        query codes ``xq`` (nq x ceil(bits/8) uint8), as FAISS returns them."""
        D = np.full((len(xq), k), np.iinfo(np.int32).max, dtype=np.int32)
        I = np.full((len(xq), k), -1, dtype=np.int64)
        for row, hits in enumerate(self._search(xq, k, paths=False)):
            for col, (d, i, _) in enumerate(hits):
                D[row, col], I[row, col] = d, i
        return D, I

    def search_codes(self, codes: np.ndarray, k: int = 10) -> list[list[Hit]]:
        """For each packed query code, the k nearest stored items."""
        return [
            [Hit(rank, i, d, path) for rank, (d, i, path) in enumerate(hits, start=1)]
            for hits in self._search(codes, k, paths=True)
        ]

    def search_images(
        self, paths: Sequence[str], k: int = 10, radius: int | None = None
    ) -> list[list[Hit]]:
        """For each query image, the k nearest stored items; a query that is itself in the
        collection (same path, same code) comes first, as with ``hashkit search INDEX``.
        ``radius`` (range search) is FAISS's only: HashkitError when given."""
        _refuse_radius(radius)
        codes = self.encode_images(paths)
        results = self.search_codes(codes, k)
        for query, code, hits in zip(paths, codes, results):
            own = self._stored_as(str(Path(query).resolve()))
            if own is None or own[1] != code.tobytes():
                continue
            own_id, path = own[0], str(Path(query).resolve())
            others = [h for h in hits if h.id != own_id][: max(0, k - 1)]
            hits[:] = [Hit(1, own_id, 0, path)] + [
                Hit(rank, h.id, h.distance, h.path) for rank, h in enumerate(others, start=2)
            ]
        return results

    def _stored_as(self, path: str) -> tuple[int, bytes] | None:
        """``(id, packed code)`` of the row stored with ``path``, or None."""
        if "\n" in path or "\r" in path:  # Milvus's string literals have no escape for these
            return None
        with milvus_errors(self.name):
            rows = self.collection.query(
                f"path == {json.dumps(path, ensure_ascii=False)}",
                output_fields=["id", "code"],
                limit=1,
            )
        if not rows:
            return None
        code = rows[0]["code"]
        return int(rows[0]["id"]), bytes(code[0] if isinstance(code, list) else code)

    def search_store(
        self,
        path: str | os.PathLike,
        k: int = 10,
        batch_size: int = 10000,
        radius: int | None = None,
    ) -> Iterator[tuple[np.ndarray, list[str], list[list[Hit]]]]:
        """Batch search with the codes of a code store (``.h5``) or a ``.npy`` array of packed
        codes as queries; yields ``(query ids int64 n, query paths n, hits)`` per batch."""
        _refuse_radius(radius)
        for ids, query_paths, codes in iter_query_codes(
            path, self.bits, self.fingerprint, self.name, batch_size
        ):
            yield ids, query_paths, self.search_codes(codes, k)

    def close(self) -> None:
        self.connection.close()


def _refuse_radius(radius: int | None) -> None:
    if radius is not None:
        raise HashkitError("--radius (range search) needs a FAISS index; Milvus answers k nearest")
