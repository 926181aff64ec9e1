"""The code store: an HDF5 file of packed binary codes with their ids, paths and labels.

Schema (readable with plain h5py):

- ``codes``  uint8 ``N x ceil(bits/8)``, packed in FAISS's bit order (bit j of a code is bit
  j % 8 of byte j // 8, see :mod:`hashkit.codes`; padding bits zero); chunked,
  gzip-compressed, resizable along N.
- ``ids``    int64 ``N``, distinct and >= 0; the ids a FAISS index built from this store
  returns (optional when reading: 0..N-1).
- ``paths``  UTF-8 strings ``N``; empty for dataset items that have no file (optional).
- ``labels`` optional: int64 ``N`` class indices or uint8 ``N x C`` multi-hot
  (:mod:`hashkit.labels`).
- attributes: ``bits`` (required), ``bit_order`` ("little"; a store without it, or with
  "big", holds the older layout and is converted when read), ``model_fingerprint`` (sha256
  of the model bundle, may be empty), ``hashkit_version``, ``created`` (ISO 8601 UTC),
  ``uuid`` (random hex, names this store in an index's sidecar), ``ids_crc32`` (zlib CRC-32
  of the ids in row order, int64 little-endian: ``hashkit add`` checks an index against it
  instead of reading the ids), and optionally ``modified`` (last append), ``class_names``
  (JSON list), ``model_path``, ``dataset``, ``part``, ``protocol``.
- written by hashkit beside the rows, for ``hashkit add``: ``path_hashes`` and
  ``path_hash_rows``, sorted hashes of the stored paths (:mod:`hashkit.stored_paths`).

A store that grows (``StoreWriter.append_to``) is segmented: its rows live in immutable
segment files and the datasets above are HDF5 virtual datasets over them
(:mod:`hashkit.segments`); readers see the same schema.

Reading checks the layout and the values (dtypes, shapes, bits, bit order, padding bits,
distinct non-negative ids, labels) and raises one DataError naming the file for anything
wrong; writing refuses the same mistakes.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import numbers
import os
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hashkit import __version__
from hashkit.atomic import PendingFile, write_error
from hashkit.codes import (
    BIT_ORDER,
    BIT_ORDERS,
    check_bits,
    check_packed,
    code_bytes,
    convert_bit_order,
)
from hashkit.errors import DataError, HashkitError
from hashkit.labels import check_labels, normalize_labels
from hashkit.segments import IDS_CRC32, check_segments, is_segmented, segment_list, segment_sizes
from hashkit.stored_paths import build_path_hashes, cache_path, merge, write_path_hashes

_CHUNK_ROWS = 65536
_CHECK_ROWS = 1 << 20  # rows per block when describe_store checks a store's values
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


def ids_crc32(ids: np.ndarray, crc: int = 0) -> int:
    """zlib CRC-32 of ids (int64 N) as little-endian bytes, continuing from ``crc``: the
    checksum of a store's ids in row order, extended one appended batch at a time."""
    return zlib.crc32(np.ascontiguousarray(ids, dtype="<i8"), crc)  # no copy of int64 ids


def check_ids(ids, what: str = "ids") -> np.ndarray:
    """Validated ids: int64 ``N``, distinct, each >= 0 (FAISS returns -1 for "no result").

    Integer arrays only (floats are refused, never cast); raises DataError naming ``what``.
    """
    ids = np.asarray(ids)
    if ids.dtype.kind not in "iu" or ids.ndim != 1:
        raise DataError(f"{what} must be a 1-d integer array, got {ids.dtype} {ids.shape}")
    if len(ids) == 0:
        return ids.astype(np.int64)
    if ids.min() < 0:
        raise DataError(f"{what} must be >= 0, found {ids.min()}")
    if ids.max() > np.iinfo(np.int64).max:
        raise DataError(f"{what}: {ids.max()} does not fit in int64")
    ids = ids.astype(np.int64)
    # Stores are usually written in increasing id order: then no sort is needed.
    if len(ids) > 1 and not np.all(ids[1:] > ids[:-1]):
        ordered = np.sort(ids)
        repeated = ordered[1:][ordered[1:] == ordered[:-1]]
        if len(repeated):
            raise DataError(
                f"{what} must be distinct: {len(np.unique(repeated))} id(s) repeat, "
                f"e.g. {repeated[0]}"
            )
    return ids


class StoreWriter:
    """Stream codes into a store, batch by batch; the file appears only on ``close()``.

    ``StoreWriter(path, bits, ...)`` starts a new store; ``StoreWriter.append_to(path)``
    continues an existing one in a new segment. Either way ``path`` changes only when
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
        """``label_width``: None for no labels, 0 for int64 class indices, C >= 2 for uint8
        multi-hot."""
        self.path = Path(path)
        self.bits = check_bits(bits, f"bits of the code store {path}")
        if label_width is not None and (label_width == 1 or label_width < 0):
            raise HashkitError(
                f"label_width must be None, 0 (class indices) or C >= 2, got {label_width}"
            )
        self._f = None
        self._lock = None
        self._old_attrs = None  # set when appending to an existing store
        self._base = 0  # rows of the existing store (not in the file being written)
        self._created = []
        self._hash_parts = []  # path hashes of the rows written (hashkit.stored_paths)
        self._pending = PendingFile(self.path)
        try:
            self._f = _open_in_memory(self._pending.tmp, "w", self.path)
            _create_datasets(self._f, self.bits, label_width)
        except BaseException:
            self._pending.discard()
            raise
        f = self._f
        f.attrs["bits"] = self.bits
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
        self.ids_crc32 = 0

    @classmethod
    def append_to(cls, path: str | os.PathLike) -> StoreWriter:
        """A writer that appends to the existing store at ``path``, which is untouched until
        ``close()``/``commit()``.

        The new rows go to a new segment (:mod:`hashkit.segments`): ``finish()`` writes it,
        then the store's small main file of virtual datasets under a temporary name, so an
        append costs O(new rows). A single-file store becomes the first segment of the
        segmented store as it is (a hard link, no copy); one in the older "big" bit order,
        or with other dtypes, is rewritten into that segment once.

        The store's lock (:class:`hashkit.lock.FileLock`) is held from here to the commit or
        abort, so that no other writer replaces the store meanwhile; a caller that commits
        ``pending`` itself takes that lock before calling this."""
        from hashkit import segments
        from hashkit.lock import FileLock, holds_lock

        path = Path(path)
        self = cls.__new__(cls)
        self.path = path
        self._f = None
        self._pending = None
        self._created = []
        self._hash_parts = []
        self.linked_segment = None
        self._lock = None if holds_lock(path) else FileLock(path, purpose="appending").acquire()
        try:
            attrs = read_store_attrs(path)
            if "codes" not in attrs["datasets"] or "bits" not in attrs:
                raise DataError(f"{path} is not a hashkit code store (no 'codes' or no 'bits')")
            for name in ("ids", "paths"):
                if name not in attrs["datasets"]:
                    raise DataError(f"{path} has no '{name}' dataset, cannot append to it")
            segments.remove_unreferenced_segments(path)
            self.bits = int(attrs["bits"])
            self.uuid = str(attrs.get("uuid", ""))
            self._base = self.count = int(attrs["datasets"]["codes"][0])
            self._old_attrs = _raw_attrs(path)
            self._segmented = segments.is_segmented(attrs)
            crc = attrs.get(IDS_CRC32) if self._segmented else None
            if self._segmented:
                self.next_id = int(attrs["next_id"])
            if crc is None:  # a single-file store, or one written before the checksum
                ids = check_ids(read_store(path, codes=False, paths=False).ids, f"ids in {path}")
                crc = ids_crc32(ids)
                if not self._segmented:
                    self.next_id = int(ids.max()) + 1 if len(ids) else 0
            self.ids_crc32 = int(crc)
            self._old_ids = None
            labels = attrs["datasets"].get("labels")
            label_width = None
            if labels is not None:
                label_width = 0 if len(labels) == 1 or labels[1] == 1 else labels[1]
            self._f = _h5py().File(f"{path}.new-segment", "w", driver="core", backing_store=False)
            _create_datasets(self._f, self.bits, label_width)
            for key in ("bits", "bit_order", "model_fingerprint", "hashkit_version"):
                if key in self._old_attrs:
                    self._f.attrs[key] = self._old_attrs[key]
            self._f.attrs["bit_order"] = BIT_ORDER
            self._f.attrs["created"] = _now()
        except BaseException:
            self.abort()
            raise
        return self

    def append(self, codes: np.ndarray, ids: np.ndarray, paths=None, labels=None) -> None:
        """Append a batch: ``codes`` n x nbytes uint8, ``ids`` n distinct integers >= 0 not
        yet in the store, ``paths`` n str, labels int64 n or uint8 n x C (required when the
        store has labels)."""
        codes = np.ascontiguousarray(check_packed(codes, self.bits))
        n = len(codes)
        ids = check_ids(ids)
        if len(ids) != n:
            raise HashkitError(f"{n} codes but {len(ids)} ids")
        if n and int(ids.min()) < self.next_id:
            present = np.isin(ids, self._f["ids"][: self.count - self._base])
            if self._base:
                if self._old_ids is None:
                    self._old_ids = read_store(self.path, codes=False, paths=False).ids
                present |= np.isin(ids, self._old_ids)
            if present.any():
                raise DataError(
                    f"id {ids[present][0]} is already in {self.path}: ids must be distinct"
                )
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
            labels = self._check_batch_labels(labels, n)
        start, end = self.count - self._base, self.count - self._base + n
        columns = [("codes", codes), ("ids", ids), ("paths", paths)]
        if "labels" in self._f:
            columns.append(("labels", labels))
        for name, values in columns:
            ds = self._f[name]
            ds.resize(end, axis=0)
            ds[start:end] = values
        self._hash_parts.append(build_path_hashes(paths, start))
        self.ids_crc32 = ids_crc32(ids, self.ids_crc32)
        self.count += n
        if n:
            self.next_id = max(self.next_id, int(ids.max()) + 1)

    def _check_batch_labels(self, labels, n: int) -> np.ndarray:
        stored = self._f["labels"].shape[1:]
        # A store of class indices takes one-hot rows as class indices; a multi-hot store
        # keeps them multi-hot.
        labels = normalize_labels(labels) if not stored else check_labels(labels)
        if labels.shape[1:] != stored or len(labels) != n:
            raise HashkitError(
                f"labels of shape {labels.shape} for {n} codes; the store holds labels of "
                f"shape (N, {', '.join(map(str, stored))})"
            )
        return labels

    @property
    def pending(self) -> PendingFile:
        """The temporary file that becomes the store on commit."""
        return self._pending

    def finish(self) -> Path:
        """Write the HDF5 file under its temporary name and close it; returns that name.

        When appending, the new segment is written under its final name first (no main file
        names it yet), then the main file under its temporary name."""
        if self._old_attrs is not None:
            return self._finish_append()
        if self._f:
            try:
                write_path_hashes(self._f, merge(self._hash_parts, self.count))
                self._f.attrs[IDS_CRC32] = self.ids_crc32
                self._f.close()
            except (OSError, RuntimeError) as exc:
                raise write_error(self.path, exc) from None
        return self._pending.tmp

    def _finish_append(self) -> Path:
        from hashkit import segments

        if self._pending is not None:
            return self._pending.tmp
        try:
            write_path_hashes(self._f, merge(self._hash_parts, self.count - self._base))
            self._f.flush()
            image = self._f.id.get_file_image()
            self._f.close()
        except (OSError, RuntimeError) as exc:
            raise write_error(self.path, exc) from None
        self._f = None
        if self._segmented:
            parts = segments.segment_list(self._old_attrs, self.path)
        else:
            parts = [(self._first_segment(), self._base)]
        if self.count > self._base:
            new = segments.new_segment_path(self.path)
            new.parent.mkdir(exist_ok=True)
            self._created.append(new)
            segments.write_file_image(new, image)
            parts.append((os.path.relpath(new, self.path.parent), self.count - self._base))
        attrs = dict(self._old_attrs)
        attrs["bit_order"] = BIT_ORDER
        attrs["modified"] = _now()
        self._pending = PendingFile(self.path)
        segments.build_main(
            self._pending,
            parts,
            attrs,
            bits=self.bits,
            next_id=self.next_id,
            ids_crc32=self.ids_crc32,
        )
        return self._pending.tmp

    def _first_segment(self) -> str:
        """Make the single-file store the first segment: a hard link when it can serve as
        one as it is, else a rewritten copy (older bit order, other dtypes); returns its
        name relative to the store's folder."""
        from hashkit import segments

        first = segments.new_segment_path(self.path, "-0")
        first.parent.mkdir(exist_ok=True)
        self._created.append(first)
        with _h5py().File(self.path, "r") as f:
            as_is = segments.is_canonical_segment(f)
        linked = False
        if as_is:
            try:
                os.link(self.path, first)
                linked = True
                self.linked_segment = first
            except OSError:  # a file system without hard links: copy instead
                pass
        if not linked:
            old = read_store(self.path)
            labels = old.labels
            width = None if labels is None else (0 if labels.ndim == 1 else labels.shape[1])
            f = _h5py().File(f"{first}.in-memory", "w", driver="core", backing_store=False)
            with f:
                _create_datasets(f, self.bits, width)
                for key, value in self._old_attrs.items():
                    f.attrs[key] = value
                f.attrs["bit_order"] = BIT_ORDER
                columns = [("codes", old.codes), ("ids", old.ids), ("paths", old.paths)]
                if labels is not None:
                    columns.append(("labels", labels))
                for name, values in columns:
                    f[name].resize(len(old), axis=0)
                    f[name][:] = values
                write_path_hashes(f, merge([build_path_hashes(old.paths)], len(old)))
                f.flush()
                image = f.id.get_file_image()
            segments.write_file_image(first, image)
        return os.path.relpath(first, self.path.parent)

    def commit(self) -> Path:
        """Move the finished file into place (under the store's lock: never in the middle of
        another writer's append to the same store)."""
        from hashkit.lock import FileLock
        from hashkit.segments import remove_unreferenced_segments

        with FileLock(self.path, purpose="writing a code store"):
            path = self._pending.commit()
            remove_unreferenced_segments(path)  # of a segmented store this one replaced
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
            if self._created and not (self._pending is not None and self._pending.committed):
                for segment in self._created:  # no main file names them
                    for file in (segment, cache_path(segment)):
                        with contextlib.suppress(OSError):
                            file.unlink()
                self._created = []
                from hashkit.segments import remove_empty_segment_dir

                remove_empty_segment_dir(self.path)
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


def _convert_codes_in_place(ds, from_order: str) -> None:
    """Rewrite a codes dataset from ``from_order`` into BIT_ORDER, a chunk at a time."""
    for start in range(0, ds.shape[0], _CHUNK_ROWS):
        block = ds[start : start + _CHUNK_ROWS]
        ds[start : start + len(block)] = convert_bit_order(block, from_order)


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
    labels = None if store.labels is None else check_labels(store.labels)
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


# ---------------------------------------------------------------------------------------
# Reading: the layout is checked before any data is read, the values as they are read.


def _open(path: Path):
    if path.is_dir():
        raise DataError(f"{path} is a directory, not a code store")
    if not path.is_file():
        raise DataError(f"code store not found: {path}")
    try:
        return _h5py().File(path, "r")
    except OSError as exc:
        raise DataError(f"not an HDF5 code store: {path} ({exc})") from None


def _check_layout(f, path: Path) -> tuple[int, str]:
    """The ``bits`` and bit order of an open store, after checking its datasets' kinds,
    dtypes and shapes and its attributes; raises DataError naming ``path``."""
    h5py = _h5py()

    def dataset(name: str):
        ds = f.get(name)
        if ds is not None and not isinstance(ds, h5py.Dataset):
            raise DataError(f"{path}: '{name}' is a group, not a dataset")
        return ds

    codes = dataset("codes")
    if codes is None:
        raise DataError(f"{path} has no 'codes' dataset: not a code store")
    if codes.dtype != np.uint8 or codes.ndim != 2 or codes.shape[1] == 0:
        raise DataError(f"{path}: 'codes' must be uint8 N x bytes, got {codes.dtype} {codes.shape}")
    n, nbytes = codes.shape
    if "bits" not in f.attrs:
        raise DataError(f"{path} has no 'bits' attribute: how many bits does a code hold?")
    bits = _plain(f.attrs["bits"])
    if isinstance(bits, bool) or not isinstance(bits, numbers.Integral):
        raise DataError(f"{path}: attribute bits must be an integer, got {bits!r}")
    if bits < 1 or code_bytes(bits) != nbytes:
        raise DataError(
            f"{path}: attribute bits={bits} does not fit 'codes' of {nbytes} byte(s) per code "
            f"({8 * nbytes - 7}..{8 * nbytes} bits)"
        )
    order = _bit_order(f.attrs, path)
    if is_segmented(f.attrs):
        check_segments(f, path)
    ids, paths, labels = dataset("ids"), dataset("paths"), dataset("labels")
    if ids is not None and (ids.dtype.kind not in "iu" or ids.shape != (n,)):
        raise DataError(f"{path}: 'ids' must be {n} integers, got {ids.dtype} {ids.shape}")
    if paths is not None and (h5py.check_string_dtype(paths.dtype) is None or paths.shape != (n,)):
        raise DataError(f"{path}: 'paths' must be {n} strings, got {paths.dtype} {paths.shape}")
    if labels is not None and (
        labels.dtype.kind not in "biuf" or labels.ndim not in (1, 2) or labels.shape[0] != n
    ):
        raise DataError(
            f"{path}: 'labels' must be {n} class indices or {n} x C multi-hot, "
            f"got {labels.dtype} {labels.shape}"
        )
    return int(bits), order


def _bit_order(attrs, path: Path) -> str:
    """The bit order a store's attributes declare: "big" when absent (the older layout)."""
    order = _plain(attrs.get("bit_order", "big"))
    if order not in BIT_ORDERS:
        raise DataError(f"{path}: attribute bit_order must be one of {BIT_ORDERS}, got {order!r}")
    return order


def _class_names(attrs: dict, path: Path) -> list[str] | None:
    if "class_names" not in attrs:
        return None
    try:
        names = json.loads(attrs["class_names"])
    except (TypeError, ValueError):
        names = None
    if not isinstance(names, list) or not all(isinstance(x, str) for x in names):
        raise DataError(f"{path}: attribute class_names must be a JSON list of strings")
    return names


def read_store_attrs(path: str | os.PathLike) -> dict:
    """The attributes and dataset shapes of a store, without reading the codes; the layout
    is checked as :func:`read_store` checks it."""
    path = Path(path)
    with _open(path) as f:
        try:
            _check_layout(f, path)
            attrs = {k: _plain(v) for k, v in f.attrs.items()}
            attrs["datasets"] = {name: tuple(f[name].shape) for name in f.keys()}
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise DataError(f"{path}: cannot read the code store ({exc})") from None
    return attrs


def _raw_attrs(path: Path) -> dict:
    """A store's attributes as h5py gives them (to carry them into a rewritten file)."""
    with _open(path) as f:
        return dict(f.attrs.items())


def _plain(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
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
    build only codes and ids. ``rows`` reads a slice of the rows. Codes come back in
    FAISS's bit order whatever order the file holds; ``N x 1`` labels as N class indices.
    """
    path = Path(path)
    rows = rows if rows is not None else slice(None)
    attempts = 3
    while True:
        try:
            return _read_store(path, require_labels, codes, paths, rows)
        except DataError:
            # A compaction may have removed the segments of the main file read: read again.
            attempts -= 1
            if not attempts or not _segments_changed(path):
                raise


def _segments_changed(path: Path) -> bool:
    try:
        with _open(path) as f:
            if is_segmented(f.attrs):
                check_segments(f, path)
    except DataError:
        return False
    return True


def _read_store(path: Path, require_labels: bool, codes: bool, paths: bool, rows: slice):
    with _open(path) as f:
        try:
            bits, order = _check_layout(f, path)
            ds = f["codes"]
            nbytes = ds.shape[1]
            start, stop, _ = rows.indices(ds.shape[0])
            n = max(0, stop - start)
            xb = (
                np.asarray(ds[start:stop], dtype=np.uint8)
                if codes
                else np.zeros((0, nbytes), dtype=np.uint8)
            )
            ids = (
                f["ids"][start:stop] if "ids" in f else np.arange(start, start + n, dtype=np.int64)
            )
            if not paths:
                names = []
            elif "paths" in f:
                names = f["paths"].asstr(errors="replace")[start:stop].tolist()
            else:
                names = [""] * n
            labels = f["labels"][start:stop] if "labels" in f else None
            attrs = {k: _plain(v) for k, v in f.attrs.items()}
            if is_segmented(f.attrs):
                check_segments(f, path)  # still there: no fill values were read
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise DataError(f"{path}: cannot read the code store ({exc})") from None
    ids = check_ids(ids, f"ids in {path}")
    if codes:
        try:
            xb = check_packed(convert_bit_order(xb, order), bits, f"codes in {path}")
        except HashkitError as exc:
            raise DataError(str(exc)) from None
    if labels is not None:
        labels = check_labels(labels, f"labels in {path}")
    elif require_labels:
        raise DataError(f"{path} has no 'labels' dataset: cannot compute retrieval metrics")
    return CodeStore(
        codes=xb,
        ids=ids,
        bits=bits,
        paths=names,
        labels=labels,
        fingerprint=str(attrs.get("model_fingerprint", "")),
        class_names=_class_names(attrs, path),
        attrs=attrs,
    )


def store_count(path: str | os.PathLike) -> int:
    """Number of codes in a store, without reading them."""
    return int(read_store_attrs(path)["datasets"]["codes"][0])


def read_store_paths(path: str | os.PathLike, rows) -> tuple[list[str], dict]:
    """The paths of some rows of a store (int ``n``, any order, repeats allowed) and the
    store's attributes, without reading the other rows: a search needs the paths of its hits
    only, and a store may hold millions. ``""`` for a store without paths; DataError for a
    row outside the store."""
    path = Path(path)
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    wanted, where = np.unique(rows, return_inverse=True)
    with _open(path) as f:
        try:
            _check_layout(f, path)
            n = f["codes"].shape[0]
            if len(wanted) and (wanted[0] < 0 or wanted[-1] >= n):
                raise DataError(f"{path}: rows {wanted[0]}..{wanted[-1]} are not all in 0..{n - 1}")
            attrs = {k: _plain(v) for k, v in f.attrs.items()}
            if "paths" not in f or not len(wanted):
                return [""] * len(rows), attrs
            ds = f["paths"]
            lo, hi = int(wanted[0]), int(wanted[-1]) + 1
            # One contiguous read when the rows are dense in their span (h5py's point
            # selection costs per row), a selection of just those rows when they are sparse.
            if hi - lo <= 8 * len(wanted):
                raw = ds[lo:hi][wanted - lo]
            else:
                raw = ds[wanted]
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise DataError(f"{path}: cannot read the code store ({exc})") from None
    names = [_plain(p) for p in raw]
    return [names[i] for i in where], attrs


def rows_with_code(path: str | os.PathLike, code: np.ndarray) -> np.ndarray:
    """The rows (int64, increasing) of a store whose code equals ``code`` (packed uint8,
    FAISS's bit order), scanning the codes a chunk at a time: no paths are read."""
    path = Path(path)
    code = np.asarray(code, dtype=np.uint8)
    found = []
    with _open(path) as f:
        try:
            _, order = _check_layout(f, path)
            ds = f["codes"]
            target = convert_bit_order(code[None], BIT_ORDER, order)[0]
            for start in range(0, ds.shape[0], _CHUNK_ROWS):
                block = ds[start : start + _CHUNK_ROWS]
                found.append(start + np.flatnonzero((block == target).all(axis=1)))
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise DataError(f"{path}: cannot read the code store ({exc})") from None
    return np.concatenate(found) if found else np.zeros(0, dtype=np.int64)


def check_store(path: str | os.PathLike) -> dict:
    """Check a whole store's layout and values as :func:`read_store` checks them (ids
    distinct and >= 0, padding bits clear, labels, class names), a block of rows at a time so
    that a large store needs little memory, without reading its paths; returns its
    attributes as :func:`read_store_attrs` does. A command whose output streams can call it
    first, so that a bad row is found before anything is written."""
    path = Path(path)
    attrs = read_store_attrs(path)
    _class_names(attrs, path)
    ids = [np.zeros(0, dtype=np.int64)]
    for start in range(0, attrs["datasets"]["codes"][0], _CHECK_ROWS):
        ids.append(read_store(path, paths=False, rows=slice(start, start + _CHECK_ROWS)).ids)
    check_ids(np.concatenate(ids), f"ids in {path}")  # distinct across the blocks too
    return attrs


def describe_store(path: str | os.PathLike) -> dict:
    """What ``hashkit info`` shows about a code store: bits, count, labels, model, file size;
    the store is checked whole first (:func:`check_store`)."""
    path = Path(path)
    attrs = check_store(path)
    shapes = attrs.pop("datasets")
    count = int(shapes["codes"][0])
    labels = shapes.get("labels")
    return {
        "kind": "code store",
        "path": str(path),
        "bits": int(attrs["bits"]),
        "count": count,
        "bytes_per_code": int(shapes["codes"][1]),
        "bit_order": _bit_order(attrs, path),
        "labels": (
            None
            if labels is None
            else (
                "int64 N"
                if len(labels) == 1 or labels[1] == 1
                else f"uint8 N x {labels[1]} multi-hot"
            )
        ),
        "model_fingerprint": str(attrs.get("model_fingerprint", "")),
        "file_size": path.stat().st_size
        + (segment_sizes(path, attrs) if is_segmented(attrs) else 0),
        "segments": len(segment_list(attrs, path)) if is_segmented(attrs) else 1,
        "attributes": {
            k: v for k, v in attrs.items() if k not in ("bits", "bit_order", "model_fingerprint")
        },
    }
