"""Atomic file writes: write beside the target under a temporary name, then rename over it.

An interrupted write (exception, Ctrl-C, kill) leaves the previous file intact. Writes that
must replace several files together (``hashkit add`` updates a code store, an index and its
sidecar) prepare every temporary file first and rename them last, with :class:`PendingFile`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


class PendingFile:
    """A temporary file beside ``target`` that becomes ``target`` on ``commit()``.

    With ``copy_from_target`` the temporary file starts as a copy of the existing target, for
    appends that must not touch the original until they are complete. ``discard()`` removes
    the temporary file; it is safe to call after ``commit()``.
    """

    def __init__(self, target: str | os.PathLike, *, copy_from_target: bool = False) -> None:
        self.target = Path(target)
        self.target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(
            prefix=f".{self.target.name}.", suffix=".tmp", dir=self.target.parent
        )
        os.close(fd)
        self.tmp = Path(name)
        self.committed = False
        # mkstemp makes the file private (0600); give it the target's mode, or the umask's.
        os.chmod(self.tmp, self.target.stat().st_mode & 0o777 if self.target.exists() else _mode())
        if copy_from_target and self.target.exists():
            try:
                shutil.copyfile(self.target, self.tmp)
            except BaseException:
                self.discard()
                raise

    def commit(self) -> Path:
        """Rename the temporary file over the target (atomic on POSIX file systems)."""
        os.replace(self.tmp, self.target)
        self.committed = True
        return self.target

    def discard(self) -> None:
        if not self.committed:
            with contextlib.suppress(FileNotFoundError):
                self.tmp.unlink()


def _mode() -> int:
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, copy_from_target: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``.

    With ``copy_from_target`` the temporary file starts as a copy of the existing target, for
    in-place appends that must not damage the original when interrupted.
    """
    pending = PendingFile(path, copy_from_target=copy_from_target)
    try:
        yield pending.tmp
        pending.commit()
    finally:
        pending.discard()
