"""Incremental adds: new codes go to an index and its code store together, atomically."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hashkit.atomic import check_outputs
from hashkit.codes import BIT_ORDER
from hashkit.errors import DataError, MismatchError
from hashkit.index.commit import commit_files, journal_path, lock_index
from hashkit.index.compat import check_alignment_by_checksum, check_compatible
from hashkit.index.sidecar import prepare_index_files, read_index, sidecar_path
from hashkit.lock import FileLock
from hashkit.stored_paths import StoredPaths, path_key, write_cache

MAX_ID = np.iinfo(np.int64).max  # ids are int64 in the store and in FAISS


@dataclass
class AddReport:
    """What ``add`` did: codes ``added`` under ids ``first_id``..``first_id + added - 1``;
    ``recovered`` store codes an interrupted add had left out of the index; paths skipped
    because the store already held them, or because they could not be read."""

    added: int = 0
    first_id: int = 0
    recovered: int = 0
    count: int = 0
    skipped_existing: list[str] = field(default_factory=list)
    skipped_unreadable: list[tuple[str, str]] = field(default_factory=list)


class IndexAppender:
    """Append codes to an index and its code store together, atomically.

    Used as a context manager. It holds the index's lock and its store's (a second writer
    waits, saying so through ``on_wait``, or with ``wait=False`` raises LockedError), so two
    appends never start from the same state. Codes go to a new segment of the store
    (:mod:`hashkit.segments`) and to the index in memory; on success the store's main file,
    the index and the sidecar are replaced as one journalled commit. If the block raises,
    nothing on disk changes. A store ahead of its index (left by versions of hashkit without
    the journal) is caught up first (``report.recovered``).
    """

    def __init__(
        self,
        index_path: str | os.PathLike,
        *,
        wait: bool = True,
        on_wait: Callable[[str], None] | None = None,
    ) -> None:
        self.index_path = Path(index_path)
        self._locks = ExitStack()
        self._writer = None
        try:
            self._locks.callback(
                lock_index(index_path, wait=wait, on_wait=on_wait, purpose="hashkit add").release
            )
            self._open(wait, on_wait)
        except BaseException:
            self.abort()
            raise

    def _open(self, wait: bool, on_wait: Callable[[str], None] | None) -> None:
        from hashkit.store import StoreWriter, read_store, read_store_attrs

        index_path = self.index_path
        self.index, self.info = read_index(index_path)
        if self.info.store is None:
            raise DataError(f"{index_path} has no sidecar naming its code store")
        if self.info.bit_order != BIT_ORDER:
            raise MismatchError(
                f"{index_path} holds codes in the older '{self.info.bit_order}' bit order: "
                f"rebuild it with `hashkit build-index {self.info.store} {index_path}` "
                "before adding to it"
            )
        check_outputs(
            {
                "the code store": self.info.store,
                "the index": index_path,
                "its sidecar": sidecar_path(index_path),
                "its journal": journal_path(index_path),
            },
            {"the model": self.info.model},
        )
        self._locks.enter_context(
            FileLock(self.info.store, wait=wait, on_wait=on_wait, purpose="hashkit add")
        )
        # Neither the store's ids nor its paths are read whole: an add costs O(new items)
        # plus reading the index (see check_alignment_by_checksum and StoredPaths).
        attrs = read_store_attrs(self.info.store)
        bits = int(attrs["bits"])
        store_fingerprint = str(attrs.get("model_fingerprint", ""))
        check_compatible(
            bits_a=self.info.bits,
            bits_b=bits,
            what_a=str(index_path),
            what_b=str(self.info.store),
            fingerprint_a=self.info.model_fingerprint,
            fingerprint_b=store_fingerprint,
        )
        alignment = check_alignment_by_checksum(self.index, self.info, index_path=index_path)
        self.bits = bits
        self.fingerprint = store_fingerprint or self.info.model_fingerprint
        self.store_uuid = str(attrs.get("uuid", ""))
        self.report = AddReport()
        if alignment.pending:
            tail = read_store(
                self.info.store, paths=False, rows=slice(int(self.index.ntotal), None)
            )
            self.index.add_with_ids(tail.codes, tail.ids)
            self.report.recovered = len(tail.ids)
        self._stored = StoredPaths(self.info.store)
        self._seen: set[str] = set()  # paths taken in this add
        self._writer = StoreWriter.append_to(self.info.store)
        self.report.first_id = self._writer.next_id

    def split_new(self, paths: Sequence[str]) -> list[str]:
        """The paths not yet in the store (each once); the others go to the report."""
        keys = [path_key(p) for p in paths]
        stored = self._stored.find(set(keys) - self._seen)
        new = []
        for p, key in zip(paths, keys):
            if key in stored or key in self._seen:
                self.report.skipped_existing.append(p)
            else:
                self._seen.add(key)
                new.append(p)
        return new

    def check_ids_fit(self, n: int) -> None:
        """Raise DataError unless ``n`` more ids after the store's largest fit in int64."""
        last = self._writer.next_id + n - 1
        if n and last > MAX_ID:
            raise DataError(
                f"{n} new id(s) after the largest id {self._writer.next_id - 1} of "
                f"{self.info.store} would not fit in int64 (at most 2^63 - 1)"
            )

    def append(self, codes: np.ndarray, paths: Sequence[str]) -> np.ndarray:
        """Append packed codes (n x nbytes uint8) of ``paths``; returns their new ids."""
        self.check_ids_fit(len(codes))
        ids = np.arange(self._writer.next_id, self._writer.next_id + len(codes), dtype=np.int64)
        self._writer.append(codes, ids, list(paths))
        self.index.add_with_ids(np.ascontiguousarray(codes, dtype=np.uint8), ids)
        self.report.added += len(codes)
        return ids

    def commit(self) -> AddReport:
        """Write the temporary files and replace store, index and sidecar as one commit."""
        try:
            self._writer.finish()
            hashes = self._stored.single_file_hashes
            if self._writer.linked_segment is not None and hashes is not None:
                # The single-file store became the first segment as it is: keep the path
                # hashes read from it this time for the next adds.
                write_cache(self._writer.linked_segment, hashes)
            files = prepare_index_files(
                self.index,
                self.index_path,
                bits=self.bits,
                store=self.info.store,
                model=self.info.model,
                model_fingerprint=self.fingerprint,
                store_uuid=self.store_uuid,
            )
            commit_files(self.index_path, [self._writer.pending, *files])
        finally:
            self.abort()
        self.report.count = int(self.index.ntotal)
        return self.report

    def abort(self) -> None:
        """Drop what was not committed and release the locks."""
        try:
            if self._writer is not None:
                self._writer.abort()
        finally:
            self._locks.close()

    def __enter__(self) -> IndexAppender:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def add_images(
    index_path: str | os.PathLike,
    paths: Sequence[str],
    bundle,
    *,
    batch_size: int = 256,
    num_workers: int = 0,
    device: str = "auto",
    strict: bool = False,
    progress: Callable | None = None,
    wait: bool = True,
    on_wait: Callable[[str], None] | None = None,
    resume: bool = False,
    note: Callable[[str], None] | None = None,
) -> AddReport:
    """Encode the image files among ``paths`` that the index's store lacks, with ``bundle``
    (which must be the index's model), and append them to the store and the index.

    Old images are not re-encoded; new ids continue after the store's largest id. ``wait``
    and ``on_wait``: what to do while another writer holds the index (see IndexAppender).
    The new codes are saved as they come (:mod:`hashkit.encode_checkpoint`, beside the
    store) and ``resume`` continues an add that stopped; ``note`` gets the line saying so.
    """
    from hashkit.encode import EncodeReport, checkpointed_file_codes

    with IndexAppender(index_path, wait=wait, on_wait=on_wait) as appender:
        check_compatible(
            bits_a=bundle.bits,
            bits_b=appender.bits,
            what_a=f"model {bundle.path}",
            what_b=str(index_path),
            fingerprint_a=bundle.fingerprint,
            fingerprint_b=appender.fingerprint,
        )
        new = appender.split_new(paths)
        appender.check_ids_fit(len(new))  # before encoding them
        encode_report = EncodeReport()
        checkpoint, new_codes = checkpointed_file_codes(
            appender.info.store, bundle, new, encode_report,
            resume=resume, note=note, first_id=appender.report.first_id, kind="added image files",
            batch_size=batch_size, num_workers=num_workers, device=device, strict=strict,
            progress=progress,
        )  # fmt: skip
        for positions, codes in new_codes:
            appender.append(codes, [new[i] for i in positions])
        appender.report.skipped_unreadable = encode_report.skipped
    checkpoint.finished()
    return appender.report


def append_code_batches(
    index_path: str | os.PathLike,
    batches: Iterable[tuple[np.ndarray, Sequence[str]]],
    *,
    wait: bool = True,
    on_wait: Callable[[str], None] | None = None,
) -> AddReport:
    """Append ``(codes n x nbytes uint8, paths n)`` batches to an index and its store;
    paths the store already holds are skipped."""
    with IndexAppender(index_path, wait=wait, on_wait=on_wait) as appender:
        for codes, paths in batches:
            first: dict[str, int] = {}
            for i, p in enumerate(paths):
                first.setdefault(p, i)
            rows = [first[p] for p in appender.split_new(paths)]
            if rows:
                appender.append(np.asarray(codes)[rows], [paths[i] for i in rows])
    return appender.report
