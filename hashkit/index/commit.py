"""How an index's files change together, and how readers see them whole.

An index is three files that must agree: ``out.faiss``, its sidecar ``out.faiss.json`` and
the code store the sidecar names. Beside the index live, only while needed:

- ``out.faiss.lock``: the writers' lock (:class:`hashkit.lock.FileLock`). ``add`` and
  ``build-index`` hold it (and the lock of the store they replace) from reading the old
  state to the end of their commit, so two writers never both start from the same state.
- ``out.faiss.journal``: the commit journal (:class:`hashkit.atomic.Commit`). Writers replace
  the store, the index and the sidecar as one commit; a writer killed after the journal was
  written leaves it behind, and the next writer (under the lock) or reader rolls it forward.

Readers never lock (a search must not wait for a long ``add``): :func:`read_snapshot` finishes
or waits out a journal, reads the three files, and reads them again if any of them was
replaced meanwhile (compared by inode, size and times), so it never mixes two commits.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from hashkit.atomic import Commit, PendingFile, read_journal, roll_forward
from hashkit.errors import HashkitError
from hashkit.index.sidecar import (
    IndexInfo,
    load_sidecar,
    prepare_index_files,
    read_index,
    sidecar_path,
)
from hashkit.lock import FileLock, LockedError


def journal_path(index_path: str | os.PathLike) -> Path:
    """The commit journal of an index: ``out.faiss.journal``."""
    return Path(str(index_path) + ".journal")


def lock_index(
    index_path: str | os.PathLike,
    *,
    wait: bool = True,
    on_wait: Callable[[str], None] | None = None,
    purpose: str = "",
) -> FileLock:
    """Take the writers' lock of an index and finish a commit a dead writer left.

    Returns the held lock; the caller releases it (``lock.release()``) after its commit.
    """
    lock = FileLock(index_path, wait=wait, on_wait=on_wait, purpose=purpose).acquire()
    try:
        journal = journal_path(index_path)
        if journal.exists():
            roll_forward(journal)
    except BaseException:
        lock.release()
        raise
    return lock


def commit_files(index_path: str | os.PathLike, files: Sequence[PendingFile]) -> None:
    """Replace the targets of ``files`` (store, index, sidecar ...) as one commit journalled
    beside the index; the caller holds the index's lock. On an error before the commit point
    the files are discarded and nothing changed."""
    try:
        Commit(journal_path(index_path), files).run()
    finally:
        for f in files:
            f.discard()


def write_index(
    index,
    path: str | os.PathLike,
    *,
    bits: int,
    store: str | os.PathLike | None,
    model: str | os.PathLike | None,
    model_fingerprint: str = "",
    store_uuid: str = "",
    wait: bool = True,
    on_wait: Callable[[str], None] | None = None,
) -> Path:
    """Write the index and its sidecar as one commit, under the index's lock."""
    lock = lock_index(path, wait=wait, on_wait=on_wait, purpose="write-index")
    try:
        files = prepare_index_files(
            index,
            path,
            bits=bits,
            store=store,
            model=model,
            model_fingerprint=model_fingerprint,
            store_uuid=store_uuid,
        )
        commit_files(path, files)
    finally:
        lock.release()
    return Path(path)


def finish_interrupted_commit(index_path: str | os.PathLike, *, timeout: float = 30.0) -> None:
    """For readers: make sure no commit journal is pending beside the index.

    A journal whose writer is gone is rolled forward (under the lock, taken without waiting);
    one whose writer is alive is a commit being written, which takes milliseconds: wait for it
    (at most ``timeout`` seconds). A reader that may not write in the index's folder cannot
    finish a dead writer's commit and says so.
    """
    journal = journal_path(index_path)
    deadline = time.monotonic() + timeout
    while journal.exists():
        try:
            with FileLock(index_path, wait=False, purpose="finishing a commit"):
                if journal.exists():
                    roll_forward(journal)
            return
        except LockedError:
            if time.monotonic() > deadline:
                raise HashkitError(
                    f"{index_path} is being committed by another process for over {timeout:g} s "
                    f"({journal} is still there); try again later"
                ) from None
            time.sleep(0.01)
        except HashkitError:
            if not os.access(journal.parent, os.W_OK):
                read_journal(journal)  # a damaged journal says so first
                raise HashkitError(
                    f"{index_path} has an unfinished commit ({journal}) that only a user who "
                    f"may write in {journal.parent} can finish: run `hashkit info {index_path}` "
                    "as that user"
                ) from None
            raise


def index_model(index_path: str | os.PathLike) -> Path | None:
    """The model bundle an index was built with (None when it does not say), read from its
    sidecar alone (after finishing an interrupted commit): ``hashkit add`` needs it before it
    takes the lock, and reading the index or its store for it would cost O(index)."""
    side = sidecar_path(index_path)
    finish_interrupted_commit(index_path)
    if not side.is_file():  # a plain FAISS index, or not an index: read_index says which
        return read_index(index_path)[1].model
    model = load_sidecar(side).get("model")
    return None if model is None else Path(model)


@dataclass
class IndexSnapshot:
    """An index, its sidecar and its store's ids and attributes, read from one commit.

    ``store`` is None when the sidecar names no store; ``store_error`` says why a store the
    sidecar names could not be read (the index itself is fine)."""

    index: object
    info: IndexInfo
    store: object = None
    store_error: HashkitError | None = None


def _version(path: Path) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def read_snapshot(index_path: str | os.PathLike, *, attempts: int = 20) -> IndexSnapshot:
    """Read an index, its sidecar and its store (ids and attributes) from one commit.

    Each file's version is taken before it is read; after reading, a journal (a commit in
    progress) or any file whose version changed means a writer committed meanwhile: read
    again (at most ``attempts`` times).
    """
    from hashkit.store import read_store

    path = Path(index_path)
    journal = journal_path(path)
    for _ in range(attempts):
        finish_interrupted_commit(path)
        files = [path, sidecar_path(path)]
        versions = [_version(p) for p in files]
        try:
            index, info = read_index(path)
        except HashkitError:
            if journal.exists() or [_version(p) for p in files] != versions:
                continue  # read half of a commit: the sidecar of one, the index of another
            raise
        snapshot = IndexSnapshot(index, info)
        if info.store is not None:
            files.append(info.store)
            versions.append(_version(info.store))
            try:
                snapshot.store = read_store(info.store, codes=False, paths=False)
            except HashkitError as exc:
                snapshot.store_error = exc
        if not journal.exists() and [_version(p) for p in files] == versions:
            return snapshot
    raise HashkitError(
        f"{path} kept changing while it was read (another hashkit command is writing it); try again"
    )
