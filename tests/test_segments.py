"""The segmented code store: appends write a new segment and a small main file of virtual
datasets (plain h5py reads them), old single-file stores still open and grow, a folder can
be moved, interrupted appends leave the old store, compaction merges the segments, and an
encode launched by torchrun on 2 processes writes the store one process writes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch
from conftest import write_class_images
from serve_helpers import free_port

from hashkit import segments
from hashkit.bundle import Bundle, save_bundle
from hashkit.codes import pack_codes
from hashkit.errors import DataError, HashkitError
from hashkit.index import append_code_batches, build_index, read_index, write_index
from hashkit.models import HashNet, NetworkConfig
from hashkit.segments import compact_store, segment_dir
from hashkit.store import (
    CodeStore,
    StoreWriter,
    ids_crc32,
    read_store,
    read_store_attrs,
    write_store,
)


def random_store(n=20, bits=12, seed=0, first_id=0, labels=True) -> CodeStore:
    rng = np.random.default_rng(seed)
    return CodeStore(
        codes=pack_codes(rng.random((n, bits)) > 0.5),
        ids=np.arange(first_id, first_id + n, dtype=np.int64),
        bits=bits,
        paths=[f"img/{first_id + i}.png" for i in range(n)],
        labels=rng.integers(0, 3, n) if labels else None,
        fingerprint="f" * 64,
        class_names=["a", "b", "c"],
    )


def append(path, part: CodeStore) -> None:
    with StoreWriter.append_to(path) as writer:
        writer.append(part.codes, part.ids, part.paths, part.labels)


def concat(parts: list[CodeStore]) -> dict:
    return {
        "codes": np.vstack([p.codes for p in parts]),
        "ids": np.concatenate([p.ids for p in parts]),
        "paths": [x for p in parts for x in p.paths],
        "labels": None if parts[0].labels is None else np.concatenate([p.labels for p in parts]),
    }


def assert_holds(path, expected: dict) -> None:
    store = read_store(path)
    assert np.array_equal(store.codes, expected["codes"])
    assert np.array_equal(store.ids, expected["ids"])
    assert store.paths == expected["paths"]
    if expected["labels"] is None:
        assert store.labels is None
    else:
        assert np.array_equal(store.labels, expected["labels"])


def grown_store(tmp_path, appends=2, labels=True):
    path = tmp_path / "s.h5"
    parts = [random_store(labels=labels)]
    write_store(path, parts[0])
    for k in range(appends):
        parts.append(random_store(n=5, seed=k + 1, first_id=20 + 5 * k, labels=labels))
        append(path, parts[-1])
    return path, parts


def test_appends_add_one_segment_each_and_plain_h5py_reads_one_dataset(tmp_path):
    path, parts = grown_store(tmp_path)
    expected = concat(parts)
    with h5py.File(path, "r") as f:
        assert f["codes"].is_virtual and f.attrs["layout"] == "segmented"
        assert np.array_equal(f["codes"][...], expected["codes"])
        assert f["ids"][...].tolist() == expected["ids"].tolist()
        assert [p.decode() for p in f["paths"][...]] == expected["paths"]
        assert np.array_equal(f["labels"][...], expected["labels"])
    assert len(list(segment_dir(path).iterdir())) == 3
    assert_holds(path, expected)
    assert read_store_attrs(path)["class_names"] == '["a", "b", "c"]'


def test_an_append_leaves_every_existing_segment_untouched(tmp_path):
    path, parts = grown_store(tmp_path)
    before = {p.name: (p.stat().st_ino, p.read_bytes()) for p in segment_dir(path).iterdir()}
    main_size = path.stat().st_size
    append(path, random_store(n=5, seed=9, first_id=100))
    after = {p.name: (p.stat().st_ino, p.read_bytes()) for p in segment_dir(path).iterdir()}
    assert {k: after[k] for k in before} == before and len(after) == len(before) + 1
    assert path.stat().st_size < main_size + 4096  # the main file holds mappings, not rows


def test_the_first_append_to_a_single_file_store_links_it_as_a_segment(tmp_path):
    path = tmp_path / "s.h5"
    write_store(path, random_store())
    inode = path.stat().st_ino
    append(path, random_store(n=5, seed=1, first_id=20))
    first = [p for p in segment_dir(path).iterdir() if p.name.endswith("-0.h5")]
    assert len(first) == 1 and first[0].stat().st_ino == inode  # a hard link, not a copy


def test_a_moved_folder_still_reads_from_any_working_directory(tmp_path, monkeypatch):
    folder = tmp_path / "a"
    folder.mkdir()
    path, parts = grown_store(folder)
    shutil.move(folder, tmp_path / "b")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert_holds(tmp_path / "b" / "s.h5", concat(parts))


def test_a_missing_segment_is_one_data_error_not_zeros(tmp_path):
    path, _ = grown_store(tmp_path)
    victim = sorted(segment_dir(path).iterdir())[0]
    victim.unlink()
    with pytest.raises(DataError, match=f"segment {victim} is missing"):
        read_store(path)


def test_an_append_that_fails_after_its_segment_leaves_the_old_store_and_no_segment(
    tmp_path, monkeypatch
):
    path, parts = grown_store(tmp_path, appends=1)
    before = {p.name: p.read_bytes() for p in segment_dir(path).iterdir()}
    main = path.read_bytes()

    def broken(*args, **kwargs):
        raise HashkitError("cannot write: disk full")

    monkeypatch.setattr(segments, "build_main", broken)
    with pytest.raises(HashkitError, match="disk full"):
        append(path, random_store(n=5, seed=7, first_id=50))
    assert path.read_bytes() == main
    assert {p.name: p.read_bytes() for p in segment_dir(path).iterdir()} == before
    assert_holds(path, concat(parts))


def test_a_failed_first_append_leaves_a_single_file_store_and_no_segment_folder(
    tmp_path, monkeypatch
):
    path = tmp_path / "s.h5"
    write_store(path, random_store())
    before = path.read_bytes()
    monkeypatch.setattr(segments, "build_main", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        append(path, random_store(n=5, seed=1, first_id=20))
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["s.h5"]


def test_segments_left_by_a_killed_writer_are_removed_by_the_next_one(tmp_path):
    path, parts = grown_store(tmp_path, appends=1)
    orphan = segment_dir(path) / "seg-0123456789ab.h5"
    write_store(orphan, random_store(n=3, seed=5, first_id=900))  # never committed
    dead_temp = segment_dir(path) / ".seg-0123456789ab.h5.999999999.0badf00d.tmp"
    dead_temp.write_bytes(b"half")
    assert_holds(path, concat(parts))  # readers ignore what the main file does not name
    parts.append(random_store(n=5, seed=8, first_id=60))
    append(path, parts[-1])
    assert not orphan.exists() and not dead_temp.exists()
    assert_holds(path, concat(parts))


def test_a_new_store_written_over_a_segmented_one_removes_its_segments(tmp_path):
    path, _ = grown_store(tmp_path)
    replacement = random_store(n=7, seed=11)
    write_store(path, replacement)
    assert not segment_dir(path).exists()
    assert_holds(path, concat([replacement]))


def test_an_id_already_in_an_old_segment_is_refused(tmp_path):
    path, _ = grown_store(tmp_path)
    with pytest.raises(DataError, match="id 3 is already in"):
        append(path, random_store(n=2, seed=4, first_id=3))


def test_compact_merges_segments_keeping_rows_attributes_and_the_index(tmp_path, run_cli):
    path, parts = grown_store(tmp_path, labels=False)
    store = read_store(path)
    index = tmp_path / "out.faiss"
    write_index(build_index(store.codes, store.ids, 12), index, bits=12, store=path, model=None,
                store_uuid=store.attrs["uuid"])  # fmt: skip
    result = run_cli("compact", path)
    assert result.exit_code == 0
    assert result.stdout == f"compacted {path}: 3 segments into one file of 30 codes\n"
    assert not segment_dir(path).exists()
    with h5py.File(path, "r") as f:
        assert not f["codes"].is_virtual and "layout" not in f.attrs
    assert_holds(path, concat(parts))
    assert read_store_attrs(path)["uuid"] == store.attrs["uuid"]
    report = append_code_batches(index, [(random_store(n=2, seed=6).codes, ["/n0", "/n1"])])
    assert report.added == 2 and report.first_id == 30 and read_index(index)[0].ntotal == 32
    assert run_cli("compact", path).stdout.endswith(": 2 segments into one file of 32 codes\n")
    assert run_cli("compact", path).stdout == f"{path} is already one file (32 codes)\n"


def test_hashkit_add_grows_the_store_in_segments(tmp_path):
    path = tmp_path / "s.h5"
    write_store(path, random_store(labels=False))
    store = read_store(path)
    index = tmp_path / "out.faiss"
    write_index(build_index(store.codes, store.ids, 12), index, bits=12, store=path, model=None,
                store_uuid=store.attrs["uuid"])  # fmt: skip
    for k in range(2):
        batch = random_store(n=4, seed=k + 3)
        append_code_batches(index, [(batch.codes, [f"/new/{k}/{i}" for i in range(4)])])
    assert read_store_attrs(path)["layout"] == "segmented"
    assert len(list(segment_dir(path).iterdir())) == 3
    assert read_store(path).ids.tolist() == list(range(28))
    assert read_index(index)[0].ntotal == 28


def test_encode_on_two_torchrun_processes_writes_the_store_one_process_writes(tmp_path, run_cli):
    torch.manual_seed(0)
    config = NetworkConfig(bits=12, input_size=16, channels=3, mean=[0.5] * 3, std=[0.5] * 3)
    model = tmp_path / "model.pt"
    save_bundle(Bundle(config, HashNet(config).state_dict(), np.eye(12, dtype=np.float32)), model)
    write_class_images(tmp_path / "images", classes=3, per_class=3)
    one, two = tmp_path / "one.h5", tmp_path / "two.h5"
    assert run_cli("encode", "--model", model, tmp_path / "images", one, "-q").exit_code == 0
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
         "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
         "-m", "hashkit", "encode", "--model", str(model), str(tmp_path / "images"), str(two),
         "-q"],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"wrote {two}: 9 12-bit codes\n"  # once, by rank 0
    a, b = read_store(one), read_store(two)
    assert np.array_equal(a.codes, b.codes) and np.array_equal(a.ids, b.ids)
    assert a.paths == b.paths and a.labels is None and b.labels is None
    assert b.attrs["layout"] == "segmented" and len(list(segment_dir(two).iterdir())) == 2
    # the ids' checksum is recorded, so that the next add need not read the ids
    assert b.attrs["ids_crc32"] == ids_crc32(b.ids)
    assert a.fingerprint == b.fingerprint and a.bits == b.bits


KILLED_ADD = """
import os, signal, sys
import numpy as np
from hashkit import segments
from hashkit.index import append_code_batches

def killed(*args, **kwargs):  # the new segment is on disk, the main file not yet written
    os.kill(os.getpid(), signal.SIGKILL)

segments.build_main = killed
codes = np.zeros((3, 2), np.uint8)
append_code_batches(sys.argv[1], [(codes, ["/k/0.png", "/k/1.png", "/k/2.png"])])
"""


def test_an_add_killed_after_writing_its_segment_leaves_the_old_store(tmp_path):
    path, parts = grown_store(tmp_path, labels=False)
    store = read_store(path)
    index = tmp_path / "out.faiss"
    write_index(build_index(store.codes, store.ids, 12), index, bits=12, store=path, model=None,
                store_uuid=store.attrs["uuid"])  # fmt: skip
    segments_before = set(segment_dir(path).iterdir())
    result = subprocess.run([sys.executable, "-c", KILLED_ADD, str(index)], timeout=300)
    assert result.returncode == -9
    assert len(set(segment_dir(path).iterdir()) - segments_before) == 1  # the orphan
    assert_holds(path, concat(parts))
    report = append_code_batches(index, [(random_store(n=2, seed=6).codes, ["/n0", "/n1"])])
    assert report.added == 2 and read_index(index)[0].ntotal == 32
    assert len(set(segment_dir(path).iterdir()) - segments_before) == 1  # the new one only
    assert read_store(path).paths[-2:] == ["/n0", "/n1"]


def test_a_read_racing_a_compaction_reads_the_compacted_store(tmp_path, monkeypatch):
    import hashkit.store as store_module

    path, parts = grown_store(tmp_path)
    real, raced = store_module._read_store, []

    def racing(path_, *args):
        if not raced:  # the old main file is open when compaction removes its segments
            raced.append(True)
            with h5py.File(path_, "r") as old:
                compact_store(path_)
                segments.check_segments(old, path_)  # the error the old read meets
        return real(path_, *args)

    monkeypatch.setattr(store_module, "_read_store", racing)
    assert_holds(path, concat(parts))
    assert raced and not segment_dir(path).exists()
