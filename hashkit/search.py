"""Searching an index with images: the index's sidecar names its code store and model, the
model encodes the queries, FAISS ranks by Hamming distance, the store maps ids to paths."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hashkit.errors import DataError, ModelError
from hashkit.index import check_compatible, read_index, search
from hashkit.store import CodeStore, read_store


@dataclass
class Hit:
    rank: int
    id: int
    distance: int
    path: str


class Searcher:
    """An index with its store and (lazily) its model, checked to agree on bits and model."""

    def __init__(
        self,
        index_path: str | os.PathLike,
        model_path: str | os.PathLike | None = None,
        device: str = "auto",
    ) -> None:
        self.index, self.info = read_index(index_path)
        if self.info.store is None:
            raise DataError(f"{index_path} has no sidecar naming its code store")
        self.store: CodeStore = read_store(self.info.store)
        check_compatible(
            bits_a=self.info.bits,
            bits_b=self.store.bits,
            what_a=str(index_path),
            what_b=str(self.info.store),
            fingerprint_a=self.info.model_fingerprint,
            fingerprint_b=self.store.fingerprint,
        )
        self._model_path = Path(model_path) if model_path else self.info.model
        self._bundle = None
        self.device = device
        self._row_of_id = {int(i): r for r, i in enumerate(self.store.ids)}

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
                fingerprint_b=self.info.model_fingerprint,
            )
            self._bundle = bundle
        return self._bundle

    def encode_images(self, paths: Sequence[str]) -> np.ndarray:
        """Packed codes of query images (all must be readable)."""
        from hashkit.codes import sign_codes
        from hashkit.encode import iter_file_embeddings, resolve_device

        bundle = self.bundle
        dev = resolve_device(self.device)
        net = bundle.build_network(dev)
        h = np.concatenate(
            [e for _, e in iter_file_embeddings(net, paths, device=dev, strict=True)]
        )
        return sign_codes(h, bundle.rotation)

    def search_codes(self, codes: np.ndarray, k: int = 10) -> list[list[Hit]]:
        """For each query code, the k nearest stored items."""
        D, I = search(self.index, codes, k)
        results = []
        for drow, irow in zip(D, I):
            hits = []
            for rank, (d, i) in enumerate(zip(drow, irow), start=1):
                if i < 0:
                    continue
                row = self._row_of_id.get(int(i))
                hits.append(
                    Hit(rank, int(i), int(d), self.store.paths[row] if row is not None else "")
                )
            results.append(hits)
        return results

    def search_images(self, paths: Sequence[str], k: int = 10) -> list[list[Hit]]:
        """For each query image, the k nearest stored items.

        A query that is itself in the store (same file, same code) is ranked first: among
        codes at distance 0 FAISS's order is arbitrary, and a user looking up a stored image
        expects to see that image on top.
        """
        codes = self.encode_images(paths)
        results = self.search_codes(codes, k)
        row_of_path = {str(Path(p).resolve()): r for r, p in enumerate(self.store.paths) if p}
        for query, code, hits in zip(paths, codes, results):
            row = row_of_path.get(str(Path(query).resolve()))
            if row is None or not np.array_equal(self.store.codes[row], code):
                continue
            own_id = int(self.store.ids[row])
            others = [h for h in hits if h.id != own_id][: max(0, k - 1)]
            hits[:] = [Hit(1, own_id, 0, self.store.paths[row])] + [
                Hit(rank, h.id, h.distance, h.path) for rank, h in enumerate(others, start=2)
            ]
        return results
