"""The lock-file scheme that lets several workers share, stop and resume a benchmark table
(benchmarks/resumable.py, used by the paper table's and the baselines' runners)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

RESUMABLE = Path(__file__).resolve().parents[1] / "benchmarks" / "resumable.py"


def _load():
    spec = importlib.util.spec_from_file_location("resumable", RESUMABLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


resumable = _load()


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_run_is_written_whole_once_and_its_lock_removed(tmp_path):
    calls = []

    def work():
        calls.append(1)
        return {"map": 0.5}

    logged = []
    assert resumable.run_claimed(tmp_path, "a", work, logged.append) == {"map": 0.5}
    assert json.loads((tmp_path / "a.json").read_text()) == {"map": 0.5}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no lock, no temporary file
    assert logged and logged[0].startswith("a: done")
    # run again: skipped, the work is not repeated
    assert resumable.run_claimed(tmp_path, "a", work, logged.append) is None
    assert len(calls) == 1


def test_a_live_workers_run_is_left_alone(tmp_path):
    (tmp_path / "a.lock").write_text(str(os.getppid()))
    assert resumable.run_claimed(tmp_path, "a", lambda: pytest.fail("ran"), print) is None
    assert (tmp_path / "a.lock").read_text() == str(os.getppid())
    assert not (tmp_path / "a.json").exists()


@pytest.mark.parametrize("content", ["dead", "", "not a pid"])
def test_a_dead_or_unreadable_lock_is_taken_over(tmp_path, content):
    (tmp_path / "a.lock").write_text(str(_dead_pid()) if content == "dead" else content)
    assert resumable.run_claimed(tmp_path, "a", lambda: {"ok": True}, print) == {"ok": True}
    assert (tmp_path / "a.json").exists() and not (tmp_path / "a.lock").exists()


def test_a_failed_run_leaves_no_result_and_no_lock(tmp_path):
    def work():
        assert (tmp_path / "a.lock").read_text() == str(os.getpid())  # held while running
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError):
        resumable.run_claimed(tmp_path, "a", work, print)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_two_workers_side_by_side_run_every_job_exactly_once(tmp_path):
    worker = textwrap.dedent(
        f"""
        import importlib.util, os, sys, time
        from pathlib import Path
        spec = importlib.util.spec_from_file_location("resumable", {str(RESUMABLE)!r})
        resumable = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(resumable)
        runs = Path(sys.argv[1])

        def work(name):
            with open(runs / "ran.log", "a") as log:
                log.write(name + "\\n")
            time.sleep(0.02)
            return {{"pid": os.getpid()}}

        for i in range(12):
            name = f"job{{i}}"
            resumable.run_claimed(runs, name, lambda n=name: work(n), lambda m: None)
        """
    )
    workers = [subprocess.Popen([sys.executable, "-c", worker, str(tmp_path)]) for _ in range(2)]
    for w in workers:
        assert w.wait(timeout=60) == 0
    ran = (tmp_path / "ran.log").read_text().split()
    assert sorted(ran) == sorted(f"job{i}" for i in range(12))  # each once, none lost
    pids = {json.loads((tmp_path / f"job{i}.json").read_text())["pid"] for i in range(12)}
    assert pids <= {w.pid for w in workers}
    assert not list(tmp_path.glob("*.lock"))
