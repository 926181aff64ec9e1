"""Compatibility of a model, a code store and an index: bits, model fingerprints, and how an
index lines up with its store."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from hashkit.errors import MismatchError
from hashkit.index.build import (
    index_ids,
)
from hashkit.index.sidecar import IndexInfo


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


@dataclass
class Alignment:
    """How an index and its code store line up.

    ``pending``: codes at the end of the store that the index lacks (an ``add`` stopped
    between writing the store and the index; the next ``add`` indexes them).
    ``stale_sidecar``: the sidecar's count differs from the index (stopped between the index
    and its sidecar; the next ``add`` or ``build-index`` rewrites it).
    """

    pending: int = 0
    stale_sidecar: bool = False

    def warning(self) -> str:
        notes = []
        if self.pending:
            notes.append(
                f"the code store holds {self.pending} code(s) the index lacks (an interrupted "
                "`hashkit add`?); run `hashkit add` again to index them"
            )
        if self.stale_sidecar:
            notes.append("the index sidecar's count is out of date (an interrupted write?)")
        return "; ".join(notes)


def check_alignment(
    index,
    info: IndexInfo,
    store_ids: np.ndarray,
    store_attrs: dict,
    *,
    index_path: str | os.PathLike = "the index",
) -> Alignment:
    """Check that ``index`` holds the first ``ntotal`` codes of its store, under the store's
    ids (``store_ids`` int64 N); raise MismatchError when it cannot."""
    store_name = _check_same_store(info, store_attrs, index_path)
    n = len(store_ids)
    if index.ntotal > n:
        raise MismatchError(
            f"{index_path} holds {index.ntotal} codes but {store_name} only {n}: "
            "they do not belong together"
        )
    ids = index_ids(index)
    if ids is not None and not np.array_equal(ids, store_ids[: index.ntotal]):
        raise MismatchError(f"the ids in {index_path} are not the ids of {store_name}")
    return Alignment(pending=n - int(index.ntotal), stale_sidecar=info.count != index.ntotal)


def check_alignment_by_checksum(
    index, info: IndexInfo, *, index_path: str | os.PathLike = "the index"
) -> Alignment:
    """:func:`check_alignment` against the store ``info.store`` names, without reading the
    store's ids where it can: when the store records the CRC-32 of its ids (``ids_crc32``,
    kept by hashkit's writers) and holds as many codes as the index, the index's own ids
    (in memory) are checked against that checksum instead of against the ids read from the
    store. Otherwise (a store ahead of its index, or written without the checksum) the ids
    are read and compared one by one. ``hashkit info INDEX`` always compares them one by one.
    """
    from hashkit.segments import IDS_CRC32
    from hashkit.store import ids_crc32, read_store, read_store_attrs

    attrs = read_store_attrs(info.store)
    n = int(attrs["datasets"]["codes"][0])
    crc = attrs.get(IDS_CRC32)
    if crc is None or index.ntotal != n:
        store = read_store(info.store, codes=False, paths=False)
        return check_alignment(index, info, store.ids, store.attrs, index_path=index_path)
    store_name = _check_same_store(info, attrs, index_path)
    ids = index_ids(index)
    if ids is not None and ids_crc32(ids) != int(crc):
        raise MismatchError(f"the ids in {index_path} are not the ids of {store_name}")
    return Alignment(pending=0, stale_sidecar=info.count != index.ntotal)


def _check_same_store(info: IndexInfo, store_attrs: dict, index_path) -> str:
    """The store's name for messages, after checking that the sidecar records its uuid."""
    store_name = str(info.store) if info.store else "its code store"
    uuid = str(store_attrs.get("uuid", ""))
    if info.store_uuid != uuid:
        # A store written by hashkit has a uuid and its index's sidecar records it; a sidecar
        # without one (or a store without one) cannot vouch that they belong together.
        why = (
            "store uuid differs"
            if info.store_uuid and uuid
            else "its sidecar records no store uuid"
            if uuid
            else f"{store_name} has no uuid"
        )
        raise MismatchError(
            f"{index_path} was built from another code store than {store_name} "
            f"({why}): rebuild it with `hashkit build-index`"
        )
    return store_name
