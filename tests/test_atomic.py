"""Atomic writes and multi-file commits: temporary names, clean-up of dead writers' temporary
files, fsync order, the commit journal and its roll-forward, outputs that are inputs, and
write errors that name the user's file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

import hashkit.atomic
from hashkit.atomic import (
    Commit,
    PendingFile,
    atomic_path,
    check_outputs,
    read_journal,
    remove_stale_temps,
    roll_forward,
    temp_owner,
)
from hashkit.errors import HashkitError


def dead_pid() -> int:
    """The pid of a process that has exited."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                          capture_output=True, text=True)  # fmt: skip
    return int(proc.stdout)


def test_temporary_names_carry_the_target_and_the_writers_pid(tmp_path):
    pending = PendingFile(tmp_path / "out.faiss")
    assert pending.tmp.parent == tmp_path
    assert temp_owner(pending.tmp) == ("out.faiss", os.getpid())
    assert temp_owner(tmp_path / ".out.faiss.json.123.0a1b2c3d.tmp") == ("out.faiss.json", 123)
    assert temp_owner(tmp_path / "out.faiss") is None
    pending.discard()


def test_a_new_writer_removes_dead_writers_temporaries_of_its_target_only(tmp_path):
    dead, live = dead_pid(), os.getpid()
    stale = tmp_path / f".s.h5.{dead}.0123abcd.tmp"
    busy = tmp_path / f".s.h5.{live}.4567abcd.tmp"
    other = tmp_path / f".t.h5.{dead}.89abcdef.tmp"
    for p in (stale, busy, other):
        p.write_bytes(b"half a store")
    with atomic_path(tmp_path / "s.h5") as tmp:
        tmp.write_bytes(b"new")
    assert not stale.exists() and busy.exists() and other.exists()
    assert (tmp_path / "s.h5").read_bytes() == b"new"
    assert remove_stale_temps(tmp_path / "t.h5") == [other]


def test_a_target_whose_name_is_near_the_length_limit_gets_a_temporary_name_that_fits(
    tmp_path,
):
    """A 250-byte name (the file system allows 255) is a valid target; its temporary name
    carries a shortened stem, and a dead writer's temporary of it is still found."""
    target = tmp_path / ("é" * 100 + "x" * 50)  # 250 bytes in UTF-8
    with atomic_path(target) as tmp:
        assert len(os.fsencode(tmp.name)) <= 255
        tmp.write_bytes(b"whole")
    assert target.read_bytes() == b"whole"
    stale = tmp_path / f".{hashkit.atomic.temp_stem(target.name)}.{dead_pid()}.0123abcd.tmp"
    stale.write_bytes(b"half")
    assert remove_stale_temps(target) == [stale]


def test_commit_fsyncs_the_file_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("rename", os.path.basename(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(hashkit.atomic.os, "fsync", fsync)
    monkeypatch.setattr(hashkit.atomic.os, "replace", replace)
    with atomic_path(tmp_path / "a.json") as tmp:
        tmp.write_text("{}")
        name = tmp.name
    assert events == [("fsync", name), ("rename", "a.json"), ("fsync", tmp_path.name)]


def three_files(tmp_path, content):
    files = [PendingFile(tmp_path / name) for name in ("s.h5", "out.faiss", "out.faiss.json")]
    for f in files:
        f.tmp.write_text(f"{content} {f.target.name}")
    return files


@pytest.mark.parametrize("failing_rename", [1, 2, 3, 4])
def test_a_commit_dying_between_any_two_renames_is_all_or_nothing(
    tmp_path, monkeypatch, failing_rename
):
    """Rename 1 is the journal's (the commit point); 2-4 are the files'."""
    for f in three_files(tmp_path, "old"):
        f.commit()
    files = three_files(tmp_path, "new")
    journal = tmp_path / "out.faiss.journal"
    real_replace, calls = os.replace, []

    def dies(src, dst):
        calls.append(dst)
        if len(calls) == failing_rename:
            raise KeyboardInterrupt  # stands in for a kill between two renames
        return real_replace(src, dst)

    monkeypatch.setattr(hashkit.atomic.os, "replace", dies)
    with pytest.raises(KeyboardInterrupt):
        Commit(journal, files).run()
    monkeypatch.setattr(hashkit.atomic.os, "replace", real_replace)
    if failing_rename == 1:
        assert not journal.exists()
        for f in files:
            f.discard()
    else:
        assert journal.exists()
        assert roll_forward(journal)
        assert not journal.exists()
    expected = "old" if failing_rename == 1 else "new"
    for name in ("s.h5", "out.faiss", "out.faiss.json"):
        assert (tmp_path / name).read_text() == f"{expected} {name}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.faiss", "out.faiss.json", "s.h5"]


@pytest.fixture
def ctrl_c_raises():
    """Ctrl-C raises KeyboardInterrupt even where the test runner was started with SIGINT
    ignored (as a shell does for a command run in the background)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_during_the_renames_waits_until_the_commit_is_whole(
    tmp_path, monkeypatch, ctrl_c_raises
):
    for f in three_files(tmp_path, "old"):
        f.commit()
    files = three_files(tmp_path, "new")
    real_replace, calls = os.replace, []

    def interrupted(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # the journal is in place; the store is being renamed
            os.kill(os.getpid(), signal.SIGINT)
        return real_replace(src, dst)

    monkeypatch.setattr(hashkit.atomic.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        Commit(tmp_path / "out.faiss.journal", files).run()
    assert len(calls) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.faiss", "out.faiss.json", "s.h5"]
    assert all(p.read_text().startswith("new ") for p in tmp_path.iterdir())


def test_a_journal_may_only_rename_a_targets_own_temporary_file(tmp_path):
    journal = tmp_path / "out.faiss.journal"
    victim = tmp_path / "notes.txt"
    victim.write_text("keep me")
    (tmp_path / "evil").write_text("x")
    journal.write_text(
        json.dumps({"format": "hashkit-commit-journal", "renames": [["evil", "notes.txt"]]})
    )
    with pytest.raises(HashkitError, match="not a temporary file of"):
        roll_forward(journal)
    assert victim.read_text() == "keep me"
    for text in ("", "[1, 2]", '{"format": "x"}', '{"format": "hashkit-commit-journal"}'):
        journal.write_text(text)
        with pytest.raises(HashkitError, match="journal"):
            read_journal(journal)


def test_outputs_that_are_inputs_are_refused_by_inode_and_by_name(tmp_path):
    model = tmp_path / "m.pt"
    model.write_bytes(b"model")
    os.link(model, tmp_path / "hard.pt")
    (tmp_path / "soft.pt").symlink_to(model)
    for out in ("m.pt", "hard.pt", "soft.pt", "./sub/../m.pt"):
        with pytest.raises(HashkitError, match="would be overwritten: it is the model and"):
            check_outputs({"the output": tmp_path / out}, {"the model": model})
    with pytest.raises(HashkitError, match="is both the index and the code store"):
        check_outputs({"the index": tmp_path / "x.h5", "the code store": tmp_path / "x.h5"})
    check_outputs({"the output": tmp_path / "new.h5"}, {"the model": model, "none": None})
    assert model.read_bytes() == b"model"


def test_a_failed_write_names_the_users_file_not_the_temporary_one(tmp_path):
    target = tmp_path / "out.faiss"
    with pytest.raises(HashkitError) as err:
        with atomic_path(target) as tmp:
            raise RuntimeError(f"write error in {tmp}: 3 != 10 (File too large)")
    assert str(err.value) == f"cannot write {target}: File too large"
    with pytest.raises(HashkitError, match=f"^cannot write {target}: No space left on device$"):
        with atomic_path(target):
            raise OSError(28, "No space left on device")
    assert list(tmp_path.iterdir()) == []
