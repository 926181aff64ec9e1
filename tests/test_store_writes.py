"""The writing side of code stores: what cannot be stored is refused with one line, an append
holds the store's lock, and a failed write leaves nothing behind."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from hashkit.errors import DataError, HashkitError
from hashkit.lock import FileLock, LockedError, lock_path
from hashkit.store import CodeStore, StoreWriter, read_store, write_store


def test_a_store_of_zero_bit_codes_is_refused(tmp_path):
    for bits in (0, -3):
        with pytest.raises(HashkitError, match="must be at least 1"):
            StoreWriter(tmp_path / "s.h5", bits)
    assert list(tmp_path.iterdir()) == []


def test_a_file_name_that_is_not_utf8_is_one_clear_error(tmp_path):
    name = os.fsdecode(b"/images/caf\xe9.png")
    with pytest.raises(DataError, match=r"cannot store the file name b'/images/caf\\xe9.png'"):
        with StoreWriter(tmp_path / "s.h5", 8) as writer:
            writer.append(np.zeros((1, 1), np.uint8), np.arange(1), [name])
    assert list(tmp_path.iterdir()) == []


def test_an_append_holds_the_stores_lock_until_it_commits(tmp_path):
    path = tmp_path / "s.h5"
    write_store(path, CodeStore(np.zeros((2, 1), np.uint8), np.arange(2), 8, paths=["a", "b"]))
    writer = StoreWriter.append_to(path)
    refused = []

    def other_writer():
        try:
            FileLock(path, wait=False).acquire()
        except LockedError as exc:
            refused.append(str(exc))

    thread = threading.Thread(target=other_writer)
    thread.start()
    thread.join(timeout=30)
    assert refused and lock_path(path).exists()
    writer.append(np.ones((1, 1), np.uint8), np.array([2]), ["c"])
    writer.close()
    assert not lock_path(path).exists()
    assert read_store(path).paths == ["a", "b", "c"]
