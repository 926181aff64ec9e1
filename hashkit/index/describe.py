"""What ``hashkit info`` says about an index."""

from __future__ import annotations

import os
from pathlib import Path

from hashkit.index.build import (
    index_params,
    index_type_of,
)
from hashkit.index.compat import check_alignment
from hashkit.index.sidecar import read_index, sidecar_path


def describe_index(path: str | os.PathLike) -> dict:
    """What ``hashkit info`` shows about an index: type, parameters, bits, count, its store
    and model, file sizes, and whether index and store line up."""
    from hashkit.store import read_store

    path = Path(path)
    index, info = read_index(path)
    out = {
        "kind": "index",
        "path": str(path),
        "bits": info.bits,
        "bit_order": info.bit_order,
        "count": int(index.ntotal),
        "type": index_type_of(index),
        "params": {k: v for k, v in index_params(index).items() if k != "type"},
        "model": None if info.model is None else str(info.model),
        "model_fingerprint": info.model_fingerprint,
        "store": None if info.store is None else str(info.store),
        "file_size": path.stat().st_size,
        "sidecar": str(sidecar_path(path)) if sidecar_path(path).is_file() else None,
    }
    if info.store is not None and Path(info.store).is_file():
        store = read_store(info.store, codes=False, paths=False)
        out["store_count"] = len(store.ids)
        out["store_size"] = Path(info.store).stat().st_size
        alignment = check_alignment(index, info, store.ids, store.attrs, index_path=path)
        out["warning"] = alignment.warning() or None
    return out
