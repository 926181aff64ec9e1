"""The segmented layout of a code store: immutable segment files and a small main file.

A store that grows (``hashkit add``, a sharded ``encode``) keeps its rows in segment files
``<store>.d/seg-<hex>.h5``, each a complete code store that is written once under a new name
and never changed. The store itself, ``<store>``, is a small HDF5 file whose ``codes``,
``ids``, ``paths`` and ``labels`` are HDF5 virtual datasets over the segments, in order:
plain h5py reads them as ordinary datasets. Its attributes are the store's, plus
``layout = "segmented"``, ``segments`` (JSON list of ``[file, rows]``, the file relative to
the store's folder) and ``next_id`` (one more than the largest id).

Growing a store writes a new segment and then replaces the main file atomically (alone, or
in the same journalled commit as an index and its sidecar), so it costs O(new rows) plus
O(number of segments). A segment that no main file names (left by an interrupted writer) is
removed by the next writer of the store, under the store's lock. :func:`compact_store`
merges the segments back into one single-file store.

Virtual dataset sources are stored relative to the main file's folder; HDF5 resolves them
from the main file's folder, so a folder holding a store can be moved or copied whole.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hashkit.atomic import PendingFile, pid_alive, temp_owner, write_error
from hashkit.errors import DataError
from hashkit.stored_paths import CACHE_SUFFIX

LAYOUT = "segmented"
COLUMNS = ("codes", "ids", "paths", "labels")
# Attributes that describe the segmented layout, not the store: dropped by compaction.
LAYOUT_ATTRS = ("layout", "segments", "next_id")
# The zlib CRC-32 of the store's ids in row order (int64 little-endian): lets an index be
# checked against its store without reading the ids (hashkit.index.compat).
IDS_CRC32 = "ids_crc32"


def segment_dir(store: str | os.PathLike) -> Path:
    """The folder of a store's segments: ``<store>.d``."""
    return Path(str(store) + ".d")


def new_segment_path(store: str | os.PathLike, suffix: str = "") -> Path:
    """A fresh segment name in the store's segment folder (random, so never reused)."""
    return segment_dir(store) / f"seg-{secrets.token_hex(6)}{suffix}.h5"


def is_segmented(attrs) -> bool:
    value = attrs.get("layout", "")
    return (value.decode() if isinstance(value, bytes) else str(value)) == LAYOUT


def segment_list(attrs, path: Path) -> list[tuple[str, int]]:
    """``[(file relative to the store's folder, rows)]`` of a segmented store's attributes."""
    raw = attrs.get("segments", "")
    try:
        items = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        segments = [(str(name), int(rows)) for name, rows in items]
    except (TypeError, ValueError):
        raise DataError(f"{path}: attribute segments must be a JSON list of [file, rows]") from None
    for name, rows in segments:
        if rows < 0 or Path(name).is_absolute() or ".." in Path(name).parts:
            raise DataError(f"{path}: segment {name!r} ({rows} rows) is not a segment of it")
    return segments


def check_segments(f, path: Path) -> list[Path]:
    """The segment files of an open segmented store, after checking that they exist and that
    their rows add up (HDF5 fills a missing source with zeros instead of failing)."""
    segments = segment_list(f.attrs, path)
    files = [path.parent / name for name, _ in segments]
    for file in files:
        if not file.is_file():
            raise DataError(f"{path}: its segment {file} is missing; the store is incomplete")
    codes = f.get("codes")
    total = sum(rows for _, rows in segments)
    if codes is not None and codes.shape[0] != total:
        raise DataError(f"{path}: 'codes' has {codes.shape[0]} rows, its segments {total}")
    return files


def write_file_image(target: Path, image: bytes) -> None:
    """Write an HDF5 file image (bytes) to ``target`` atomically (temp file + rename)."""
    pending = PendingFile(target)
    try:
        try:
            with open(pending.tmp, "wb") as out:
                out.write(image)
        except OSError as exc:
            raise write_error(target, exc) from None
        pending.commit()
    finally:
        pending.discard()


def build_main(
    pending: PendingFile,
    segments: Sequence[tuple[str, int]],
    attrs: dict,
    *,
    bits: int,
    next_id: int,
    ids_crc32: int | None = None,
) -> None:
    """Write the main file of a segmented store to ``pending.tmp``: virtual datasets over
    ``segments`` (``[(file relative to the store's folder, rows)]``, at least one) and
    ``attrs`` (the store's attributes; the layout ones are set here, ``next_id`` one more
    than the largest id, ``ids_crc32`` the checksum of all the segments' ids, or None when
    unknown)."""
    import h5py

    store = pending.target
    template = store.parent / segments[-1][0]
    try:
        with h5py.File(template, "r") as seg:
            columns = {
                name: (seg[name].dtype, seg[name].shape[1:]) for name in COLUMNS if name in seg
            }
    except OSError as exc:
        raise DataError(f"{store}: cannot read its segment {template} ({exc})") from None
    total = sum(rows for _, rows in segments)
    try:
        f = h5py.File(pending.tmp, "w", driver="core", backing_store=False)
        with f:
            for name, (dtype, rest) in columns.items():
                layout = h5py.VirtualLayout(shape=(total, *rest), dtype=dtype)
                start = 0
                for file, rows in segments:
                    if rows:
                        layout[start : start + rows] = h5py.VirtualSource(
                            file, name, shape=(rows, *rest)
                        )
                    start += rows
                f.create_virtual_dataset(name, layout)
            for key, value in attrs.items():
                if key not in LAYOUT_ATTRS and key != IDS_CRC32:
                    f.attrs[key] = value
            if ids_crc32 is not None:
                f.attrs[IDS_CRC32] = ids_crc32
            f.attrs["layout"] = LAYOUT
            f.attrs["segments"] = json.dumps([[file, rows] for file, rows in segments])
            f.attrs["bits"] = bits
            f.attrs["next_id"] = next_id
            f.flush()
            image = f.id.get_file_image()
        with open(pending.tmp, "wb") as out:
            out.write(image)
    except (OSError, RuntimeError) as exc:
        raise write_error(store, exc) from None


def referenced_segments(store: Path) -> set[Path]:
    """The segment files the current main file names (none for a single-file store)."""
    import h5py

    try:
        with h5py.File(store, "r") as f:
            if not is_segmented(f.attrs):
                return set()
            return {store.parent / name for name, _ in segment_list(f.attrs, store)}
    except (OSError, DataError):
        return set()


def remove_unreferenced_segments(store: str | os.PathLike) -> list[Path]:
    """Remove the segment files that the store's main file does not name, their path-hash
    caches (:mod:`hashkit.stored_paths`), and temporary files of dead writers, in
    ``<store>.d``; the folder goes when empty. The caller holds the
    store's lock (no live writer has segments waiting for their commit)."""
    store = Path(store)
    folder = segment_dir(store)
    if not folder.is_dir():
        return []
    if not store.exists():  # a store being created for the first time: nothing to judge
        return []
    keep = {os.path.normpath(p) for p in referenced_segments(store)}
    removed = []
    for entry in os.scandir(folder):
        owner = temp_owner(entry.name)
        stale_temp = owner is not None and not pid_alive(owner[1])
        orphan = (
            owner is None
            and entry.name.startswith("seg-")
            and entry.name.endswith(".h5")
            and os.path.normpath(entry.path) not in keep
        )
        orphan_cache = (
            owner is None
            and entry.name.endswith(CACHE_SUFFIX)
            and os.path.normpath(entry.path[: -len(CACHE_SUFFIX)]) not in keep
        )
        if stale_temp or orphan or orphan_cache:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    remove_empty_segment_dir(store)
    return removed


def remove_empty_segment_dir(store: str | os.PathLike) -> None:
    with contextlib.suppress(OSError):
        segment_dir(store).rmdir()


def segment_sizes(store: Path, attrs) -> int:
    """Bytes on disk of a segmented store's segments."""
    total = 0
    for name, _ in segment_list(attrs, store):
        with contextlib.suppress(OSError):
            total += (store.parent / name).stat().st_size
    return total


def is_canonical_segment(f) -> bool:
    """Whether an open single-file store can serve as a segment as it is: FAISS bit order
    and the dtypes new segments have (so that one virtual dataset spans them all)."""
    import h5py

    order = f.attrs.get("bit_order", "big")
    order = order.decode() if isinstance(order, bytes) else str(order)
    if order != "little" or not all(name in f for name in ("ids", "paths")):
        return False
    if f["ids"].dtype != np.int64 or h5py.check_string_dtype(f["paths"].dtype) is None:
        return False
    if h5py.check_string_dtype(f["paths"].dtype).encoding != "utf-8":
        return False
    labels = f.get("labels")
    if labels is None:
        return True
    return (labels.ndim == 1 and labels.dtype == np.int64) or (
        labels.ndim == 2 and labels.shape[1] >= 2 and labels.dtype == np.uint8
    )


def compact_store(store: str | os.PathLike, *, wait: bool = True, on_wait=None) -> tuple[int, int]:
    """Merge a segmented store's segments into one single-file store at the same path,
    atomically and under the store's lock; then remove the segments. The store keeps its
    rows, order and attributes (``uuid`` included, so indexes built from it still match).
    Returns ``(segments merged, rows)``; a single-file store is left as it is (0 segments).
    Holds the whole store in memory while writing it."""
    from hashkit.lock import FileLock
    from hashkit.store import StoreWriter, _raw_attrs, read_store

    store = Path(store)
    with FileLock(store, wait=wait, on_wait=on_wait, purpose="hashkit compact"):
        attrs = _raw_attrs(store)
        if not is_segmented(attrs):
            remove_unreferenced_segments(store)
            return 0, len(read_store(store, codes=False, paths=False).ids)
        merged = len(segment_list(attrs, store))
        data = read_store(store)
        labels = data.labels
        width = None if labels is None else (0 if labels.ndim == 1 else labels.shape[1])
        kept = {k: v for k, v in attrs.items() if k not in LAYOUT_ATTRS}
        writer = StoreWriter(
            store, data.bits, fingerprint=data.fingerprint, label_width=width, extra_attrs=kept
        )
        with writer:
            writer.append(data.codes, data.ids, data.paths, labels)
        remove_unreferenced_segments(store)
    return merged, len(data)
