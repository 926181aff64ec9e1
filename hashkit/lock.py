"""The writer's lock of a file: ``fcntl.flock`` on ``<file>.lock`` beside it.

Every command that commits to an index or a code store (``add``, ``build-index``, a store
being written) holds the lock of each file it replaces, from the moment it reads them until
its commit is done, so two writers never work from the same old state (one of them would
silently lose the other's work). A second writer waits, and says so through ``on_wait``, or
with ``wait=False`` fails at once with :class:`LockedError`.

The lock file exists only while a writer holds it: it holds ``"<pid> <purpose>"`` for the
waiting message, and is removed on release. Because a waiter may have opened the file just
before it was removed, a writer that gets the lock checks that the path still names the file
it locked, and tries again otherwise. The kernel drops the lock of a process that dies, so a
``kill -9`` never leaves a lock held. Locks are reentrant within a thread (a store's writer
may take the lock its caller already holds); other threads wait like other processes.
Readers never take the lock: they rely on the commit journal (:mod:`hashkit.atomic`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from hashkit.errors import HashkitError


class LockedError(HashkitError):
    """Another process holds the lock and the caller chose not to wait."""


_held: dict[tuple[int, str], list] = {}  # (thread, lock path) -> [fd, count] held here
_held_guard = threading.Lock()


def lock_path(target: str | os.PathLike) -> Path:
    """The lock file of ``target``: ``target`` + ``.lock``."""
    return Path(str(target) + ".lock")


def holds_lock(target: str | os.PathLike) -> bool:
    """Whether this thread holds the lock of ``target``."""
    return _key(lock_path(target)) in _held


def _key(path: Path) -> tuple[int, str]:
    return threading.get_ident(), os.path.normpath(os.path.abspath(path))


def _holder(fd: int) -> str:
    """Who holds the lock, from the lock file: "pid N (purpose)" or "another process"."""
    with contextlib.suppress(OSError):
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
        pid, _, purpose = text.partition(" ")
        if pid.isdigit():
            return f"pid {pid}" + (f" ({purpose})" if purpose else "")
    return "another process"


class FileLock:
    """An exclusive lock on ``target`` through ``<target>.lock``; a context manager.

    ``wait``: block until the holder is done (``on_wait(message)`` is called once, first),
    or raise LockedError at once. ``timeout`` (seconds) bounds the wait; None waits for ever.
    ``purpose`` is shown to the processes that wait for this one (e.g. "hashkit add").
    """

    def __init__(
        self,
        target: str | os.PathLike,
        *,
        wait: bool = True,
        on_wait: Callable[[str], None] | None = None,
        timeout: float | None = None,
        purpose: str = "",
    ) -> None:
        self.target = Path(target)
        self.path = lock_path(target)
        self.wait = wait
        self.on_wait = on_wait
        self.timeout = timeout
        self.purpose = purpose
        self._acquired = False
        self._told = False

    def acquire(self) -> FileLock:
        key = _key(self.path)
        with _held_guard:
            if key in _held:
                _held[key][1] += 1
                self._acquired = True
                return self
        fd = self._lock()
        with _held_guard:
            _held[key] = [fd, 1]
        self._acquired = True
        return self

    def _lock(self) -> int:
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        self._told = False
        while True:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
            except OSError as exc:
                raise HashkitError(
                    f"cannot lock {self.target}: cannot create {self.path} ({exc.strerror})"
                ) from None
            try:
                self._flock(fd, deadline)
                if not _same_file(fd, self.path):  # removed by its last holder meanwhile
                    os.close(fd)
                    continue
                with contextlib.suppress(OSError):  # who holds it is only for messages
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, f"{os.getpid()} {self.purpose}\n".encode(), 0)
                return fd
            except BaseException:
                os.close(fd)
                raise

    def _flock(self, fd: int, deadline: float | None) -> None:
        """Lock ``fd``, waiting (and saying so once) or raising LockedError."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        holder = _holder(fd)
        if not self.wait:
            raise LockedError(
                f"{self.target} is locked by {holder}; try again when it is done "
                "(or wait for it: leave out --no-wait)"
            )
        if not self._told and self.on_wait is not None:
            self.on_wait(f"waiting for the lock on {self.target} held by {holder} ...")
        self._told = True
        if deadline is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
            return
        while time.monotonic() < deadline:
            time.sleep(0.05)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                continue
        raise LockedError(f"{self.target} is still locked by {holder} after {self.timeout:g} s")

    def release(self) -> None:
        if not self._acquired:
            return
        self._acquired = False
        key = _key(self.path)
        with _held_guard:
            entry = _held[key]
            entry[1] -= 1
            if entry[1]:
                return
            del _held[key]
        fd = entry[0]
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)  # while still locked: waiters then see a stale inode
        finally:
            os.close(fd)

    def __enter__(self) -> FileLock:
        return self.acquire()

    def __exit__(self, exc_type, exc, tb) -> None:
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    here = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (here.st_dev, here.st_ino)
