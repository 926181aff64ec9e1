"""The writers' lock: exclusive across processes and threads, a waiting message naming the
holder, --no-wait failing at once, released by a kill -9, reentrant within a thread."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from hashkit.lock import FileLock, LockedError, holds_lock, lock_path

HOLD = """
import sys
from hashkit.lock import FileLock
with FileLock(sys.argv[1], purpose="hashkit add"):
    print("locked", flush=True)
    sys.stdin.read()
"""


@pytest.fixture
def holder(tmp_path):
    """A process holding the lock of ``tmp_path/out.faiss`` until its stdin closes."""
    target = tmp_path / "out.faiss"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(target)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline() == "locked\n"
    yield target, proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)


def test_a_second_writer_fails_at_once_without_wait_naming_the_holder(holder):
    target, proc = holder
    with pytest.raises(LockedError, match=rf"is locked by pid {proc.pid} \(hashkit add\)"):
        FileLock(target, wait=False).acquire()
    assert not holds_lock(target)


def test_a_second_writer_waits_says_so_once_and_gets_the_lock_when_the_first_is_done(holder):
    target, proc = holder
    messages = []
    with pytest.raises(LockedError, match="still locked"):
        FileLock(target, on_wait=messages.append, timeout=0.3).acquire()
    assert messages == [
        f"waiting for the lock on {target} held by pid {proc.pid} (hashkit add) ..."
    ]
    proc.stdin.close()
    proc.wait(timeout=30)
    with FileLock(target, timeout=30) as lock:
        assert holds_lock(target) and lock.path.read_text().startswith(f"{os.getpid()} ")
    assert not lock_path(target).exists()


def test_a_killed_holder_leaves_no_lock_behind(holder):
    target, proc = holder
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    with FileLock(target, wait=False):
        assert holds_lock(target)


def test_the_lock_is_reentrant_in_a_thread_and_exclusive_between_threads(tmp_path):
    target = tmp_path / "s.h5"
    got = []

    def other_thread():
        try:
            FileLock(target, wait=False).acquire()
            got.append("locked")
        except LockedError:
            got.append("refused")

    with FileLock(target):
        with FileLock(target, wait=False):
            assert holds_lock(target)
        assert holds_lock(target) and lock_path(target).exists()
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join(timeout=30)
    assert got == ["refused"] and not lock_path(target).exists()


def test_a_waiter_whose_lock_file_was_removed_still_excludes_newcomers(tmp_path):
    """The last holder removes the lock file; a waiter that had opened it must lock the new
    file, or a newcomer creating a fresh one would hold the lock at the same time."""
    target = tmp_path / "out.faiss"
    first = FileLock(target).acquire()
    locked, done, refused = threading.Event(), threading.Event(), []

    def waiter():
        with FileLock(target, timeout=30):
            locked.set()
            done.wait(30)

    def newcomer():
        try:
            FileLock(target, wait=False).acquire()
            refused.append(False)
        except LockedError:
            refused.append(True)

    waiting = threading.Thread(target=waiter)
    waiting.start()
    time.sleep(0.2)  # lets the waiter open the file that release() removes
    first.release()
    assert locked.wait(30)
    arriving = threading.Thread(target=newcomer)
    arriving.start()
    arriving.join(timeout=30)
    done.set()
    waiting.join(timeout=30)
    assert refused == [True]
