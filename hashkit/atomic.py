"""Atomic file writes: write beside the target under a temporary name, then rename over it.

An interrupted write (exception, Ctrl-C, kill) leaves the previous file intact.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, copy_from_target: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``.

    With ``copy_from_target`` the temporary file starts as a copy of the existing target, for
    in-place appends that must not damage the original when interrupted.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if copy_from_target and target.exists():
            import shutil

            shutil.copyfile(target, tmp)
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
