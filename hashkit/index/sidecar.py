"""The JSON sidecar that ties an index file to its code store and model, and reading and
writing an index with it.

Beside ``out.faiss`` hashkit writes ``out.faiss.json``::

    {"format": "hashkit-index", "hashkit_version": "...", "bits": 32, "count": N,
     "bit_order": "little", "type": "ivf", "params": {"nlist": 316, "nprobe": 8},
     "factory": "BIVF316",
     "store": "out.h5", "store_uuid": "...", "model": "/abs/model.pt",
     "model_fingerprint": "<sha256 of the bundle>",
     "index_size": 123456, "index_crc32": 2864434397}

``store`` is relative to the index's folder when it lies below it. ``params`` holds the search
defaults (nprobe, ef_search, nflip), applied by ``read_index`` since FAISS does not keep all of
them in the file. ``count`` is the number of codes in the index when the sidecar was written.
``bit_order`` is the order of the codes in the index (:mod:`hashkit.codes`); a sidecar
without it belongs to an index built from codes in the older "big" order.
``index_size`` and ``index_crc32`` (zlib CRC-32 of the index file) tie the sidecar to the one
index file it was written with: an index replaced or damaged behind the sidecar's back is
refused before FAISS reads it (sidecars written before these keys are still read).
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from hashkit import __version__
from hashkit.atomic import PendingFile, write_error
from hashkit.codes import BIT_ORDER, BIT_ORDERS, code_bytes
from hashkit.errors import DataError, HashkitError, MismatchError
from hashkit.index.build import (
    _faiss,
    index_params,
    index_type_of,
    set_search_params,
)

SIDECAR_FORMAT = "hashkit-index"


class NotAnIndexError(DataError):
    """The file is not a FAISS binary index (FAISS cannot read it)."""


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
    index_size: int | None = None
    index_crc32: int | None = None


def sidecar_path(index_path: str | os.PathLike) -> Path:
    return Path(str(index_path) + ".json")


def file_crc32(path: str | os.PathLike, chunk: int = 1 << 22) -> tuple[int, int]:
    """``(size in bytes, zlib CRC-32)`` of a file, read in chunks."""
    crc, size = 0, 0
    with open(path, "rb") as f:
        while block := f.read(chunk):
            crc = zlib.crc32(block, crc)
            size += len(block)
    return size, crc


def _sidecar(
    index,
    path: Path,
    *,
    bits: int,
    store,
    model,
    model_fingerprint: str,
    store_uuid: str,
    index_size: int,
    index_crc32: int,
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
        "index_size": index_size,
        "index_crc32": index_crc32,
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
    """Write the index and its sidecar under temporary names; the caller commits them together
    (:func:`hashkit.index.commit.commit_files`) or discards them."""
    faiss = _faiss()
    path = Path(path)
    files = [PendingFile(path), PendingFile(sidecar_path(path))]
    try:
        try:
            # Through a Python file object: FAISS takes a path only as UTF-8 text, and a file
            # name may be any bytes.
            # The checksum is taken as the bytes go out: the file is not read back.
            crc, size = 0, 0

            def write(block: bytes) -> int:
                nonlocal crc, size
                crc = zlib.crc32(block, crc)
                size += len(block)
                return f.write(block)

            with open(files[0].tmp, "wb") as f:
                faiss.write_index_binary(index, faiss.PyCallbackIOWriter(write))
        except (RuntimeError, OSError) as exc:
            raise write_error(path, exc) from None
        meta = _sidecar(
            index,
            path,
            bits=bits,
            store=store,
            model=model,
            model_fingerprint=model_fingerprint,
            store_uuid=store_uuid,
            index_size=size,
            index_crc32=crc,
        )
        try:
            files[1].tmp.write_text(json.dumps(meta, indent=2) + "\n")
        except OSError as exc:
            raise write_error(files[1].target, exc) from None
    except BaseException:
        for f in files:
            f.discard()
        raise
    return files


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

    The sidecar is checked field by field, the index file against the sidecar's size and
    checksum (before FAISS parses it), and the sidecar's search defaults (nprobe, ef_search,
    nflip) are applied to the index. Every problem is one DataError/MismatchError line;
    NotAnIndexError when FAISS cannot read the file.
    """
    faiss = _faiss()
    path = Path(path)
    if not path.is_file():
        raise DataError(f"index not found: {path}")
    side = sidecar_path(path)
    meta = load_sidecar(side) if side.is_file() else None
    if meta is not None and meta.get("index_size") is not None:
        _check_index_file(path, side, meta["index_size"], meta.get("index_crc32"))
    try:
        with open(path, "rb") as f:  # not by name: FAISS takes UTF-8 names only
            index = faiss.read_index_binary(faiss.PyCallbackIOReader(f.read, 1 << 22))
    except (RuntimeError, MemoryError, ValueError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
        raise NotAnIndexError(f"not a FAISS binary index: {path} ({reason[:200]})") from None
    if meta is None:
        meta = {"bits": index.d, "type": index_type_of(index), "count": index.ntotal}
    store = meta.get("store")
    model = meta.get("model")
    info = IndexInfo(
        bits=meta["bits"],
        type=index_type_of(index),  # the index's own, whatever an edited sidecar says
        store=None if store is None else (path.parent / store),
        model=None if model is None else Path(model),
        model_fingerprint=meta.get("model_fingerprint", ""),
        count=meta.get("count", int(index.ntotal)),
        params=meta.get("params", {}),
        store_uuid=meta.get("store_uuid", ""),
        # No sidecar: a plain FAISS index, in FAISS's order. A sidecar without the key: an
        # index hashkit built before it packed codes in FAISS's order.
        bit_order=meta.get("bit_order", "big" if side.is_file() else BIT_ORDER),
        index_size=meta.get("index_size"),
        index_crc32=meta.get("index_crc32"),
    )
    if info.bit_order not in BIT_ORDERS:
        raise DataError(f"{side}: bit_order must be one of {BIT_ORDERS}, got {info.bit_order!r}")
    if 8 * code_bytes(info.bits) != index.d:
        raise MismatchError(f"{path}: sidecar says {info.bits} bits, the index has d={index.d}")
    try:
        set_search_params(
            index,
            nprobe=info.params.get("nprobe"),
            ef_search=info.params.get("ef_search"),
            nflip=info.params.get("nflip"),
        )
    except HashkitError as exc:
        raise DataError(f"{side}: {exc}") from None
    return index, info


def _check_index_file(path: Path, side: Path, size: int, crc: int | None) -> None:
    actual_size, actual_crc = (path.stat().st_size, None) if crc is None else file_crc32(path)
    if actual_size != size or (crc is not None and actual_crc != crc):
        raise MismatchError(
            f"{path} is not the index its sidecar {side} was written with (size or checksum "
            "differs: replaced or damaged); rebuild it with `hashkit build-index`"
        )


_FIELDS = {  # key: (types accepted, description); bool is refused where int is meant
    "bits": ((int,), "a positive integer"),
    "count": ((int,), "an integer >= 0"),
    "type": ((str,), "a string"),
    "params": ((dict,), "an object"),
    "store": ((str, type(None)), "a path or null"),
    "store_uuid": ((str,), "a string"),
    "bit_order": ((str,), "a string"),
    "model": ((str, type(None)), "a path or null"),
    "model_fingerprint": ((str,), "a string"),
    "index_size": ((int, type(None)), "an integer >= 0"),
    "index_crc32": ((int, type(None)), "an integer >= 0"),
}
_PARAMS = ("nlist", "nprobe", "M", "ef_construction", "ef_search", "nhash", "hash_bits", "nflip")


def load_sidecar(side: str | os.PathLike) -> dict:
    """The sidecar's JSON object, checked: DataError naming ``side`` for an empty, non-UTF-8,
    non-JSON or non-object file, another format, a missing ``bits`` or a field of the wrong
    type or range."""
    side = Path(side)
    try:
        raw = side.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {side}: {exc.strerror}") from None
    if not raw.strip():
        raise DataError(f"{side} is empty: not a hashkit index sidecar")
    try:
        meta = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise DataError(f"{side} is not UTF-8 text: not a hashkit index sidecar") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{side} is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != SIDECAR_FORMAT:
        raise DataError(f"{side} is not a hashkit index sidecar (no format {SIDECAR_FORMAT!r})")
    if "bits" not in meta:
        raise DataError(f"{side} has no 'bits': not a complete hashkit index sidecar")
    for key, (types, what) in _FIELDS.items():
        if key not in meta:
            continue
        value = meta[key]
        bad = isinstance(value, bool) or not isinstance(value, types)
        if not bad and isinstance(value, int):
            bad = value < (1 if key == "bits" else 0)
        if bad:
            raise DataError(f"{side}: '{key}' must be {what}, not {json.dumps(value)[:40]}")
    for key, value in meta.get("params", {}).items():
        if key in _PARAMS and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise DataError(f"{side}: params '{key}' must be an integer >= 0, not {value!r:.40}")
    return meta
