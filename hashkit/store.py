"""The code store: an HDF5 file of packed binary codes with their ids, paths and labels.

Schema (readable with plain h5py):

- ``codes``  uint8 ``N x ceil(bits/8)``, packed as ``numpy.packbits(..., axis=1)`` (bit order
  "big", padding bits zero); chunked, gzip-compressed, resizable along N.
- ``ids``    int64 ``N``; the ids a FAISS index built from this store returns.
- ``paths``  UTF-8 strings ``N``; empty for dataset items that have no file.
- ``labels`` optional: int64 ``N`` (single label) or uint8 ``N x C`` (multi-hot).
- attributes: ``bits``, ``bit_order`` ("big"), ``model_fingerprint`` (sha256 of the model
  bundle, may be empty), ``hashkit_version``, ``created`` (ISO 8601 UTC), and optionally
  ``class_names`` (JSON list).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hashkit import __version__
from hashkit.atomic import atomic_path
from hashkit.codes import BIT_ORDER, check_packed, code_bytes
from hashkit.errors import DataError, HashkitError

_CHUNK_ROWS = 65536


@dataclass
class CodeStore:
    """A code store held in memory: ``codes`` N x nbytes uint8, ``ids`` int64 N, ``paths`` list
    of N str, ``labels`` int64 N or uint8 N x C or None, and the file's attributes."""

    codes: np.ndarray
    ids: np.ndarray
    bits: int
    paths: list[str] = field(default_factory=list)
    labels: np.ndarray | None = None
    fingerprint: str = ""
    class_names: list[str] | None = None
    attrs: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.codes)


def _h5py():
    import h5py

    return h5py


class StoreWriter:
    """Stream codes into a new store, batch by batch; the file appears only on ``close()``.

    Use as a context manager: if the block raises, the temporary file is removed and any
    previous file at ``path`` is left as it was.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        bits: int,
        *,
        fingerprint: str = "",
        label_width: int | None = None,
        class_names: list[str] | None = None,
        extra_attrs: dict | None = None,
    ) -> None:
        """``label_width``: None for no labels, 0 for int64 single labels, C for uint8 multi-hot."""
        self.path = Path(path)
        self.bits = bits
        self._ctx = atomic_path(self.path)
        self._tmp = self._ctx.__enter__()
        h5py = _h5py()
        self._f = h5py.File(self._tmp, "w")
        nbytes = code_bytes(bits)
        f = self._f
        f.create_dataset(
            "codes",
            shape=(0, nbytes),
            maxshape=(None, nbytes),
            dtype=np.uint8,
            chunks=(_CHUNK_ROWS, nbytes),
            compression="gzip",
            compression_opts=4,
        )
        f.create_dataset(
            "ids",
            shape=(0,),
            maxshape=(None,),
            dtype=np.int64,
            chunks=(_CHUNK_ROWS,),
            compression="gzip",
        )
        f.create_dataset(
            "paths",
            shape=(0,),
            maxshape=(None,),
            dtype=h5py.string_dtype("utf-8"),
            chunks=(4096,),
            compression="gzip",
        )
        if label_width is not None:
            if label_width == 0:
                f.create_dataset(
                    "labels",
                    shape=(0,),
                    maxshape=(None,),
                    dtype=np.int64,
                    chunks=(_CHUNK_ROWS,),
                    compression="gzip",
                )
            else:
                f.create_dataset(
                    "labels",
                    shape=(0, label_width),
                    maxshape=(None, label_width),
                    dtype=np.uint8,
                    chunks=(4096, label_width),
                    compression="gzip",
                )
        f.attrs["bits"] = bits
        f.attrs["bit_order"] = BIT_ORDER
        f.attrs["model_fingerprint"] = fingerprint
        f.attrs["hashkit_version"] = __version__
        f.attrs["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        if class_names is not None:
            f.attrs["class_names"] = json.dumps(list(class_names))
        for key, value in (extra_attrs or {}).items():
            f.attrs[key] = value
        self.count = 0

    def append(self, codes: np.ndarray, ids: np.ndarray, paths=None, labels=None) -> None:
        """Append a batch: ``codes`` n x nbytes uint8, ``ids`` int64 n, ``paths`` n str, labels."""
        codes = np.ascontiguousarray(codes, dtype=np.uint8)
        check_packed(codes, self.bits)
        n = len(codes)
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) != n:
            raise HashkitError(f"{n} codes but {len(ids)} ids")
        paths = [""] * n if paths is None else [str(p) for p in paths]
        start, end = self.count, self.count + n
        for name, values in (("codes", codes), ("ids", ids), ("paths", paths)):
            ds = self._f[name]
            ds.resize(end, axis=0)
            ds[start:end] = values
        if "labels" in self._f:
            if labels is None:
                raise HashkitError("this store has labels: every batch needs them")
            ds = self._f["labels"]
            ds.resize(end, axis=0)
            ds[start:end] = np.asarray(labels, dtype=ds.dtype)
        self.count = end

    def close(self) -> Path:
        """Finish the file and move it into place."""
        self._f.close()
        self._ctx.__exit__(None, None, None)
        return self.path

    def abort(self, exc_info=(None, None, None)) -> None:
        try:
            self._f.close()
        finally:
            try:
                self._ctx.__exit__(*exc_info)
            except BaseException:
                pass

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort((exc_type, exc, tb))


def write_store(path: str | os.PathLike, store: CodeStore) -> Path:
    """Write a whole in-memory store atomically."""
    labels = store.labels
    label_width = None if labels is None else (0 if labels.ndim == 1 else labels.shape[1])
    with StoreWriter(
        path,
        store.bits,
        fingerprint=store.fingerprint,
        label_width=label_width,
        class_names=store.class_names,
    ) as writer:
        writer.append(store.codes, store.ids, store.paths or None, labels)
    return Path(path)


def read_store_attrs(path: str | os.PathLike) -> dict:
    """The attributes and dataset shapes of a store, without reading the codes."""
    h5py = _h5py()
    path = Path(path)
    if not path.is_file():
        raise DataError(f"code store not found: {path}")
    try:
        with h5py.File(path, "r") as f:
            attrs = {k: _plain(v) for k, v in f.attrs.items()}
            attrs["datasets"] = {name: tuple(f[name].shape) for name in f.keys()}
    except OSError as exc:
        raise DataError(f"not an HDF5 code store: {path} ({exc})") from None
    return attrs


def _plain(value):
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_store(path: str | os.PathLike, *, require_labels: bool = False) -> CodeStore:
    """Read a code store written by hashkit or by any program following the schema above."""
    h5py = _h5py()
    path = Path(path)
    if not path.is_file():
        raise DataError(f"code store not found: {path}")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"not an HDF5 code store: {path} ({exc})") from None
    with f:
        if "codes" not in f:
            raise DataError(f"{path} has no 'codes' dataset: not a code store")
        codes = np.asarray(f["codes"][...], dtype=np.uint8)
        if codes.ndim != 2:
            raise DataError(f"{path}: 'codes' must be 2-d N x bytes, got shape {codes.shape}")
        bits = int(f.attrs["bits"]) if "bits" in f.attrs else 8 * codes.shape[1]
        if code_bytes(bits) != codes.shape[1]:
            raise DataError(
                f"{path}: attribute bits={bits} needs {code_bytes(bits)} bytes per code, "
                f"'codes' has {codes.shape[1]}"
            )
        n = len(codes)
        ids = np.asarray(f["ids"][...], dtype=np.int64) if "ids" in f else np.arange(n)
        paths = [_plain(p) for p in f["paths"][...]] if "paths" in f else [""] * n
        labels = np.asarray(f["labels"][...]) if "labels" in f else None
        attrs = {k: _plain(v) for k, v in f.attrs.items()}
    if len(ids) != n or len(paths) != n:
        raise DataError(f"{path}: {n} codes but {len(ids)} ids and {len(paths)} paths")
    if labels is not None:
        if len(labels) != n or labels.ndim not in (1, 2):
            raise DataError(f"{path}: labels of shape {labels.shape} do not match {n} codes")
        labels = labels.astype(np.int64) if labels.ndim == 1 else labels.astype(np.uint8)
    elif require_labels:
        raise DataError(f"{path} has no 'labels' dataset: cannot compute retrieval metrics")
    class_names = json.loads(attrs["class_names"]) if "class_names" in attrs else None
    return CodeStore(
        codes=codes,
        ids=ids,
        bits=bits,
        paths=paths,
        labels=labels,
        fingerprint=str(attrs.get("model_fingerprint", "")),
        class_names=class_names,
        attrs=attrs,
    )
