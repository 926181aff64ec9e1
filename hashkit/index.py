"""FAISS binary indexes over packed codes, and the JSON sidecar that ties an index to its
code store and model.

An index file is plain FAISS (``faiss.read_index_binary`` reads it); its ids are the code
store's ``ids``. Beside ``out.faiss`` hashkit writes ``out.faiss.json``::

    {"format": "hashkit-index", "bits": 32, "type": "flat", "params": {...},
     "store": "out.h5", "model": "/abs/model.pt", "model_fingerprint": "...", "count": N}

``store`` is relative to the index's folder when it lies below it.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hashkit import __version__
from hashkit.atomic import atomic_path
from hashkit.codes import check_packed, code_bytes
from hashkit.errors import DataError, HashkitError, MismatchError

INDEX_TYPES = ("flat", "ivf")
SIDECAR_FORMAT = "hashkit-index"


def _faiss():
    import faiss

    return faiss


def default_nlist(n: int) -> int:
    """About sqrt(N) lists, but at least 39 training codes per list (FAISS's advice), >= 1."""
    return max(1, min(int(round(math.sqrt(n))), n // 39))


def build_index(
    codes: np.ndarray,
    ids: np.ndarray,
    bits: int,
    index_type: str = "flat",
    *,
    nlist: int | None = None,
    nprobe: int | None = None,
    seed: int = 0,
):
    """A FAISS binary index holding ``codes`` (N x ceil(bits/8) uint8) under ``ids`` (int64 N).

    flat: IndexBinaryFlat (exact) in an IndexBinaryIDMap; ivf: IndexBinaryIVF with ``nlist``
    lists (default about sqrt(N)), trained on the codes, searching ``nprobe`` lists.
    """
    faiss = _faiss()
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    check_packed(codes, bits)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    d = 8 * code_bytes(bits)
    if len(codes) == 0:
        raise DataError("no codes to index")
    if index_type == "flat":
        index = faiss.IndexBinaryIDMap(faiss.IndexBinaryFlat(d))
    elif index_type == "ivf":
        nlist = nlist or default_nlist(len(codes))
        if nlist > len(codes):
            raise HashkitError(f"--nlist {nlist} is larger than the {len(codes)} codes to index")
        quantizer = faiss.IndexBinaryFlat(d)
        index = faiss.IndexBinaryIVF(quantizer, d, nlist)
        index.own_fields = True
        quantizer.this.disown()
        index.cp.seed = seed
        index.train(codes)
        index.nprobe = nprobe or max(1, nlist // 16)
    else:
        raise HashkitError(f"unknown index type {index_type!r}; choose one of {INDEX_TYPES}")
    index.add_with_ids(codes, ids)
    return index


def index_params(index) -> dict:
    """The type and search parameters of an index, for the sidecar and ``hashkit info``."""
    faiss = _faiss()
    inner = faiss.downcast_IndexBinary(index.index) if hasattr(index, "id_map") else index
    if isinstance(inner, faiss.IndexBinaryIVF):
        return {"type": "ivf", "nlist": int(inner.nlist), "nprobe": int(inner.nprobe)}
    return {"type": "flat"}


@dataclass
class IndexInfo:
    """What the sidecar says about an index."""

    bits: int
    type: str
    store: Path | None
    model: Path | None
    model_fingerprint: str = ""
    count: int = 0
    params: dict = field(default_factory=dict)


def sidecar_path(index_path: str | os.PathLike) -> Path:
    return Path(str(index_path) + ".json")


def write_index(
    index,
    path: str | os.PathLike,
    *,
    bits: int,
    store: str | os.PathLike | None,
    model: str | os.PathLike | None,
    model_fingerprint: str = "",
) -> Path:
    """Write the index and its sidecar atomically (index first, then sidecar)."""
    faiss = _faiss()
    path = Path(path)
    with atomic_path(path) as tmp:
        faiss.write_index_binary(index, str(tmp))
    meta = {
        "format": SIDECAR_FORMAT,
        "hashkit_version": __version__,
        "bits": int(bits),
        "count": int(index.ntotal),
        **{"type": "flat", "params": {}},
        "store": _relative_to(store, path.parent),
        "model": None if model is None else str(Path(model).resolve()),
        "model_fingerprint": model_fingerprint,
    }
    params = index_params(index)
    meta["type"] = params.pop("type")
    meta["params"] = params
    with atomic_path(sidecar_path(path)) as tmp:
        tmp.write_text(json.dumps(meta, indent=2) + "\n")
    return path


def _relative_to(p: str | os.PathLike | None, base: Path) -> str | None:
    if p is None:
        return None
    p = Path(p).resolve()
    try:
        return str(p.relative_to(base.resolve()))
    except ValueError:
        return str(p)


def read_index(path: str | os.PathLike):
    """Load a FAISS binary index and its sidecar; returns ``(index, IndexInfo)``."""
    faiss = _faiss()
    path = Path(path)
    if not path.is_file():
        raise DataError(f"index not found: {path}")
    try:
        index = faiss.read_index_binary(str(path))
    except RuntimeError as exc:
        raise DataError(f"not a FAISS binary index: {path} ({str(exc).splitlines()[0]})") from None
    side = sidecar_path(path)
    if side.is_file():
        meta = json.loads(side.read_text())
    else:
        meta = {"bits": index.d, "type": index_params(index)["type"]}
    store = meta.get("store")
    model = meta.get("model")
    info = IndexInfo(
        bits=int(meta["bits"]),
        type=meta.get("type", "flat"),
        store=None if store is None else (path.parent / store),
        model=None if model is None else Path(model),
        model_fingerprint=meta.get("model_fingerprint", ""),
        count=int(meta.get("count", index.ntotal)),
        params=meta.get("params", {}),
    )
    if 8 * code_bytes(info.bits) != index.d:
        raise MismatchError(f"{path}: sidecar says {info.bits} bits, the index has d={index.d}")
    return index, info


def check_compatible(
    *,
    bits_a: int,
    bits_b: int,
    what_a: str,
    what_b: str,
    fingerprint_a: str = "",
    fingerprint_b: str = "",
) -> None:
    """Raise MismatchError when two artefacts disagree on bits or (both known) fingerprint."""
    if bits_a != bits_b:
        raise MismatchError(f"{what_a} has {bits_a} bits but {what_b} has {bits_b} bits")
    if fingerprint_a and fingerprint_b and fingerprint_a != fingerprint_b:
        raise MismatchError(
            f"{what_a} and {what_b} come from different models "
            f"(fingerprints {fingerprint_a[:12]} and {fingerprint_b[:12]})"
        )


def search(index, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """k nearest codes by Hamming distance: ``D`` int32 nq x k, ``I`` int64 nq x k (-1 = none)."""
    xq = np.ascontiguousarray(xq, dtype=np.uint8)
    if xq.shape[1] * 8 != index.d:
        raise MismatchError(f"query codes of {xq.shape[1] * 8} bits for an index of d={index.d}")
    k = max(1, min(k, index.ntotal))
    return index.search(xq, k)
