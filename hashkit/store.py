"""The code store: an HDF5 file of packed binary codes with their ids, paths and labels.

Schema (readable with plain h5py):

- ``codes``  uint8 ``N x ceil(bits/8)``, packed as ``numpy.packbits(..., axis=1)`` (bit order
  "big", padding bits zero); chunked, gzip-compressed, resizable along N.
- ``ids``    int64 ``N``; the ids a FAISS index built from this store returns.
- ``paths``  UTF-8 strings ``N``; empty for dataset items that have no file.
- ``labels`` optional: int64 ``N`` (single label) or uint8 ``N x C`` (multi-hot).
- attributes: ``bits``, ``bit_order`` ("big"), ``model_fingerprint`` (sha256 of the model
  bundle, may be empty), ``hashkit_version``, ``created`` (ISO 8601 UTC), ``uuid`` (random
  hex, names this store in an index's sidecar), and optionally ``modified`` (last append),
  ``class_names`` (JSON list), ``model_path``, ``dataset``, ``part``, ``protocol``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hashkit import __version__
from hashkit.atomic import PendingFile, write_error
from hashkit.codes import BIT_ORDER, check_packed, code_bytes
from hashkit.errors import DataError, HashkitError

_CHUNK_ROWS = 65536
# A store is built in memory (HDF5's "core" driver) and written to its temporary file in one
# go when closed: HDF5 crashes the process when a write fails half-way through (disk full),
# while the core driver reports the failure as an error. Memory grows in steps of this size.
_CORE_BLOCK = 1 << 20


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
    """Stream codes into a store, batch by batch; the file appears only on ``close()``.

    ``StoreWriter(path, bits, ...)`` starts a new store; ``StoreWriter.append_to(path)``
    continues an existing one from a temporary copy. Either way ``path`` changes only when
    the writer is closed: use it as a context manager, and if the block raises, the temporary
    file is removed and any previous file at ``path`` is left as it was. ``finish()`` then
    ``commit()`` split closing in two; callers that replace several files together commit
    ``pending`` in a :class:`hashkit.atomic.Commit` instead. The store is held in memory
    until ``finish()`` writes it (a failed write is one HashkitError, never a crash);
    ``commit()`` takes the store's lock (:mod:`hashkit.lock`) for its rename.
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
        if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or bits < 1:
            raise HashkitError(f"{path}: a code store needs codes of at least 1 bit, not {bits}")
        self.bits = int(bits)
        self._f = None
        self._lock = None
        self._pending = PendingFile(self.path)
        try:
            self._f = _open_in_memory(self._pending.tmp, "w", self.path)
            _create_datasets(self._f, bits, label_width)
        except BaseException:
            self._pending.discard()
            raise
        f = self._f
        f.attrs["bits"] = bits
        f.attrs["bit_order"] = BIT_ORDER
        f.attrs["model_fingerprint"] = fingerprint
        f.attrs["hashkit_version"] = __version__
        f.attrs["created"] = _now()
        self.uuid = uuid.uuid4().hex
        f.attrs["uuid"] = self.uuid
        if class_names is not None:
            f.attrs["class_names"] = json.dumps(list(class_names))
        for key, value in (extra_attrs or {}).items():
            f.attrs[key] = value
        self.count = 0
        self.next_id = 0

    @classmethod
    def append_to(cls, path: str | os.PathLike) -> StoreWriter:
        """A writer that appends to the existing store at ``path`` (through a temporary copy,
        so ``path`` is untouched until ``close()``/``commit()``).

        The store's lock (:class:`hashkit.lock.FileLock`) is held from here to the commit or
        abort, so that no other writer replaces the store meanwhile; a caller that commits
        ``pending`` itself takes that lock before calling this."""
        from hashkit.lock import FileLock, holds_lock

        path = Path(path)
        self = cls.__new__(cls)
        self.path = path
        self._f = None
        self._pending = None
        self._lock = None if holds_lock(path) else FileLock(path, purpose="appending").acquire()
        try:
            attrs = read_store_attrs(path)
            if "codes" not in attrs["datasets"] or "bits" not in attrs:
                raise DataError(f"{path} is not a hashkit code store (no 'codes' or no 'bits')")
            self.bits = int(attrs["bits"])
            self.uuid = str(attrs.get("uuid", ""))
            self._pending = PendingFile(path, copy_from_target=True)
            self._f = _open_in_memory(self._pending.tmp, "a", path)
            for name in ("ids", "paths"):
                if name not in self._f or self._f[name].maxshape[0] is not None:
                    raise DataError(f"{path}: '{name}' is missing or not resizable")
            self.count = int(self._f["codes"].shape[0])
            ids = self._f["ids"][...]
            self.next_id = int(ids.max()) + 1 if len(ids) else 0
            self._f.attrs["modified"] = _now()
        except BaseException:
            self.abort()
            raise
        return self

    def append(self, codes: np.ndarray, ids: np.ndarray, paths=None, labels=None) -> None:
        """Append a batch: ``codes`` n x nbytes uint8, ``ids`` int64 n, ``paths`` n str, labels
        int64 n or uint8 n x C (required when the store has labels)."""
        codes = np.ascontiguousarray(codes, dtype=np.uint8)
        check_packed(codes, self.bits)
        n = len(codes)
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) != n:
            raise HashkitError(f"{n} codes but {len(ids)} ids")
        paths = [""] * n if paths is None else [str(p) for p in paths]
        if len(paths) != n:
            raise HashkitError(f"{n} codes but {len(paths)} paths")
        for p in paths:
            if not p.isascii():
                try:
                    p.encode("utf-8")
                except UnicodeEncodeError:
                    raise DataError(
                        f"cannot store the file name {os.fsencode(p)!r} in {self.path}: paths "
                        "are stored as UTF-8 and this one is not; rename the file"
                    ) from None
        if "labels" in self._f:
            if labels is None:
                raise HashkitError(f"{self.path} has labels: every batch appended needs them")
            labels = np.asarray(labels, dtype=self._f["labels"].dtype)
            if labels.shape[1:] != self._f["labels"].shape[1:] or len(labels) != n:
                raise HashkitError(
                    f"labels of shape {labels.shape} for {n} codes; the store holds labels of "
                    f"shape (N, {', '.join(map(str, self._f['labels'].shape[1:]))})"
                )
        start, end = self.count, self.count + n
        columns = [("codes", codes), ("ids", ids), ("paths", paths)]
        if "labels" in self._f:
            columns.append(("labels", labels))
        for name, values in columns:
            ds = self._f[name]
            ds.resize(end, axis=0)
            ds[start:end] = values
        self.count = end
        if n:
            self.next_id = max(self.next_id, int(ids.max()) + 1)

    @property
    def pending(self) -> PendingFile:
        """The temporary file that becomes the store on commit."""
        return self._pending

    def finish(self) -> Path:
        """Write the HDF5 file under its temporary name and close it; returns that name."""
        if self._f:
            try:
                self._f.close()
            except (OSError, RuntimeError) as exc:
                raise write_error(self.path, exc) from None
        return self._pending.tmp

    def commit(self) -> Path:
        """Move the finished file into place (under the store's lock: never in the middle of
        another writer's append to the same store)."""
        from hashkit.lock import FileLock

        with FileLock(self.path, purpose="writing a code store"):
            path = self._pending.commit()
        self._release()
        return path

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def close(self) -> Path:
        """Finish the file and move it into place; if either fails, drop the temporary file."""
        try:
            self.finish()
            return self.commit()
        except BaseException:
            self.abort()
            raise

    def abort(self, exc_info=None) -> None:
        """Drop the temporary file; the file at ``path`` stays as it was."""
        try:
            if self._f:
                self._f.close()
        except (OSError, RuntimeError):
            pass  # the write failed and was reported; the temporary file goes anyway
        finally:
            if self._pending is not None:
                self._pending.discard()
            self._release()

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _open_in_memory(path: Path, mode: str, target: Path):
    """An HDF5 file kept in memory and written to ``path`` (the temporary file of
    ``target``) when closed."""
    try:
        return _h5py().File(path, mode, driver="core", backing_store=True, block_size=_CORE_BLOCK)
    except (OSError, RuntimeError) as exc:
        raise write_error(target, exc) from None


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _create_datasets(f, bits: int, label_width: int | None) -> None:
    h5py = _h5py()
    nbytes = code_bytes(bits)
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
    if label_width == 0:
        f.create_dataset(
            "labels",
            shape=(0,),
            maxshape=(None,),
            dtype=np.int64,
            chunks=(_CHUNK_ROWS,),
            compression="gzip",
        )
    elif label_width is not None:
        f.create_dataset(
            "labels",
            shape=(0, label_width),
            maxshape=(None, label_width),
            dtype=np.uint8,
            chunks=(4096, label_width),
            compression="gzip",
        )


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


def read_store(
    path: str | os.PathLike,
    *,
    require_labels: bool = False,
    codes: bool = True,
    paths: bool = True,
    rows: slice | None = None,
) -> CodeStore:
    """Read a code store written by hashkit or by any program following the schema above.

    ``codes=False`` or ``paths=False`` skip those datasets (the store's ``codes`` is then a
    ``0 x nbytes`` array, ``paths`` empty): a searcher needs only ids and paths, an index
    build only codes and ids. ``rows`` reads a slice of the rows.
    """
    h5py = _h5py()
    path = Path(path)
    if not path.is_file():
        raise DataError(f"code store not found: {path}")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"not an HDF5 code store: {path} ({exc})") from None
    rows = rows if rows is not None else slice(None)
    with f:
        if "codes" not in f:
            raise DataError(f"{path} has no 'codes' dataset: not a code store")
        ds = f["codes"]
        if ds.ndim != 2:
            raise DataError(f"{path}: 'codes' must be 2-d N x bytes, got shape {ds.shape}")
        nbytes = ds.shape[1]
        bits = int(f.attrs["bits"]) if "bits" in f.attrs else 8 * nbytes
        if code_bytes(bits) != nbytes:
            raise DataError(
                f"{path}: attribute bits={bits} needs {code_bytes(bits)} bytes per code, "
                f"'codes' has {nbytes}"
            )
        start, stop, _ = rows.indices(ds.shape[0])
        n = max(0, stop - start)
        xb = (
            np.asarray(ds[start:stop], dtype=np.uint8)
            if codes
            else np.zeros((0, nbytes), dtype=np.uint8)
        )
        ids = (
            np.asarray(f["ids"][start:stop], dtype=np.int64)
            if "ids" in f
            else np.arange(start, start + n, dtype=np.int64)
        )
        if not paths:
            names = []
        elif "paths" in f:
            names = [_plain(p) for p in f["paths"][start:stop]]
        else:
            names = [""] * n
        labels = np.asarray(f["labels"][start:stop]) if "labels" in f else None
        attrs = {k: _plain(v) for k, v in f.attrs.items()}
    if len(ids) != n or (paths and len(names) != n):
        raise DataError(f"{path}: {n} codes but {len(ids)} ids and {len(names)} paths")
    if labels is not None:
        if len(labels) != n or labels.ndim not in (1, 2):
            raise DataError(f"{path}: labels of shape {labels.shape} do not match {n} codes")
        labels = labels.astype(np.int64) if labels.ndim == 1 else labels.astype(np.uint8)
    elif require_labels:
        raise DataError(f"{path} has no 'labels' dataset: cannot compute retrieval metrics")
    class_names = json.loads(attrs["class_names"]) if "class_names" in attrs else None
    return CodeStore(
        codes=xb,
        ids=ids,
        bits=bits,
        paths=names,
        labels=labels,
        fingerprint=str(attrs.get("model_fingerprint", "")),
        class_names=class_names,
        attrs=attrs,
    )


def store_count(path: str | os.PathLike) -> int:
    """Number of codes in a store, without reading them."""
    return int(read_store_attrs(path)["datasets"].get("codes", (0,))[0])


def describe_store(path: str | os.PathLike) -> dict:
    """What ``hashkit info`` shows about a code store: bits, count, labels, model, file size."""
    path = Path(path)
    attrs = read_store_attrs(path)
    shapes = attrs.pop("datasets")
    if "codes" not in shapes:
        raise DataError(f"{path} has no 'codes' dataset: not a code store")
    labels = shapes.get("labels")
    return {
        "kind": "code store",
        "path": str(path),
        "bits": int(attrs.get("bits", 8 * shapes["codes"][1])),
        "count": int(shapes["codes"][0]),
        "bytes_per_code": int(shapes["codes"][1]),
        "labels": (
            None
            if labels is None
            else ("int64 N" if len(labels) == 1 else f"uint8 N x {labels[1]} multi-hot")
        ),
        "model_fingerprint": str(attrs.get("model_fingerprint", "")),
        "file_size": path.stat().st_size,
        "attributes": {k: v for k, v in attrs.items() if k not in ("bits", "model_fingerprint")},
    }
