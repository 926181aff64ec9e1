"""What ``hashkit info`` says about an index."""

from __future__ import annotations

import os
from pathlib import Path

from hashkit.errors import HashkitError
from hashkit.index.build import (
    index_params,
    index_type_of,
)
from hashkit.index.commit import read_snapshot
from hashkit.index.compat import check_alignment
from hashkit.index.sidecar import sidecar_path


def describe_index(path: str | os.PathLike) -> dict:
    """What ``hashkit info`` shows about an index: type, parameters, bits, count, its store
    and model, file sizes, and whether index and store line up.

    A valid index whose store is missing, unreadable or not the one it was built from is
    still described; ``warning`` says what is wrong with the store.
    """
    path = Path(path)
    snapshot = read_snapshot(path)
    index, info = snapshot.index, snapshot.info
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
    if snapshot.store_error is not None:
        out["warning"] = f"its code store cannot be used: {snapshot.store_error}"
    elif snapshot.store is not None:
        store = snapshot.store
        out["store_count"] = len(store.ids)
        out["store_size"] = Path(info.store).stat().st_size
        try:
            alignment = check_alignment(index, info, store.ids, store.attrs, index_path=path)
            out["warning"] = alignment.warning() or None
        except HashkitError as exc:
            out["warning"] = f"its code store cannot be used: {exc}"
    return out
