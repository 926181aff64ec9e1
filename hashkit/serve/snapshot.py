"""What the service searches: an index and its code store, loaded together as one immutable
snapshot (the model is loaded once, by the service), and the one function that decides when to
load a new one.

``hashkit add`` (and ``build-index``) replace the store, the index and its sidecar by renames.
The service never reads files in place while answering: it loads a whole new snapshot beside
the one it serves, checks that no file changed while it was loading, and then swaps a single
reference (:func:`refresh_snapshot`). A batch of queries holds the snapshot it started with, so
an answer never mixes two versions.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hashkit.errors import DataError, HashkitError
from hashkit.index import index_params, sidecar_path
from hashkit.search import Searcher
from hashkit.store import read_store

# A writer that renames files while we load gets this many more tries, this far apart.
LOAD_ATTEMPTS = 5
LOAD_RETRY_S = 0.2


@dataclass(frozen=True)
class Snapshot:
    """One consistent version of an index and its store, read-only once built.

    ``codes`` uint8 N x ceil(bits/8), ``ids`` int64 N, ``paths`` N str, ``labels`` int64 N,
    uint8 N x C or None: the whole store, in store order. ``signature`` identifies the files it
    was loaded from (see :func:`files_signature`); ``version`` counts loads, from 1.
    """

    searcher: Searcher
    codes: np.ndarray
    ids: np.ndarray
    paths: list[str]
    labels: np.ndarray | None
    class_names: list[str]
    signature: tuple
    version: int
    loaded_at: float = field(default_factory=time.time)

    @property
    def count(self) -> int:
        """Number of codes the index holds (the store may hold more after an interrupted add)."""
        return int(self.searcher.index.ntotal)

    @property
    def bits(self) -> int:
        return self.searcher.bits

    def row_of(self, item_id: int) -> int | None:
        """The store row of an indexed item id, or None when the index does not hold it."""
        row = int(self.searcher.rows_of(np.array([item_id]))[0])
        return row if 0 <= row < self.count else None

    def label_of(self, row: int) -> str | None:
        """The class of a store row: its label's class name(s) from the store, else the name of
        the folder holding its image (the one-folder-per-class layout), else None."""
        if self.labels is not None:
            label = self.labels[row]
            if label.ndim == 0:
                return self._class_name(int(label))
            return ", ".join(self._class_name(int(c)) for c in np.flatnonzero(label)) or None
        folder = os.path.basename(os.path.dirname(self.paths[row]))
        return folder or None

    def _class_name(self, c: int) -> str:
        return self.class_names[c] if 0 <= c < len(self.class_names) else str(c)

    def describe(self) -> dict:
        """What ``hashkit info`` says about the index, for the snapshot as loaded."""
        searcher = self.searcher
        info = searcher.info
        side = sidecar_path(searcher.index_path)
        return {
            "kind": "index",
            "path": str(searcher.index_path),
            "bits": info.bits,
            "count": self.count,
            "type": info.type,
            "params": {k: v for k, v in index_params(searcher.index).items() if k != "type"},
            "model": None if info.model is None else str(info.model),
            "model_fingerprint": info.model_fingerprint,
            "store": None if info.store is None else str(info.store),
            "store_count": len(self.ids),
            "sidecar": str(side),
            "warning": searcher.alignment.warning() or None,
            "on_gpu": bool(searcher.on_gpu),
            "version": self.version,
            "loaded_at": self.loaded_at,
        }


def files_signature(index_path: str | os.PathLike) -> tuple:
    """(path, inode, size, mtime) of the index, its sidecar and the store the sidecar names:
    it changes whenever any of them is replaced or rewritten. A missing or unreadable file
    counts as (path, None): loading it then says what is wrong."""
    index_path = Path(index_path)
    side = sidecar_path(index_path)
    files = [index_path, side]
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        meta = None
    store = meta.get("store") if isinstance(meta, dict) else None
    if isinstance(store, str) and store:
        files.append(index_path.parent / store)
    return tuple(_stat(p) for p in files)


def _stat(path: Path) -> tuple:
    try:
        st = path.stat()
    except OSError:
        return (str(path), None)
    return (str(path), st.st_ino, st.st_size, st.st_mtime_ns)


def load_snapshot(
    index_path: str | os.PathLike, *, signature: tuple, version: int, gpu: bool | None = False
) -> Snapshot:
    """Load the index and its whole store (no model: the service holds that once)."""
    searcher = Searcher(index_path, gpu=gpu)
    store = read_store(searcher.info.store)
    if not np.array_equal(store.ids, searcher.store.ids):
        raise DataError(f"{searcher.info.store} changed while it was being read")
    return Snapshot(
        searcher=searcher,
        codes=store.codes,
        ids=store.ids,
        paths=store.paths,
        labels=store.labels,
        class_names=list(store.class_names or []),
        signature=signature,
        version=version,
    )


def refresh_snapshot(
    current: Snapshot | None,
    index_path: str | os.PathLike,
    *,
    gpu: bool | None = False,
    attempts: int = LOAD_ATTEMPTS,
    retry_s: float = LOAD_RETRY_S,
) -> Snapshot:
    """The snapshot to serve: ``current`` itself while the index files are unchanged on disk,
    else a new one loaded whole.

    A load counts only if the files' signature is the same before and after it, so a load that
    overlapped a writer's renames (a store newer than its index, a half-replaced set) is thrown
    away and tried again, up to ``attempts`` times ``retry_s`` apart. Raises HashkitError when no
    consistent snapshot could be loaded; the caller keeps serving ``current``.
    """
    error: HashkitError | None = None
    for attempt in range(attempts):
        if attempt:
            time.sleep(retry_s)
        try:
            before = files_signature(index_path)
            if current is not None and before == current.signature:
                return current
            version = 1 if current is None else current.version + 1
            snapshot = load_snapshot(index_path, signature=before, version=version, gpu=gpu)
            if files_signature(index_path) == before:
                return snapshot
            error = DataError(f"{index_path} kept changing while it was being loaded")
        except HashkitError as exc:
            error = exc
    assert error is not None
    raise error
