"""The JSON sidecar that ties an index file to its code store and model, and reading and
writing an index with it.

Beside ``out.faiss`` hashkit writes ``out.faiss.json``::

    {"format": "hashkit-index", "hashkit_version": "...", "bits": 32, "count": N,
     "bit_order": "little", "type": "ivf", "params": {"nlist": 316, "nprobe": 8},
     "factory": "BIVF316",
     "store": "out.h5", "store_uuid": "...", "model": "/abs/model.pt",
     "model_fingerprint": "<sha256 of the bundle>"}

``store`` is relative to the index's folder when it lies below it. ``params`` holds the search
defaults (nprobe, ef_search, nflip), applied by ``read_index`` since FAISS does not keep all of
them in the file. ``count`` is the number of codes in the index when the sidecar was written.
``bit_order`` is the order of the codes in the index (:mod:`hashkit.codes`); a sidecar
without it belongs to an index built from codes in the older "big" order.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from hashkit import __version__
from hashkit.atomic import PendingFile
from hashkit.codes import BIT_ORDER, BIT_ORDERS, code_bytes
from hashkit.errors import DataError, MismatchError
from hashkit.index.build import (
    _faiss,
    index_params,
    index_type_of,
    set_search_params,
)

SIDECAR_FORMAT = "hashkit-index"


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
    store_uuid: str = ""
    factory: str = ""
    bit_order: str = BIT_ORDER


def sidecar_path(index_path: str | os.PathLike) -> Path:
    return Path(str(index_path) + ".json")


def _sidecar(
    index, path: Path, *, bits: int, store, model, model_fingerprint: str, store_uuid: str
) -> dict:
    params = index_params(index)
    return {
        "format": SIDECAR_FORMAT,
        "hashkit_version": __version__,
        "bits": int(bits),
        "count": int(index.ntotal),
        "bit_order": BIT_ORDER,
        "type": params.pop("type"),
        "params": params,
        "store": _relative_to(store, path.parent),
        "store_uuid": store_uuid,
        "model": None if model is None else str(Path(model).resolve()),
        "model_fingerprint": model_fingerprint,
    }


def prepare_index_files(
    index,
    path: str | os.PathLike,
    *,
    bits: int,
    store: str | os.PathLike | None,
    model: str | os.PathLike | None,
    model_fingerprint: str = "",
    store_uuid: str = "",
) -> list[PendingFile]:
    """Write the index and its sidecar under temporary names; commit them in the order given
    (index, then sidecar) or discard them."""
    faiss = _faiss()
    path = Path(path)
    meta = _sidecar(
        index,
        path,
        bits=bits,
        store=store,
        model=model,
        model_fingerprint=model_fingerprint,
        store_uuid=store_uuid,
    )
    files = [PendingFile(path), PendingFile(sidecar_path(path))]
    try:
        faiss.write_index_binary(index, str(files[0].tmp))
        files[1].tmp.write_text(json.dumps(meta, indent=2) + "\n")
    except BaseException:
        for f in files:
            f.discard()
        raise
    return files


def write_index(
    index,
    path: str | os.PathLike,
    *,
    bits: int,
    store: str | os.PathLike | None,
    model: str | os.PathLike | None,
    model_fingerprint: str = "",
    store_uuid: str = "",
) -> Path:
    """Write the index and its sidecar atomically (each temp + rename; index first)."""
    files = prepare_index_files(
        index,
        path,
        bits=bits,
        store=store,
        model=model,
        model_fingerprint=model_fingerprint,
        store_uuid=store_uuid,
    )
    try:
        for f in files:
            f.commit()
    finally:
        for f in files:
            f.discard()
    return Path(path)


def _relative_to(p: str | os.PathLike | None, base: Path) -> str | None:
    if p is None:
        return None
    p = Path(p).resolve()
    try:
        return str(p.relative_to(base.resolve()))
    except ValueError:
        return str(p)


def read_index(path: str | os.PathLike):
    """Load a FAISS binary index and its sidecar; returns ``(index, IndexInfo)``.

    The sidecar's search defaults (nprobe, ef_search, nflip) are applied to the index.
    """
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
        try:
            meta = json.loads(side.read_text())
        except json.JSONDecodeError as exc:
            raise DataError(f"{side} is not valid JSON ({exc})") from None
        if meta.get("format") != SIDECAR_FORMAT:
            raise DataError(f"{side} is not a hashkit index sidecar")
    else:
        meta = {"bits": index.d, "type": index_type_of(index), "count": index.ntotal}
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
        store_uuid=meta.get("store_uuid", ""),
        # No sidecar: a plain FAISS index, in FAISS's order. A sidecar without the key: an
        # index hashkit built before it packed codes in FAISS's order.
        bit_order=meta.get("bit_order", "big" if side.is_file() else BIT_ORDER),
    )
    if info.bit_order not in BIT_ORDERS:
        raise DataError(f"{side}: bit_order must be one of {BIT_ORDERS}, got {info.bit_order!r}")
    if 8 * code_bytes(info.bits) != index.d:
        raise MismatchError(f"{path}: sidecar says {info.bits} bits, the index has d={index.d}")
    set_search_params(
        index,
        nprobe=info.params.get("nprobe"),
        ef_search=info.params.get("ef_search"),
        nflip=info.params.get("nflip"),
    )
    return index, info
