"""Which paths a code store already holds, found without reading every stored path.

``hashkit add`` skips the images whose path the store holds. Reading every stored path to
find out costs O(store) per add, so each file that holds a store's rows (a single-file store,
or a segment of a segmented one, :mod:`hashkit.segments`) carries, written with its rows:

- ``path_hashes``: uint64 ``m``, sorted: a 64-bit BLAKE2b hash of each non-empty absolute
  stored path, normalised (:func:`path_key`); attributes ``rows`` (the file's rows when it
  was written) and ``relative_paths`` (how many stored paths are relative: see below);
- ``path_hash_rows``: int64 ``m``, the row in that file of each hash.

A lookup binary-searches the new paths' hashes in ``path_hashes`` (mapped from the file, so
it reads only the pages the search visits, at most the 8 bytes per stored path), and
confirms each hit against the stored path itself, so a hash collision never makes ``add``
skip an image.

Files written without these datasets (older hashkit, other programs) get them computed once
from their paths; for a segment, which never changes, they are kept in a cache file beside
it, ``<segment>.path-hashes`` (HDF5, the same two datasets), that records the segment's size
and modification time and is rebuilt when they differ. A stored relative path means a
different file in each working directory, so a file holding any is read whole, as before.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hashkit.atomic import PendingFile
from hashkit.errors import DataError

HASHES, ROWS = "path_hashes", "path_hash_rows"
CACHE_SUFFIX = ".path-hashes"


def path_key(p: str) -> str:
    """The form in which paths are compared: absolute and normalised ("" stays "")."""
    if not p:
        return ""
    if p.startswith("/") and "//" not in p and "/." not in p and not p.endswith("/"):
        return p  # already absolute and normal (what hashkit stores): the common, fast case
    return os.path.normpath(os.path.abspath(p))


def hash_keys(keys: Sequence[str]) -> np.ndarray:
    """uint64 ``len(keys)``: the 64-bit BLAKE2b hash of each key's UTF-8 bytes."""
    out = np.empty(len(keys), dtype=np.uint64)
    for i, key in enumerate(keys):
        digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
        out[i] = int.from_bytes(digest, "little")
    return out


@dataclass
class PathHashes:
    """The path hashes of one file: ``hashes`` uint64 m sorted, ``rows`` int64 m (row in
    the file of each hash), ``relative`` (stored relative paths, not hashed), ``n_rows``."""

    hashes: np.ndarray
    rows: np.ndarray
    relative: int
    n_rows: int


def build_path_hashes(paths: Sequence[str], start_row: int = 0) -> PathHashes:
    """The hashes of ``paths`` (stored in rows ``start_row``...), unsorted: see ``merge``."""
    keys, rows, relative = [], [], 0
    for i, p in enumerate(paths):
        if not p:
            continue
        if not p.startswith("/"):
            relative += 1
            continue
        keys.append(path_key(p))
        rows.append(start_row + i)
    return PathHashes(hash_keys(keys), np.asarray(rows, dtype=np.int64), relative, len(paths))


def merge(parts: Sequence[PathHashes], n_rows: int) -> PathHashes:
    """The parts of one file's paths as one sorted PathHashes."""
    hashes = np.concatenate([p.hashes for p in parts]) if parts else np.zeros(0, np.uint64)
    rows = np.concatenate([p.rows for p in parts]) if parts else np.zeros(0, np.int64)
    order = np.argsort(hashes, kind="stable")
    return PathHashes(hashes[order], rows[order], sum(p.relative for p in parts), n_rows)


def write_path_hashes(f, hashes: PathHashes) -> None:
    """Add ``path_hashes`` and ``path_hash_rows`` to an open, writable HDF5 file."""
    for name in (HASHES, ROWS):
        if name in f:
            del f[name]
    ds = f.create_dataset(HASHES, data=hashes.hashes.astype(np.uint64))
    ds.attrs["rows"] = int(hashes.n_rows)
    ds.attrs["relative_paths"] = int(hashes.relative)
    f.create_dataset(ROWS, data=hashes.rows.astype(np.int64))


def cache_path(segment: str | os.PathLike) -> Path:
    return Path(str(segment) + CACHE_SUFFIX)


def _stamp(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def write_cache(segment: Path, hashes: PathHashes) -> None:
    """Keep the path hashes of a segment that lacks them beside it; a cache that cannot be
    written (read-only folder, full disk) is skipped: it only saves time."""
    import h5py

    pending = PendingFile(cache_path(segment))
    try:
        size, mtime = _stamp(segment)
        with h5py.File(pending.tmp, "w") as f:
            write_path_hashes(f, hashes)
            f.attrs["segment_size"] = size
            f.attrs["segment_mtime_ns"] = mtime
        pending.commit()
    except (OSError, RuntimeError):
        pass
    finally:
        pending.discard()


def _valid(f, n_rows: int) -> bool:
    ds = f.get(HASHES)
    rows = f.get(ROWS)
    return (
        ds is not None
        and rows is not None
        and ds.dtype == np.uint64
        and ds.ndim == 1
        and rows.shape == ds.shape
        and int(ds.attrs.get("rows", -1)) == n_rows
    )


def _hashes(ds, file: Path) -> np.ndarray:
    """The sorted hashes of an open ``path_hashes`` dataset in ``file``: mapped from the file
    where they lie in it as one plain array (what hashkit writes), so that a lookup reads
    only the pages its binary search visits; else read."""
    offset = ds.id.get_offset()
    if offset is None or ds.chunks is not None or ds.dtype != np.dtype("<u8") or not len(ds):
        return ds[...]
    return np.memmap(file, dtype="<u8", mode="r", offset=offset, shape=ds.shape)


@dataclass
class _Source:
    """One file's hashes (mapped from the file, or in memory); the row of each hash and the
    paths themselves are read from the files only for hits."""

    file: Path  # the file holding the rows' paths
    hashes: np.ndarray
    rows_file: Path | None  # the file holding path_hash_rows; None: ``rows`` in memory
    rows: np.ndarray | None = None


class StoredPaths:
    """The normalised paths a code store holds, to test new paths against."""

    def __init__(self, store: str | os.PathLike) -> None:
        """Read the path hashes of ``store``'s files (building and caching those missing)."""
        import h5py

        from hashkit.segments import is_segmented, segment_list

        self.store = Path(store)
        self._sources: list[_Source] = []
        self._plain: set[str] = set()  # keys of files read whole (relative paths)
        self.single_file_hashes: PathHashes | None = None  # built for a single-file store
        try:
            with h5py.File(self.store, "r") as f:
                segmented = is_segmented(f.attrs)
                files = (
                    [self.store.parent / name for name, _ in segment_list(f.attrs, self.store)]
                    if segmented
                    else [self.store]
                )
            for file in files:
                self._load(file, cache=segmented)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise DataError(f"{self.store}: cannot read the code store ({exc})") from None

    def _load(self, file: Path, cache: bool) -> None:
        import h5py

        with h5py.File(file, "r") as f:
            paths = f.get("paths")
            n_rows = 0 if paths is None else len(paths)
            if n_rows == 0:
                return
            if _valid(f, n_rows):
                if int(f[HASHES].attrs.get("relative_paths", 0)):
                    self._read_whole(paths)
                self._sources.append(_Source(file, _hashes(f[HASHES], file), file))
                return
            if cache and self._load_cache(file, n_rows, paths):
                return
            names = paths.asstr(errors="replace")[...].tolist()
        built = merge([build_path_hashes(names)], len(names))
        if built.relative:
            self._plain.update(path_key(p) for p in names if p)
        if cache:
            write_cache(file, built)
        else:
            self.single_file_hashes = built
        self._sources.append(_Source(file, built.hashes, None, built.rows))

    def _load_cache(self, file: Path, n_rows: int, paths) -> bool:
        """Use the cache file of a segment (``paths``: its open dataset) if it is its own."""
        import h5py

        cached = cache_path(file)
        try:
            with h5py.File(cached, "r") as c:
                stamp = (
                    int(c.attrs.get("segment_size", -1)),
                    int(c.attrs.get("segment_mtime_ns", -1)),
                )
                if stamp != _stamp(file) or not _valid(c, n_rows):
                    return False
                if int(c[HASHES].attrs.get("relative_paths", 0)):
                    self._read_whole(paths)
                self._sources.append(_Source(file, _hashes(c[HASHES], cached), cached))
                return True
        except OSError:
            return False

    def _read_whole(self, paths) -> None:
        self._plain.update(path_key(p) for p in paths.asstr(errors="replace")[...] if p)

    def find(self, keys: Sequence[str]) -> set[str]:
        """The ones among ``keys`` (:func:`path_key` forms) that the store holds."""
        import h5py

        keys = list(keys)
        found = {k for k in keys if k in self._plain}
        wanted = [k for k in keys if k and k.startswith("/")]
        if not wanted or not self._sources:
            return found
        query = hash_keys(wanted)
        for src in self._sources:
            lo = np.searchsorted(src.hashes, query, side="left")
            hi = np.searchsorted(src.hashes, query, side="right")
            hit = np.flatnonzero(hi > lo)
            if not len(hit):
                continue
            positions = np.unique(np.concatenate([np.arange(lo[i], hi[i]) for i in hit]))
            if src.rows is not None:
                rows = src.rows[positions]
            else:
                with h5py.File(src.rows_file, "r") as f:
                    rows = f[ROWS][positions]
            rows = np.unique(rows)
            with h5py.File(src.file, "r") as f:
                stored = f["paths"][rows]
            stored_keys = {
                path_key(p.decode("utf-8", "replace") if isinstance(p, bytes) else str(p))
                for p in stored
            }
            found.update(wanted[i] for i in hit if wanted[i] in stored_keys)
        return found
