"""Resumable benchmark runs that several workers share: the lock-file scheme of the paper
table's and the baselines' runners.

Each run has a name. A finished run is ``<runs>/<name>.json`` and is never run again; a run
in progress is claimed by ``<runs>/<name>.lock``, created exclusively and holding the worker's
pid. A lock whose worker has died (a crash, a kill, a reboot) is taken over, so a stopped
table resumes by starting the script again; a live worker's lock is left alone, so two
workers side by side never run the same job.

The runners are scripts, so they import this file by path::

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from resumable import run_claimed
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from hashkit.atomic import atomic_path, pid_alive


def claim(runs: Path, name: str) -> bool:
    """Create ``runs/<name>.lock`` holding our pid; False when a live worker holds it.

    A lock left by a dead worker, or one that cannot be read, is removed and claimed anew.
    """
    lock = runs / f"{name}.lock"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                pid = int(lock.read_text() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid_alive(pid):
                return False
            lock.unlink(missing_ok=True)
            continue
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return True
    return False


def run_claimed(runs: Path, name: str, work: Callable[[], dict], log: Callable[[str], None]):
    """Run ``work()`` for the run ``name`` unless it is done or another worker holds it.

    Its result is written to ``runs/<name>.json`` through a temporary file and a rename, so a
    crash leaves either the whole result or none; the lock is removed whatever happens.
    Returns the result, or None when the run was skipped.
    """
    out = runs / f"{name}.json"
    if out.exists() or not claim(runs, name):
        return None
    try:
        started = time.perf_counter()
        result = work()
        with atomic_path(out) as tmp:
            tmp.write_text(json.dumps(result, indent=1))
        log(f"{name}: done ({time.perf_counter() - started:.0f}s)")
        return result
    finally:
        (runs / f"{name}.lock").unlink(missing_ok=True)
