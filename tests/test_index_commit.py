"""An index, its sidecar and its code store change together or not at all: builds and adds
interrupted between any two renames (in process, and by a real kill -9), two adds at once,
--no-wait, a full disk, a reader racing a writer, and an index replaced behind its sidecar.

After any of these, a search gives the old answer or the new one, or one clear error; never
wrong paths."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch
from conftest import write_class_images

import hashkit.atomic
import hashkit.index.sidecar
import hashkit.store
from hashkit.bundle import Bundle, save_bundle
from hashkit.codes import pack_codes
from hashkit.errors import HashkitError, MismatchError
from hashkit.index import (
    append_code_batches,
    build_index,
    create_index,
    journal_path,
    prepare_index_files,
    read_index,
    write_index,
)
from hashkit.lock import lock_path
from hashkit.models import HashNet, NetworkConfig
from hashkit.search import Searcher
from hashkit.store import CodeStore, read_store, read_store_attrs, write_store

# Runs hashkit with every rename announced on stdout ("rename NAME") and held back (for
# RENAME_DELAY seconds, or until the file RENAME_GATE exists), so that a test can kill it
# between two given renames, or know that it holds its lock.
SLOW_RENAMES = """
import os, sys, time
real_replace = os.replace
def replace(src, dst):
    print("rename", os.path.basename(dst), flush=True)
    time.sleep(float(os.environ.get("RENAME_DELAY", "0")))
    gate = os.environ.get("RENAME_GATE")
    for _ in range(6000):
        if not gate or os.path.exists(gate):
            break
        time.sleep(0.05)
    return real_replace(src, dst)
os.replace = replace
from hashkit.cli.main import main
sys.argv = ["hashkit", *sys.argv[1:]]
main()
"""


def hashkit_process(*args, delay=0.3, gate=None, **kw):
    env = {**os.environ, "RENAME_DELAY": str(delay), "RENAME_GATE": str(gate or "")}
    return subprocess.Popen(
        [sys.executable, "-c", SLOW_RENAMES, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **kw,
    )


@pytest.fixture
def model(tmp_path):
    torch.manual_seed(0)
    config = NetworkConfig(bits=12, input_size=16, channels=3, mean=[0.5] * 3, std=[0.5] * 3)
    bundle = Bundle(config, HashNet(config).state_dict(), np.eye(12, dtype=np.float32))
    path = tmp_path / "model.pt"
    save_bundle(bundle, path)
    return path


@pytest.fixture
def folders(tmp_path):
    """Two image folders: the old index is built from ``a``, the new one from ``b``."""
    write_class_images(tmp_path / "a", classes=2, per_class=6)
    write_class_images(tmp_path / "b", classes=2, per_class=4, seed=3)
    return tmp_path / "a", tmp_path / "b"


def answer(index, queries):
    """What a search of ``queries`` returns (paths and distances), or the error it raises."""
    try:
        hits = Searcher(index, gpu=False).search_images(queries, 5)
    except HashkitError as exc:
        return f"error: {exc}"
    return [[(h.path, h.distance) for h in row] for row in hits]


@pytest.fixture
def rebuild(tmp_path, model, folders, run_cli):
    """``out.faiss`` built from folder a; the answers of the old (a) and new (b) index, and a
    function copying the old files into another folder."""
    a, b = folders
    queries = [str(sorted(a.rglob("*.png"))[0]), str(sorted(b.rglob("*.png"))[0])]
    ref = tmp_path / "ref"
    ref.mkdir()
    assert run_cli("build-index", b, ref / "out.faiss", "--model", model, "-q").exit_code == 0
    new = answer(ref / "out.faiss", queries)
    out = tmp_path / "out.faiss"
    assert run_cli("build-index", a, out, "--model", model, "-q").exit_code == 0
    old = answer(out, queries)
    assert isinstance(old, list) and isinstance(new, list) and old != new
    saved = tmp_path / "saved"
    saved.mkdir()
    names = ("out.faiss", "out.faiss.json", "out.h5")
    for name in names:
        shutil.copy2(tmp_path / name, saved / name)

    def copy_old(folder):
        folder.mkdir(exist_ok=True)
        for name in names:
            shutil.copy2(saved / name, folder / name)
        return folder / "out.faiss"

    return out, queries, old, new, copy_old


def leftovers(folder):
    return sorted(
        p.name for p in folder.iterdir() if p.name.endswith((".tmp", ".journal", ".lock"))
    )


@pytest.mark.parametrize("failing_rename", [1, 2, 3, 4])
def test_a_build_from_a_folder_dying_between_any_two_renames_leaves_old_or_new(
    tmp_path, model, folders, rebuild, run_cli, monkeypatch, failing_rename
):
    """Renames: the journal (the commit point), then store, index, sidecar."""
    out, queries, old, new, _ = rebuild
    real_replace, calls = os.replace, []

    def dies(src, dst):
        calls.append(dst)
        if len(calls) == failing_rename:
            raise KeyboardInterrupt
        return real_replace(src, dst)

    monkeypatch.setattr(hashkit.atomic.os, "replace", dies)
    run_cli("build-index", folders[1], out, "--model", model, "-q")
    monkeypatch.setattr(hashkit.atomic.os, "replace", real_replace)
    assert len(calls) == failing_rename
    assert answer(out, queries) == (old if failing_rename == 1 else new)
    append_code_batches(out, [])  # the next writer removes what the dead one left
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("failing_rename", [2, 3])
def test_a_rebuild_from_another_store_dying_between_index_and_sidecar_is_finished(
    tmp_path, monkeypatch, failing_rename
):
    """Two stores with the same ids: an index of one with the sidecar of the other would map
    every hit to the wrong path."""
    codes = pack_codes(np.random.default_rng(0).random((50, 16)) > 0.5)
    ids = np.arange(50)
    for name, folder in (("a.h5", "/a"), ("b.h5", "/b")):
        paths = [f"{folder}/{i}.png" for i in range(50)]
        write_store(
            tmp_path / name,
            CodeStore(codes if name == "a.h5" else codes[::-1].copy(), ids, 16, paths=paths),
        )
    out = tmp_path / "out.faiss"

    def write(name):
        store = read_store(tmp_path / name)
        write_index(build_index(store.codes, store.ids, 16), out, bits=16,
                    store=tmp_path / name, model=None, store_uuid=store.attrs["uuid"])  # fmt: skip

    write("a.h5")
    real_replace, calls = os.replace, []

    def dies(src, dst):
        calls.append(dst)
        if len(calls) == failing_rename:
            raise KeyboardInterrupt
        return real_replace(src, dst)

    monkeypatch.setattr(hashkit.atomic.os, "replace", dies)
    with pytest.raises(KeyboardInterrupt):
        write("b.h5")
    monkeypatch.setattr(hashkit.atomic.os, "replace", real_replace)
    assert journal_path(out).exists()
    searcher = Searcher(out, gpu=False)
    hits = searcher.search_codes(codes[-1:], 1)[0]
    assert hits[0].distance == 0 and hits[0].path == "/b/0.png"
    assert not journal_path(out).exists()


def test_an_index_replaced_behind_its_sidecars_back_is_refused(tmp_path):
    """What a crash between the index and sidecar renames left before the journal existed."""
    codes = pack_codes(np.random.default_rng(0).random((50, 16)) > 0.5)
    ids = np.arange(50)
    write_store(tmp_path / "a.h5", CodeStore(codes, ids, 16, paths=[f"/a/{i}" for i in ids]))
    out = tmp_path / "out.faiss"
    write_index(build_index(codes, ids, 16), out, bits=16, store=tmp_path / "a.h5", model=None,
                store_uuid=read_store_attrs(tmp_path / "a.h5")["uuid"])  # fmt: skip
    other = prepare_index_files(
        build_index(codes[::-1].copy(), ids, 16), out, bits=16, store=None, model=None
    )
    os.replace(other[0].tmp, out)
    other[1].discard()
    with pytest.raises(MismatchError, match="is not the index its sidecar .* was written with"):
        Searcher(out, gpu=False)


@pytest.mark.parametrize("between", ["sidecar and index", "index and store"])
def test_a_reader_racing_a_rebuild_sees_one_commit(
    tmp_path, model, folders, rebuild, monkeypatch, between
):
    """The rebuild commits after the reader read the sidecar but before the index, or after
    the index but before the store: the reader notices and reads again instead of mixing the
    two (or failing on the mix)."""
    out, queries, old, new, _ = rebuild
    module, name = (
        (hashkit.index.sidecar, "load_sidecar")
        if between == "sidecar and index"
        else (hashkit.store, "read_store")
    )
    real, raced = getattr(module, name), []

    def read_then_rebuild(path, **kw):
        result = real(path, **kw)
        if not raced:
            raced.append(path)
            create_index(folders[1], out, model=model)
        return result

    monkeypatch.setattr(module, name, read_then_rebuild)
    searcher = Searcher(out, gpu=False)
    monkeypatch.setattr(module, name, real)
    assert raced and not searcher.alignment.warning()
    assert [
        [(h.path, h.distance) for h in row] for row in searcher.search_images(queries, 5)
    ] == new


def test_a_build_killed_at_any_point_leaves_old_or_new_never_wrong_paths(
    tmp_path, model, folders, rebuild
):
    """A real kill -9 of `hashkit build-index FOLDER out.faiss` over an index of another
    folder: before the store's and the sidecar's renames (the journal, the store and the index
    are renamed before them), and at random moments. The trials run at once, each on its own
    copy of the old files."""
    _, queries, old, new, copy_old = rebuild
    rng = random.Random(0)
    trials = [("rename", 2), ("rename", 4)] + [("random", rng.uniform(0, 8)) for _ in range(2)]
    runs = []
    for i, (kind, k) in enumerate(trials):
        out = copy_old(tmp_path / f"trial{i}")
        proc = hashkit_process("build-index", folders[1], out, "--model", model, "-q")
        runs.append((kind, k, out, proc))

    def kill(kind, k, proc):
        if kind == "rename":
            renames = 0
            for line in proc.stdout:
                renames += line.startswith("rename ")
                if renames == k:  # killed before rename k
                    break
        else:
            time.sleep(k)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=300)

    threads = [threading.Thread(target=kill, args=(kind, k, proc)) for kind, k, _, proc in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    for kind, k, out, _ in runs:
        result = answer(out, queries)
        if kind == "rename":
            assert result == new, (kind, k, result)
        else:
            assert result in (old, new) or result.startswith("error: "), (kind, result)
        append_code_batches(out, [])  # the next writer removes what the dead one left
        assert leftovers(out.parent) == [], (kind, k)


def test_two_adds_at_once_lose_and_duplicate_nothing(tmp_path, model, folders, run_cli):
    base, _ = folders
    write_class_images(tmp_path / "x", classes=2, per_class=3, seed=5)
    write_class_images(tmp_path / "y", classes=2, per_class=3, seed=6)
    out = tmp_path / "out.faiss"
    assert run_cli("build-index", base, out, "--model", model, "-q").exit_code == 0
    # Both start at once; whichever locks the index first is held back at its commit until
    # the other says that it waits.
    procs = {
        name: hashkit_process("add", out, tmp_path / name, "-q", delay=0, gate=tmp_path / "go")
        for name in ("x", "y")
    }
    holder = None
    deadline = time.monotonic() + 300
    while holder is None and time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            pid = lock_path(out).read_text().split(" ")[0]
            holder = next((p for p in procs.values() if str(p.pid) == pid), None)
        if all(p.poll() is not None for p in procs.values()):
            break
        time.sleep(0.05)
    assert holder is not None, [p.communicate() for p in procs.values()]
    first, second = holder, next(p for p in procs.values() if p is not holder)
    for _ in range(50):  # libraries may warn on stderr first
        waiting = second.stderr.readline()
        if not waiting or waiting.startswith("hashkit:"):
            break
    (tmp_path / "go").touch()
    assert waiting == (
        f"hashkit: waiting for the lock on {out} held by pid {first.pid} (hashkit add) ...\n"
    )
    outs = [p.communicate(timeout=300) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outs
    store = read_store(tmp_path / "out.h5")
    expected = {str(p) for d in (base, tmp_path / "x", tmp_path / "y") for p in d.rglob("*.png")}
    assert sorted(store.paths) == sorted(expected)
    assert len(set(store.ids.tolist())) == len(store.ids) == len(expected)
    assert read_index(out)[0].ntotal == len(expected)
    assert leftovers(tmp_path) == []


def test_no_wait_fails_at_once_with_one_line_while_another_writer_holds_the_index(
    tmp_path, model, folders, run_cli
):
    base, more = folders
    out = tmp_path / "out.faiss"
    assert run_cli("build-index", base, out, "--model", model, "-q").exit_code == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom hashkit.lock import FileLock\n"
         "with FileLock(sys.argv[1], purpose='hashkit add'):\n"
         "    print('locked', flush=True); sys.stdin.read()", str(out)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline() == "locked\n"
        for args in (("add", out, more), ("build-index", more, out, "--model", model)):
            result = run_cli(*args, "--no-wait", "-q")
            assert result.exit_code == 1
            assert result.stderr == (
                f"hashkit: error: {out} is locked by pid {holder.pid} (hashkit add); try again "
                "when it is done (or wait for it: leave out --no-wait)\n"
            )
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


LIMIT_FILE_SIZE = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit then fail with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))
"""
LIMITED_CLI = (
    LIMIT_FILE_SIZE
    + """
from hashkit.cli.main import main
sys.argv = ["hashkit", *sys.argv[2:]]
main()
"""
)
LIMITED_WRITE_STORE = (
    LIMIT_FILE_SIZE
    + """
from hashkit.errors import HashkitError
from hashkit.store import read_store, write_store
try:
    write_store(sys.argv[2], read_store(sys.argv[3]))
except HashkitError as exc:
    sys.exit(f"error: {exc}")
"""
)


def run_limited(script, limit, *args):
    return subprocess.run(
        [sys.executable, "-c", script, str(limit), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_full_disk_is_one_clear_error_and_leaves_the_old_files(tmp_path):
    """Writes fail with EFBIG past a file size limit, as on a full disk: HDF5 used to crash
    the process (SIGSEGV) and FAISS's error named the temporary file."""
    rng = np.random.default_rng(0)
    n = 100_000  # a 4 MB store and a 1.6 MB index, over the limit
    big = CodeStore(pack_codes(rng.random((n, 64)) > 0.5), np.arange(n), 64,
                    paths=[f"/img/{i:06d}.png" for i in range(n)])  # fmt: skip
    write_store(tmp_path / "big.h5", big)
    small = CodeStore(big.codes[:10], big.ids[:10], 64, paths=big.paths[:10])
    write_store(tmp_path / "small.h5", small)
    out = tmp_path / "out.faiss"
    write_index(build_index(small.codes, small.ids, 64), out, bits=64,
                store=tmp_path / "small.h5", model=None,
                store_uuid=read_store_attrs(tmp_path / "small.h5")["uuid"])  # fmt: skip
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    limit = 1200 * 1024  # more than the 1 MiB HDF5 files start with
    result = run_limited(LIMITED_CLI, limit, "build-index", tmp_path / "big.h5", out)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"hashkit: error: cannot write {out}: File too large\n"
    target = tmp_path / "small.h5"
    result = run_limited(LIMITED_WRITE_STORE, limit, target, tmp_path / "big.h5")
    assert result.returncode == 1
    assert result.stderr == f"error: cannot write {target}: File too large\n"
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
