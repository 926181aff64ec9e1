"""Atomic file writes and multi-file commits.

A file is written under a temporary name beside its target and renamed over it when complete:
an interrupted write (exception, Ctrl-C, ``kill -9``) leaves the previous file intact.

- :class:`PendingFile`: the temporary file; ``commit()`` fsyncs it, renames it over the
  target and fsyncs the folder, so a power cut after the commit cannot lose it either.
- :func:`atomic_path`: the context-manager form, for one file.
- :class:`Commit`: several files replaced as one (``add`` and ``build-index`` replace a code
  store, an index and its sidecar). Every temporary file is complete and fsynced first; then
  a journal naming the renames is written and fsynced; then the renames are done, the folders
  fsynced and the journal removed. A process that dies after the journal exists leaves it
  behind, and :func:`roll_forward` finishes the renames (under the writer's lock, see
  :mod:`hashkit.lock`): the commit happens entirely or, if it died before the journal, not
  at all.
- Temporary names are ``.<target name>.<pid>.<8 hex>.tmp``: a new writer of a target removes
  the temporary files of that target whose process is gone (:func:`remove_stale_temps`).
- :func:`check_outputs`: refuse an output that is also an input, or two outputs that are one
  file, before anything is written.

Errors while writing (disk full, file too large, permission) become one HashkitError that
names the user's file, never the temporary one.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import shutil
import signal
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from hashkit.errors import HashkitError

JOURNAL_FORMAT = "hashkit-commit-journal"
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.(?P<token>[0-9a-f]{8})\.tmp$")


_NAME_MAX = 255  # bytes in a file name on Linux and macOS file systems
_TEMP_EXTRA = 25  # ".", ".<pid, up to 10 digits>", ".<8 hex>", ".tmp"


def temp_stem(name: str) -> str:
    """The part of a target's file name that its temporary names carry: the whole name, or
    its first bytes where the whole would make a temporary name too long to create."""
    raw = os.fsencode(name)
    return (
        name if len(raw) + _TEMP_EXTRA <= _NAME_MAX else os.fsdecode(raw[: _NAME_MAX - _TEMP_EXTRA])
    )


def temp_name(target: str | os.PathLike) -> Path:
    """A fresh temporary name beside ``target``: ``.<name>.<pid>.<8 hex>.tmp`` (the name cut
    by :func:`temp_stem` where it is long)."""
    target = Path(target)
    stem = temp_stem(target.name)
    return target.parent / f".{stem}.{os.getpid()}.{secrets.token_hex(4)}.tmp"


def temp_owner(path: str | os.PathLike) -> tuple[str, int] | None:
    """``(target name, writer pid)`` of a temporary file name, or None for other names."""
    m = _TEMP.match(Path(path).name)
    return (m["name"], int(m["pid"])) if m else None


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (on this machine)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, belongs to someone else
        return True
    return True


def remove_stale_temps(target: str | os.PathLike) -> list[Path]:
    """Remove the temporary files of ``target`` left by writers that are gone (their pid no
    longer exists); returns them. Temporary files of live writers are kept."""
    target = Path(target)
    removed = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(target.parent if str(target.parent) else "."):
            owner = temp_owner(entry.name)
            if owner is None or owner[0] != temp_stem(target.name) or pid_alive(owner[1]):
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


def fsync_file(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike) -> None:
    """fsync a folder, so that renames and removals in it survive a power cut."""
    fd = os.open(path or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as exc:  # some file systems cannot fsync a folder; nothing more to do
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


_ERRNO_IN_TEXT = re.compile(r"errno\s*=?\s*(\d+)")


def write_error(target: str | os.PathLike, exc: BaseException) -> HashkitError:
    """One line naming ``target`` for an error raised while writing it (or its temp file)."""
    err = getattr(exc, "errno", None)
    if isinstance(exc, OSError) and err:
        reason = os.strerror(err)  # h5py puts pages of detail (and the temp name) in strerror
    else:
        text = str(exc)
        found = _ERRNO_IN_TEXT.search(text) or re.search(r"\(([A-Z][A-Za-z ]+)\)\s*$", text)
        if found and found.group(1).isdigit():
            reason = os.strerror(int(found.group(1)))
        elif found:
            reason = found.group(1)
        else:
            lines = [line for line in text.strip().splitlines() if line.strip()]
            reason = lines[-1] if lines else type(exc).__name__
            reason = re.sub(r"\S*\.\d+\.[0-9a-f]{8}\.tmp", str(target), reason)
    return HashkitError(f"cannot write {target}: {reason}")


_WRITE_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EIO}


def _is_write_failure(exc: BaseException, tmp: Path) -> bool:
    """Whether ``exc`` says that writing ``tmp`` failed: an OSError of a full disk, a file
    size limit ..., or about ``tmp`` itself; a RuntimeError of FAISS or HDF5 about a write."""
    if isinstance(exc, OSError):
        names = {str(exc.filename), str(getattr(exc, "filename2", None))}
        return exc.errno in _WRITE_ERRNOS or str(tmp) in names or tmp.name in str(exc)
    if isinstance(exc, RuntimeError):
        text = str(exc)
        return bool(_ERRNO_IN_TEXT.search(text)) or "write error" in text or tmp.name in text
    return False


def _default_mode() -> int:
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


class PendingFile:
    """A temporary file beside ``target`` that becomes ``target`` on ``commit()``.

    With ``copy_from_target`` the temporary file starts as a copy of the existing target, for
    appends that must not touch the original until they are complete. ``discard()`` removes
    the temporary file; it is safe to call after ``commit()``. Creating one removes the
    target's temporary files left by dead writers.
    """

    def __init__(self, target: str | os.PathLike, *, copy_from_target: bool = False) -> None:
        self.target = Path(target)
        self.committed = False
        try:
            self.target.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temps(self.target)
            mode = self.target.stat().st_mode & 0o777 if self.target.exists() else None
            while True:
                self.tmp = temp_name(self.target)
                try:
                    fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    break
                except FileExistsError:
                    continue
            os.close(fd)
            # The temp is private while written; give it the target's mode, or the umask's.
            os.chmod(self.tmp, mode if mode is not None else _default_mode())
        except OSError as exc:
            raise write_error(self.target, exc) from None
        if copy_from_target and self.target.exists():
            try:
                shutil.copyfile(self.target, self.tmp)
            except BaseException as exc:
                self.discard()
                if _is_write_failure(exc, self.tmp):
                    raise write_error(self.target, exc) from None
                raise

    def sync(self) -> None:
        """fsync the temporary file (its data reaches the disk before it is renamed)."""
        try:
            fsync_file(self.tmp)
        except OSError as exc:
            raise write_error(self.target, exc) from None

    def commit(self) -> Path:
        """fsync, rename the temporary file over the target (atomic on POSIX file systems),
        fsync the folder."""
        self.sync()
        try:
            os.replace(self.tmp, self.target)
            self.committed = True
            fsync_dir(self.target.parent)
        except OSError as exc:
            raise write_error(self.target, exc) from None
        return self.target

    def discard(self) -> None:
        if not self.committed:
            with contextlib.suppress(FileNotFoundError):
                self.tmp.unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, copy_from_target: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``.

    With ``copy_from_target`` the temporary file starts as a copy of the existing target, for
    in-place appends that must not damage the original when interrupted. A write that fails
    (disk full ...) raises HashkitError naming ``path``.
    """
    pending = PendingFile(path, copy_from_target=copy_from_target)
    try:
        try:
            yield pending.tmp
        except BaseException as exc:
            if _is_write_failure(exc, pending.tmp):
                raise write_error(path, exc) from None
            raise
        pending.commit()
    finally:
        pending.discard()


class Commit:
    """Replace the targets of several PendingFiles as one commit, journalled in ``journal``.

    ``run()`` fsyncs every temporary file, writes and fsyncs the journal (the commit point),
    renames the files in order, fsyncs their folders and removes the journal. If it raises
    before the commit point nothing has changed (the caller discards the files); after it, a
    leftover journal is finished by :func:`roll_forward`.
    """

    def __init__(self, journal: str | os.PathLike, files: Sequence[PendingFile]) -> None:
        self.journal = Path(journal)
        self.files = list(files)

    def run(self) -> None:
        for f in self.files:
            f.sync()
        base = self.journal.parent
        record = {
            "format": JOURNAL_FORMAT,
            "pid": os.getpid(),
            "renames": [
                [os.path.relpath(f.tmp, base), os.path.relpath(f.target, base)] for f in self.files
            ],
        }
        with atomic_path(self.journal) as tmp:
            tmp.write_text(json.dumps(record) + "\n")
        for f in self.files:
            f.committed = True  # from here on the journal owns the temporary files
        with _signals_deferred():
            _apply(self.journal, [(f.tmp, f.target) for f in self.files])


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the renames are done (milliseconds), so that an
    interrupted command leaves either the old files or the new ones, without a journal.
    (Python runs signal handlers in the main thread only; elsewhere nothing is held.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(signum)
        if handler is not None:  # None: installed outside Python, cannot be put back
            previous[signum] = signal.signal(signum, lambda n, frame: received.append(n))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if received:
            signal.raise_signal(received[0])


def _apply(journal: Path, renames: Sequence[tuple[Path, Path]]) -> list[Path]:
    done = []
    try:
        for tmp, target in renames:
            if tmp.exists():
                os.replace(tmp, target)
                done.append(target)
        for folder in {target.parent for _, target in renames}:
            fsync_dir(folder)
        os.unlink(journal)
        fsync_dir(journal.parent)
    except OSError as exc:
        raise HashkitError(
            f"the commit journalled in {journal} could not finish ({exc.strerror}); it will be "
            "finished by the next command that opens the files with write access"
        ) from None
    return done


def read_journal(journal: str | os.PathLike) -> list[tuple[Path, Path]]:
    """The ``(temporary file, target)`` renames a journal names; HashkitError if it is not
    a hashkit journal or names anything but a target's temporary files."""
    journal = Path(journal)
    try:
        record = json.loads(journal.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HashkitError(
            f"{journal} is not a readable commit journal ({exc}); if no hashkit command is "
            "writing there, remove it"
        ) from None
    if not isinstance(record, dict) or record.get("format") != JOURNAL_FORMAT:
        raise HashkitError(f"{journal} is not a hashkit commit journal; remove it")
    renames = record.get("renames")
    if not isinstance(renames, list):
        raise HashkitError(f"{journal} is not a hashkit commit journal")
    pairs = []
    for pair in renames:
        if not (isinstance(pair, list) and len(pair) == 2) or not all(
            isinstance(p, str) for p in pair
        ):
            raise HashkitError(f"{journal} is not a hashkit commit journal")
        tmp, target = (journal.parent / p for p in pair)
        owner = temp_owner(tmp)
        # Only ever rename a target's own temporary file beside it over it.
        if owner is None or owner[0] != temp_stem(target.name) or tmp.parent != target.parent:
            raise HashkitError(f"{journal} names {tmp}, which is not a temporary file of {target}")
        pairs.append((tmp, target))
    return pairs


def roll_forward(journal: str | os.PathLike) -> list[Path]:
    """Finish the commit a dead writer left in ``journal``: rename the temporary files it
    names that are still there, fsync, remove the journal. Returns the targets renamed.
    The caller holds the writer's lock (no live writer is in the middle of that commit)."""
    journal = Path(journal)
    return _apply(journal, read_journal(journal))


def _identity(path: Path) -> tuple | None:
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return st.st_dev, st.st_ino


def _same(a: Path, b: Path) -> bool:
    ia, ib = _identity(a), _identity(b)
    if ia is not None and ib is not None:
        return ia == ib
    return os.path.realpath(a) == os.path.realpath(b)


def check_outputs(
    outputs: Mapping[str, str | os.PathLike | None],
    inputs: Mapping[str, str | os.PathLike | None] | None = None,
) -> None:
    """Refuse, before anything is written, an output that is an input or another output.

    ``outputs`` and ``inputs`` map a description ("the index OUT", "--model") to a path (None
    entries are ignored). Existing files are compared by identity (device and inode, so hard
    links and other spellings of a path are caught); files not yet there, by resolved path.
    """
    outs = [(what, Path(p)) for what, p in outputs.items() if p is not None]
    ins = [(what, Path(p)) for what, p in (inputs or {}).items() if p is not None]
    for i, (what, path) in enumerate(outs):
        for in_what, in_path in ins:
            if _same(path, in_path):
                raise HashkitError(
                    f"{path} would be overwritten: it is {in_what} and {what}; "
                    "choose another output name"
                )
        for other_what, other in outs[:i]:
            if _same(path, other):
                raise HashkitError(
                    f"{path} is both {other_what} and {what}; choose another name for one of them"
                )
