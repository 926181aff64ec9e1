"""Start-up: the commands that need no model never import torch, and a search reads the paths
of its hits only (a stored query image still comes first)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from hashkit.index import create_index
from hashkit.search import Searcher
from hashkit.store import StoreWriter, read_store_paths, rows_with_code

BITS = 16

# Runs `hashkit ARGS...` in this process' interpreter, then fails if torch was imported.
NO_TORCH = """
import sys
from hashkit.cli.main import main
sys.argv = ["hashkit", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    code = exc.code
else:
    code = 0
assert code in (0, None), f"exit {code}"
loaded = sorted(m for m in ("torch", "torchvision") if m in sys.modules)
assert not loaded, f"imported {loaded}"
"""
# The same, for a search of an image at the network's input size: torch, but no torchvision.
NO_TORCHVISION = NO_TORCH.replace('("torch", "torchvision")', '("torchvision",)')


def write_store(path, codes, paths=None, labels=None):
    with StoreWriter(path, BITS, label_width=None if labels is None else 0) as writer:
        writer.append(codes, np.arange(len(codes)), paths, labels)
    return path


@pytest.fixture
def store(tmp_path):
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (60, BITS // 8), dtype=np.uint8)
    labels = rng.integers(0, 3, 60)
    return write_store(tmp_path / "db.h5", codes, [f"/x/{i}.png" for i in range(60)], labels)


@pytest.mark.parametrize(
    "command",
    [
        ["search", "{index}", "--codes", "{store}", "-k", "3"],
        ["eval", "{store}", "{store}", "--top-k", "5"],
        ["info", "{store}"],
        ["info", "{index}"],
        ["build-index", "{store}", "{out}"],
    ],
    ids=["search-codes", "eval", "info-store", "info-index", "build-index"],
)
def test_commands_without_a_model_do_not_import_torch(tmp_path, store, command):
    index = tmp_path / "db.faiss"
    create_index(store, index)
    args = [a.format(index=index, store=store, out=tmp_path / "new.faiss") for a in command]
    result = subprocess.run(
        [sys.executable, "-c", NO_TORCH, *args], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() or command[0] == "build-index"


def test_read_store_paths_reads_the_rows_asked_in_their_order(store):
    rows = np.array([59, 3, 3, 0, 41])
    paths, attrs = read_store_paths(store, rows)
    assert paths == [f"/x/{r}.png" for r in rows] and attrs["bits"] == BITS
    dense = np.arange(10, 50)[::-1]
    assert read_store_paths(store, dense)[0] == [f"/x/{r}.png" for r in dense]


def test_rows_with_code_scans_the_codes(tmp_path):
    codes = np.zeros((70, BITS // 8), dtype=np.uint8)
    codes[[4, 33, 69]] = [7, 9]
    path = write_store(tmp_path / "s.h5", codes)
    assert rows_with_code(path, np.array([7, 9], np.uint8)).tolist() == [4, 33, 69]
    assert rows_with_code(path, np.array([1, 1], np.uint8)).tolist() == []


def test_a_stored_query_image_comes_first_among_many_ties(tmp_path, image_folder):
    """Every stored code equals the query's: FAISS's order among them is arbitrary, the
    query's own row (found through a symlink to it) still comes back first."""
    import torch

    from hashkit.bundle import Bundle, save_bundle
    from hashkit.models import HashNet, NetworkConfig

    root, _ = image_folder
    model = tmp_path / "m.pt"
    torch.manual_seed(0)
    config = NetworkConfig(bits=BITS, input_size=16, channels=3, mean=[0.5] * 3, std=[0.5] * 3)
    bundle = Bundle(config, HashNet(config).state_dict(), np.eye(BITS, dtype=np.float32))
    save_bundle(bundle, model)
    query = sorted(root.rglob("*.png"))[5]
    probe = tmp_path / "probe.h5"
    with StoreWriter(probe, BITS, fingerprint=bundle.fingerprint) as writer:
        writer.append(np.zeros((1, BITS // 8), np.uint8), np.arange(1), ["x"])
    create_index(probe, tmp_path / "probe.faiss", model=model)
    code = Searcher(tmp_path / "probe.faiss").encode_images([str(query)])[0]

    n, own = 500, 321
    paths = [f"/elsewhere/{i}.png" for i in range(n)]
    paths[own] = str(query)
    db = tmp_path / "db.h5"
    with StoreWriter(db, BITS, fingerprint=bundle.fingerprint) as writer:
        writer.append(np.tile(code, (n, 1)), np.arange(1000, 1000 + n), paths)
    create_index(db, tmp_path / "db.faiss", model=model)
    link = tmp_path / "link.png"
    os.symlink(query, link)

    hits = Searcher(tmp_path / "db.faiss", gpu=False).search_images([str(link)], 4)[0]
    assert [(h.rank, h.id, h.distance, h.path) for h in hits[:1]] == [
        (1, 1000 + own, 0, paths[own])
    ]
    assert len(hits) == 4 and all(h.id != 1000 + own and h.distance == 0 for h in hits[1:])
    assert all(h.path == paths[h.id - 1000] for h in hits)

    # images already at the input size (16 x 16 here) are searched without torchvision
    args = ["search", str(tmp_path / "db.faiss"), str(link), "-k", "2"]
    result = subprocess.run(
        [sys.executable, "-c", NO_TORCHVISION, *args], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert str(link) in result.stdout and paths[own] in result.stdout
