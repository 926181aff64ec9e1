"""The command line's error rule (docs/cli.md, "Errors and exit codes"), checked on a table of
bad invocations of every command:

- an option value wrong by itself is Click's usage error: exit 2, "Usage: ... Error: ...";
- anything wrong with files or data: exactly one stderr line ``hashkit: error: ...``, exit 1;
- never a traceback (no exception escapes the command), and every file that existed before
  the command is still there, byte for byte, with no new file left behind.

Each case builds its own bad files (zero-byte or malformed bundles, sidecars, stores, .npy
arrays, non-UTF-8 names) in a fresh folder. ``NEEDS_LIBRARY_FIX`` holds cases that need a fix
in the library (validation owned by other parts of hashkit); they run like the others.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys
import traceback
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import write_class_images

from hashkit.bundle import Bundle, save_bundle
from hashkit.cli.main import _registered, one_line
from hashkit.codes import pack_codes
from hashkit.encode import encode_files_to_store, find_images
from hashkit.errors import DataError
from hashkit.index import journal_path, sidecar_path
from hashkit.models import HashNet, NetworkConfig
from hashkit.store import CodeStore, write_store

BITS = 12
NON_UTF8 = os.fsdecode(b"caf\xe9")  # a Latin-1 file name, as a POSIX argv delivers it


# -- the shared world: a model, an image folder, a store, an index, labelled stores ----------


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    torch.manual_seed(0)
    config = NetworkConfig(bits=BITS, input_size=16, channels=3, mean=[0.5] * 3, std=[0.5] * 3)
    bundle = Bundle(config, HashNet(config).state_dict(), np.eye(BITS, dtype=np.float32))
    save_bundle(bundle, root / "model.pt")
    write_class_images(root / "images", classes=2, per_class=4)
    split = {"train": [1, 2, 3, 5, 6, 7], "query": [0, 4], "database": [1, 2, 3, 5, 6, 7]}
    (root / "split.json").write_text(json.dumps(split))
    encode_files_to_store(bundle, find_images(root / "images"), root / "codes.h5", device="cpu")
    result = invoke("build-index", root / "codes.h5", root / "index.faiss", "-q")
    assert result.exit_code == 0, result.output
    rng = np.random.default_rng(0)
    for name, n in (("query.h5", 5), ("db.h5", 40)):
        codes = pack_codes(rng.integers(0, 2, (n, BITS)))
        labels = rng.integers(0, 3, n).astype(np.int64)
        write_store(root / name, CodeStore(codes=codes, ids=np.arange(n), bits=BITS, labels=labels))
    np.save(root / "queries.npy", pack_codes(rng.integers(0, 2, (3, BITS))))
    return SimpleNamespace(
        root=root,
        model=root / "model.pt",
        images=root / "images",
        image=root / "images" / "class0" / "000.png",
        split=root / "split.json",
        store=root / "codes.h5",
        index=root / "index.faiss",
        query=root / "query.h5",
        db=root / "db.h5",
        npy=root / "queries.npy",
    )


def invoke(*args):
    return CliRunner().invoke(_registered(), [str(a) for a in args], prog_name="hashkit")


# -- makers of bad files, each in the case's own folder ------------------------------------


def put(t: Path, name: str, data: bytes = b"") -> Path:
    path = t / name
    path.write_bytes(data)
    return path


def h5(t: Path, name: str, attrs: dict | None = None, **datasets) -> Path:
    path = t / name
    with h5py.File(path, "w") as f:
        for key, value in datasets.items():
            f[key] = value
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
    return path


def labelled(t: Path, name: str, labels, n: int = 6) -> Path:
    codes = pack_codes(np.random.default_rng(1).integers(0, 2, (n, BITS)))
    return h5(t, name, {"bits": BITS, "bit_order": "little"}, codes=codes, labels=labels)


def bundle_file(t: Path, name: str, payload) -> Path:
    path = t / name
    torch.save(payload, path)
    return path


def good_payload(w) -> dict:
    return torch.load(w.model, weights_only=True)


def index_with_sidecar(w, t: Path, sidecar: bytes) -> Path:
    """A copy of the world's good index, beside a sidecar holding ``sidecar``."""
    index = put(t, "idx.faiss", w.index.read_bytes())
    put(t, "idx.faiss.json", sidecar)
    return index


def sidecar_of(w, **changes) -> bytes:
    meta = json.loads((w.root / "index.faiss.json").read_text())
    meta["store"] = str(w.store)
    meta.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del meta[key]
    return json.dumps(meta).encode()


def index_with_store(w, t: Path, store: Path) -> Path:
    """A copy of the world's index whose sidecar names ``store``."""
    return index_with_sidecar(w, t, sidecar_of(w, store=str(store)))


# -- the table ----------------------------------------------------------------------------

OK = 0  # the input is odd but valid: the command must work
FILE = 1  # a file or the data is wrong: one "hashkit: error:" line
USAGE = 2  # the command line is wrong by itself: Click's usage error


def case(name, expected, make, *words, absent=(), process=False):
    """One bad invocation: ``make(w, t)`` returns its arguments (``t``: the case's own empty
    folder); ``expected`` an exit code or a tuple of acceptable ones; ``words`` must appear in
    the last stderr line and ``absent`` must not. ``process``: run in a child process (the
    case may crash or hang)."""
    return pytest.param(make, expected, words, absent, process, id=name)


# What PyTorch advises when weights_only=True refuses a file: hashkit must never pass it on.
PYTORCH_ADVICE = ("weights_only", "still be loaded", "Re-running")


def train_on_images(w, t, *more):
    args = ["train", "--data", w.images, "--split", w.split, "--epochs", "1"]
    return [*args, "--batch-size", "4", "--per-class", "2", "--out", t / "m.pt", "-q", *more]


def build_with_model(w, t, payload) -> list:
    return ["build-index", w.images, t / "o.faiss", "--model", bundle_file(t, "m.pt", payload)]


def build_from_store(t, attrs, **datasets) -> list:
    return ["build-index", h5(t, "c.h5", attrs, **datasets), t / "o.faiss"]


def info_of(t, bits=16, fill=0, class_names=None, **datasets) -> list:
    """``hashkit info`` of a 3-code store in ``t`` with ``datasets`` (ids, labels) added."""
    attrs = {"bits": bits, "bit_order": "little"}
    if class_names is not None:
        attrs["class_names"] = class_names
    codes = np.full((3, 2), fill, np.uint8)
    return [
        "info",
        h5(t, "c.h5", attrs, codes=codes, **{k: np.array(v) for k, v in datasets.items()}),
    ]


def search_codes(w, path) -> list:
    return ["search", w.index, "--codes", path]


def search_with_sidecar(w, t, sidecar: bytes) -> list:
    return ["search", index_with_sidecar(w, t, sidecar), w.image]


def search_with_store(w, t, **datasets) -> list:
    store = h5(t, "c.h5", {"bits": BITS}, **datasets)
    return ["search", index_with_store(w, t, store), "--codes", w.npy]


CASES = [
    # the command line itself is wrong: exit 2, before any work
    case("train-lr-nan", USAGE, lambda w, t: ["train", "--lr", "nan"], "--lr"),
    case("train-lr-inf", USAGE, lambda w, t: ["train", "--lr", "inf"], "--lr"),
    case("train-lr-negative", USAGE, lambda w, t: ["train", "--lr", "-0.1"], "--lr"),
    case("train-lr-zero", USAGE, lambda w, t: ["train", "--lr", "0"], "--lr"),
    case("train-weight-decay-nan", USAGE, lambda w, t: ["train", "--weight-decay", "nan"]),
    case("train-alpha-nan", USAGE, lambda w, t: ["train", "--alpha", "nan"], "--alpha"),
    case("train-bits-1", USAGE, lambda w, t: ["train", "--bits", "1"], "--bits"),
    case("train-bits-0", USAGE, lambda w, t: ["train", "--bits", "0"], "--bits"),
    case("train-epochs-0", USAGE, lambda w, t: ["train", "--epochs", "0"], "--epochs"),
    case("train-seed-negative", USAGE, lambda w, t: ["train", "--seed", "-1"], "--seed"),
    case("train-split-seed-negative", USAGE, lambda w, t: ["train", "--split-seed", "-1"]),
    case(
        "train-protocol-and-split-file",
        USAGE,
        lambda w, t: ["train", "--data", w.images, "--split", w.split, "--protocol", "unseen"],
        "--protocol",
    ),
    case(
        "encode-split-seed-and-split-file",
        USAGE,
        lambda w, t: [
            "encode",
            "--model",
            w.model,
            "--data",
            w.images,
            t / "c.h5",
            "--split",
            w.split,
            "--split-seed",
            "3",
        ],
        "--split-seed",
    ),
    case("train-unknown-loss", USAGE, lambda w, t: ["train", "--loss", "hinge"], "--loss"),
    case("train-device-gpu7", USAGE, lambda w, t: ["train", "--device", "gpu7"], "gpu7"),
    case("train-unknown-option", USAGE, lambda w, t: ["train", "--bitz", "3"], "--bitz"),
    case("unknown-command", USAGE, lambda w, t: ["frobnicate"], "frobnicate"),
    case("encode-batch-size-0", USAGE, lambda w, t: ["encode", "--batch-size", "0"]),
    case("encode-workers-negative", USAGE, lambda w, t: ["encode", "--workers", "-1"]),
    case("encode-device-cuda-x", USAGE, lambda w, t: ["encode", "--device", "cuda:x"]),
    case(
        "encode-three-arguments",
        USAGE,
        lambda w, t: ["encode", "--model", w.model, w.images, w.images, t / "c.h5"],
    ),
    case(
        "encode-data-twice",
        USAGE,
        lambda w, t: ["encode", "--model", w.model, w.images, t / "c.h5", "--data", w.images],
    ),
    case(
        "build-index-nlist-0", USAGE, lambda w, t: ["build-index", w.store, t / "o", "--nlist", 0]
    ),
    case("build-index-nprobe-0", USAGE, lambda w, t: ["build-index", "--nprobe", 0]),
    case("build-index-nflip-negative", USAGE, lambda w, t: ["build-index", "--nflip", "-1"]),
    case("build-index-hash-bits-0", USAGE, lambda w, t: ["build-index", "--hash-bits", "0"]),
    case("build-index-hnsw-m-1", USAGE, lambda w, t: ["build-index", "--hnsw-m", "1"]),
    case("build-index-hnsw-m-huge", USAGE, lambda w, t: ["build-index", "--hnsw-m", 10**9]),
    case(
        "build-index-ef-search-past-int32",
        USAGE,
        lambda w, t: ["build-index", "--ef-search", 2**31],
    ),
    case(
        "search-nprobe-past-int32", USAGE, lambda w, t: [*search_codes(w, w.npy), "--nprobe", 2**31]
    ),
    case("build-index-unknown-type", USAGE, lambda w, t: ["build-index", "--type", "lsh"]),
    case("search-k-0", USAGE, lambda w, t: [*search_codes(w, w.npy), "-k", "0"], "-k"),
    case("search-k-negative", USAGE, lambda w, t: [*search_codes(w, w.npy), "-k", "-5"], "-k"),
    case("search-k-huge", USAGE, lambda w, t: [*search_codes(w, w.npy), "-k", 2**63], "-k"),
    case("search-nprobe-0", USAGE, lambda w, t: [*search_codes(w, w.npy), "--nprobe", "0"]),
    case("search-nflip-negative", USAGE, lambda w, t: [*search_codes(w, w.npy), "--nflip", -1]),
    case("search-device-gpu7", USAGE, lambda w, t: ["search", w.index, "--device", "gpu7"]),
    case("search-unknown-format", USAGE, lambda w, t: ["search", w.index, "--format", "xml"]),
    case("search-no-query", USAGE, lambda w, t: ["search", w.index], "--codes"),
    case(
        "search-images-and-codes",
        USAGE,
        lambda w, t: [*search_codes(w, w.npy), w.image],
        "--codes",
    ),
    case(
        "search-json-and-csv",
        USAGE,
        lambda w, t: [*search_codes(w, w.npy), "--json", "--format", "csv"],
        "--json",
    ),
    case("eval-top-k-huge", USAGE, lambda w, t: ["eval", w.query, w.db, "--top-k", 2**63]),
    case("eval-top-k-0", USAGE, lambda w, t: ["eval", w.query, w.db, "--top-k", "0"]),
    case("eval-threads-0", USAGE, lambda w, t: ["eval", w.query, w.db, "--threads", "0"]),
    case("bench-bits-1", USAGE, lambda w, t: ["bench", "--bits", "1"], "--bits"),
    case("bench-device-tpu", USAGE, lambda w, t: ["bench", "--device", "tpu"], "tpu"),
    case("export-limit-0", USAGE, lambda w, t: ["export-images", "--limit", "0", "--out", t]),
    case("export-out-missing", USAGE, lambda w, t: ["export-images"], "--out"),
    # files, data or the machine are wrong: exit 1, one line
    case("info-missing", FILE, lambda w, t: ["info", t / "nothing.pt"], "nothing.pt"),
    case("info-zero-byte", FILE, lambda w, t: ["info", put(t, "empty.pt")], "empty.pt"),
    case("info-garbage", FILE, lambda w, t: ["info", put(t, "x.bin", b"\0junk" * 50)], "x.bin"),
    case("info-a-folder", FILE, lambda w, t: ["info", t], "directory"),
    case("info-non-utf8-name", FILE, lambda w, t: ["info", put(t, NON_UTF8 + ".h5")], "caf"),
    case("info-newline-in-name", FILE, lambda w, t: ["info", put(t, "a\nb.pt")], "a\\nb.pt"),
    # info checks a store's values as every reader does (docs/formats.md, "What reading checks")
    case("info-store-repeated-ids", FILE, lambda w, t: info_of(t, ids=[0, 1, 1]), "distinct"),
    case("info-store-negative-ids", FILE, lambda w, t: info_of(t, ids=[0, -1, 2]), ">= 0"),
    case("info-store-padding-bit", FILE, lambda w, t: info_of(t, bits=12, fill=255), "c.h5"),
    case(
        "info-store-bad-class-names",
        FILE,
        lambda w, t: info_of(t, class_names="cat,dog"),
        "class_names",
    ),
    case("info-store-bad-labels", FILE, lambda w, t: info_of(t, labels=[0.5, 1, 2]), "labels"),
    case("info-zero-byte-h5", FILE, lambda w, t: ["info", put(t, "codes.h5")], "codes.h5"),
    case(
        "info-index-whose-store-is-zero-bytes",
        OK,  # the index is described, and a warning line says what is wrong with its store
        lambda w, t: ["info", index_with_store(w, t, put(t, "c.h5"))],
        "c.h5",
    ),
    case("search-missing-index", FILE, lambda w, t: ["search", t / "none.faiss", w.image]),
    case("search-missing-query", FILE, lambda w, t: ["search", w.index, t / "none.png"]),
    case(
        "search-query-not-an-image",
        FILE,
        lambda w, t: ["search", w.index, put(t, "q.png", b"x")],
        "q.png",
    ),
    case("search-zero-byte-index", FILE, lambda w, t: ["search", put(t, "e.faiss"), w.image]),
    case("search-zero-byte-sidecar", FILE, lambda w, t: search_with_sidecar(w, t, b"")),
    case(
        "search-sidecar-of-another-format",
        FILE,
        lambda w, t: search_with_sidecar(w, t, sidecar_of(w, format="x")),
    ),
    case(
        "search-store-ids-2d",
        FILE,
        lambda w, t: search_with_store(
            w, t, codes=np.zeros((8, 2), np.uint8), ids=np.zeros((8, 2), np.int64)
        ),
    ),
    case("search-codes-zero-byte-h5", FILE, lambda w, t: search_codes(w, put(t, "q.h5")), "q.h5"),
    case(
        "search-codes-of-other-bits",
        FILE,
        lambda w, t: search_codes(w, h5(t, "q.h5", {"bits": 32}, codes=np.zeros((2, 4), "u1"))),
        "32 bits",
    ),
    case(
        "search-codes-npy-float",
        FILE,
        lambda w, t: search_codes(w, save_npy(t, np.zeros((2, 2), np.float32))),
        "q.npy",
    ),
    case(
        "search-codes-npy-1d",
        FILE,
        lambda w, t: search_codes(w, save_npy(t, np.zeros(4, np.uint8))),
        "q.npy",
    ),
    case(
        "search-model-not-a-bundle",
        FILE,
        lambda w, t: ["search", w.index, w.image, "--model", bundle_file(t, "m.pt", {"a": 1})],
        "m.pt",
    ),
    case(
        "search-device-absent",
        FILE,
        lambda w, t: ["search", w.index, w.image, "--device", "cuda:99"],
        "cuda:99",
    ),
    case("search-out-is-a-folder", FILE, lambda w, t: [*search_codes(w, w.npy), "--out", t]),
    case(
        "search-out-below-a-file",
        FILE,
        lambda w, t: [*search_codes(w, w.npy), "--out", w.image / "hits.csv"],
        "000.png",
    ),
    case(
        "search-out-a-pipe",
        FILE,
        lambda w, t: [*search_codes(w, w.npy), "--out", fifo(t)],
        "regular file",
    ),
    case(
        "build-index-out-a-pipe",
        FILE,
        lambda w, t: ["build-index", w.store, fifo(t)],
        "regular file",
    ),
    case(
        "encode-out-a-pipe",
        FILE,
        lambda w, t: ["encode", "--model", w.model, w.images, fifo(t)],
        "regular file",
    ),
    case(
        "encode-out-is-a-folder",
        FILE,
        lambda w, t: ["encode", "--model", w.model, w.images, t],
        "directory",
    ),
    case("train-out-a-pipe", FILE, lambda w, t: ["train", "--out", fifo(t)], "regular file"),
    case("build-index-missing-source", FILE, lambda w, t: ["build-index", t / "no", t / "o"]),
    case(
        "build-index-folder-without-model",
        FILE,
        lambda w, t: ["build-index", w.images, t / "o.faiss"],
        "--model",
    ),
    case(
        "build-index-zero-byte-store",
        FILE,
        lambda w, t: ["build-index", put(t, "c.h5"), t / "o.faiss"],
        "c.h5",
    ),
    case(
        "build-index-store-without-codes",
        FILE,
        lambda w, t: build_from_store(t, {"bits": 12}, ids=np.arange(3)),
        "codes",
    ),
    case(
        "build-index-store-1d-codes",
        FILE,
        lambda w, t: build_from_store(t, {"bits": 8}, codes=np.zeros(5, np.uint8)),
        "codes",
    ),
    case(
        "build-index-store-bits-disagree",
        FILE,
        lambda w, t: build_from_store(t, {"bits": 64}, codes=np.zeros((3, 2), np.uint8)),
        "bits=64",
    ),
    case(
        "build-index-factory-nonsense",
        FILE,
        lambda w, t: ["build-index", w.store, t / "o.faiss", "--factory", "Nonsense"],
        "Nonsense",
    ),
    case("build-index-out-is-a-folder", FILE, lambda w, t: ["build-index", w.store, t]),
    case(
        "build-index-model-of-other-bits",
        FILE,
        lambda w, t: ["build-index", w.store, t / "o.faiss", "--model", other_bits_model(t)],
        "16 bits",
    ),
    case(
        "build-index-hash-bits-above-the-code-bits",
        FILE,
        lambda w, t: ["build-index", w.store, t / "m", "--type", "multihash", "--hash-bits", 13],
        "codes of 12 bits",
    ),
    case(
        "build-index-hash-factory-past-the-code-bits",
        FILE,
        lambda w, t: ["build-index", w.store, t / "mh.faiss", "--factory", "BHash2x7"],
        "2 x 7 bits do not fit codes of 12 bits",
    ),
    case(
        "build-index-codes-over-a-source-image",
        FILE,
        lambda w, t: [
            "build-index",
            own_images(w, t),
            t / "o.faiss",
            "--model",
            w.model,
            "--codes",
            own_images(w, t) / "class0" / "000.png",
        ],
        "a source image",
    ),
    case(
        "build-index-out-over-a-source-image",
        FILE,
        lambda w, t: [
            "build-index",
            own_images(w, t),
            t / "imgs" / ".." / "imgs" / "class1" / "001.png",
            "--model",
            w.model,
        ],
        "a source image",
    ),
    case(
        "build-index-out-is-another-index-sidecar",
        FILE,
        lambda w, t: ["build-index", w.store, sidecar_path(own(w, t).index)],
        "the sidecar of the index",
    ),
    case(
        "build-index-folder-out-is-another-index-sidecar",
        FILE,
        lambda w, t: ["build-index", w.images, sidecar_path(own(w, t).index), "--model", w.model],
        "the sidecar of the index",
    ),
    case(
        "build-index-out-is-another-index-journal",
        FILE,
        lambda w, t: ["build-index", w.store, journal_path(own(w, t).index)],
        "the journal of the index",
    ),
    case(
        "build-index-codes-is-another-index-sidecar",
        FILE,
        lambda w, t: [
            "build-index",
            w.images,
            t / "o.faiss",
            "--model",
            w.model,
            "--codes",
            sidecar_path(own(w, t).index),
        ],
        "the sidecar of the index",
    ),
    case("add-images-is-a-file", FILE, lambda w, t: ["add", w.index, w.image], "IMAGES"),
    case("add-missing-index", FILE, lambda w, t: ["add", t / "none.faiss", w.images]),
    case(
        "add-ids-past-int64",
        FILE,
        lambda w, t: ["add", index_of_ids(t, [2**63 - 2, 5]), w.images, "--model", w.model],
        "would not fit in int64",
    ),
    case(
        "add-zero-byte-sidecar",
        FILE,
        lambda w, t: ["add", index_with_sidecar(w, t, b""), w.images],
        "idx.faiss.json",
    ),
    case(
        "encode-missing-model",
        FILE,
        lambda w, t: ["encode", "--model", t / "m.pt", w.images, t / "c.h5"],
        "m.pt",
    ),
    case(
        "encode-folder-with-part",
        FILE,
        lambda w, t: ["encode", "--model", w.model, w.images, t / "c.h5", "--part", "query"],
        "--part",
    ),
    case(
        "encode-folder-with-split",
        FILE,
        lambda w, t: ["encode", "--model", w.model, w.images, t / "c.h5", "--split", w.split],
        "--split",
    ),
    # train's outputs never replace its inputs, nor each other (the checkpoint is removed at
    # the end: an --out equal to it would be lost)
    case(
        "train-out-is-the-checkpoint",
        FILE,
        lambda w, t: train_on_images(w, t, "--out", t / "m.ckpt"),
        "checkpoint",
    ),
    case(
        "train-checkpoint-is-the-out",
        FILE,
        lambda w, t: train_on_images(w, t, "--checkpoint", t / "m.pt"),
        "checkpoint",
    ),
    case(
        "train-out-is-the-split",
        FILE,
        lambda w, t: train_on_images(w, t, "--out", w.split),
        "split",
    ),
    case(
        "train-out-is-an-image",
        FILE,
        lambda w, t: train_on_images(w, t, "--out", w.image),
        "data folder",
    ),
    case(
        "train-checkpoint-is-another-file",
        FILE,
        lambda w, t: train_on_images(w, t, "--checkpoint", put(t, "notes.txt", b"x")),
        "--resume",
    ),
    case(
        "encode-device-absent",
        FILE,
        lambda w, t: ["encode", "--model", w.model, w.images, t / "c.h5", "--device", "cuda:99"],
        "cuda:99",
    ),
    case(
        "eval-compare-folder",
        FILE,
        lambda w, t: ["eval", w.query, w.db, "--compare", "X", w.query, t],
        "directory",
    ),
    case(
        "build-index-factory-and-type",
        USAGE,
        lambda w, t: [
            "build-index",
            w.store,
            t / "o.faiss",
            "--factory",
            "BIVF1",
            "--type",
            "hnsw",
        ],
        "--type",
    ),
    case(
        "build-index-factory-empty",
        USAGE,
        lambda w, t: ["build-index", w.store, t / "o.faiss", "--factory", ""],
        "--factory",
    ),
    case("compact-missing", FILE, lambda w, t: ["compact", t / "none.h5"], "none.h5"),
    case("compact-folder", FILE, lambda w, t: ["compact", t], "directory"),
    case(
        "export-milvus-missing",
        FILE,
        lambda w, t: ["export", "milvus", t / "none.h5", t / "m.db"],
        "none.h5",
    ),
    case("serve-missing-index", FILE, lambda w, t: ["serve", t / "none.faiss"], "none.faiss"),
    case("serve-index-is-a-folder", FILE, lambda w, t: ["serve", t], "directory"),
    case("eval-missing", FILE, lambda w, t: ["eval", t / "q.h5", w.db], "not found"),
    case("eval-zero-byte", FILE, lambda w, t: ["eval", put(t, "q.h5"), w.db], "q.h5"),
    case("eval-plot-is-a-file", FILE, lambda w, t: ["eval", w.query, w.db, "--plot", w.image]),
    case(
        "eval-plot-below-a-file",
        FILE,
        lambda w, t: ["eval", w.query, w.db, "--plot", w.image / "plots"],
        "000.png",
    ),
    case("eval-store-without-labels", FILE, lambda w, t: ["eval", w.store, w.db], "labels"),
    case(
        "train-missing-data",
        FILE,
        lambda w, t: ["train", "--data", t / "nowhere", "--out", t / "m.pt"],
        "nowhere",
    ),
    case(
        "train-zero-byte-split",
        FILE,
        lambda w, t: ["train", "--data", w.images, "--split", put(t, "s.json")],
        "s.json",
    ),
    case(
        "train-split-a-json-list",
        FILE,
        lambda w, t: ["train", "--data", w.images, "--split", put(t, "s.json", b"[]")],
        "s.json",
    ),
    case(
        "train-split-of-unknown-kind",
        FILE,
        lambda w, t: ["train", "--data", w.images, "--split", put(t, "s.txt", b"{}")],
        "s.txt",
    ),
    case(
        "train-device-absent",
        FILE,
        lambda w, t: train_on_images(w, t, "--device", "cuda:99"),
        "cuda:99",
    ),
    case("train-out-is-a-folder", FILE, lambda w, t: ["train", "--out", t], "--out"),
    case("train-root-is-a-file", FILE, lambda w, t: ["train", "--root", w.image], "--root"),
    case("export-out-is-a-file", FILE, lambda w, t: ["export-images", "--out", w.image]),
    case(
        "export-missing-data",
        FILE,
        lambda w, t: ["export-images", "--data", t / "none", "--out", t / "x"],
        "none",
    ),
]

# Cases that need a fix in the library (validation owned by other parts of hashkit). They run
# like every other case, and fail until that fix is merged.
NEEDS_LIBRARY_FIX = [
    case(
        "search-model-zero-byte",
        FILE,
        lambda w, t: ["search", w.index, w.image, "--model", put(t, "m.pt")],
        "m.pt",
    ),
    case(
        "encode-model-zero-byte",
        FILE,
        lambda w, t: ["encode", "--model", put(t, "m.pt"), w.images, t / "c.h5"],
        "m.pt",
    ),
    case(
        "bench-model-zero-byte",
        FILE,
        lambda w, t: ["bench", "--model", put(t, "m.pt"), "--out", t / "b"],
        "m.pt",
    ),
    case(
        "build-index-model-missing-keys",
        FILE,
        lambda w, t: build_with_model(w, t, {"format": "hashkit-model"}),
        "m.pt",
    ),
    case(
        "build-index-model-format-version-99",
        FILE,
        lambda w, t: build_with_model(w, t, {**good_payload(w), "format_version": 99}),
        "m.pt",
    ),
    case(
        "build-index-model-network-a-list",
        FILE,
        lambda w, t: build_with_model(w, t, {**good_payload(w), "network": [1]}),
        "m.pt",
    ),
    case(
        "build-index-model-rotation-a-string",
        FILE,
        lambda w, t: build_with_model(w, t, {**good_payload(w), "rotation": "R"}),
        "m.pt",
    ),
    case(
        "build-index-model-refused-by-weights-only",
        FILE,
        lambda w, t: build_with_model(w, t, {"format": "hashkit-model", "rotation": np.eye(2)}),
        "m.pt",
        absent=PYTORCH_ADVICE,
    ),
    case(
        "train-pretrained-refused-by-weights-only",
        FILE,
        lambda w, t: train_on_images(
            w,
            t,
            "--backbone",
            "resnet18",
            "--pretrained",
            bundle_file(t, "w.pth", {"w": np.eye(2)}),
        ),
        "w.pth",
        absent=PYTORCH_ADVICE,
    ),
    case("search-sidecar-a-json-list", FILE, lambda w, t: search_with_sidecar(w, t, b"[]")),
    case(
        "search-sidecar-not-utf8",
        FILE,
        lambda w, t: search_with_sidecar(w, t, b'{"format": "\xff"}'),
        "idx.faiss.json",
    ),
    case(
        "search-sidecar-without-bits",
        FILE,
        lambda w, t: search_with_sidecar(w, t, sidecar_of(w, bits=None)),
        "idx.faiss.json",
    ),
    case(
        "search-sidecar-bits-a-word",
        FILE,
        lambda w, t: search_with_sidecar(w, t, sidecar_of(w, bits="twelve")),
        "idx.faiss.json",
    ),
    case(
        "search-sidecar-params-a-list",
        FILE,
        lambda w, t: search_with_sidecar(w, t, sidecar_of(w, params=[1])),
        "idx.faiss.json",
    ),
    case(
        "search-store-ids-strings",
        FILE,
        lambda w, t: search_with_store(
            w, t, codes=np.zeros((8, 2), np.uint8), ids=np.array([b"a"] * 8)
        ),
        "c.h5",
    ),
    case(
        "search-codes-npy-object-array",
        FILE,
        lambda w, t: search_codes(w, save_npy(t, np.array([b"a", 1], dtype=object))),
        "q.npy",
    ),
    case("search-codes-npy-zero-byte", FILE, lambda w, t: search_codes(w, put(t, "q.npy"))),
    case(
        "search-codes-store-bits-a-word",
        FILE,
        lambda w, t: search_codes(w, h5(t, "q.h5", {"bits": "abc"}, codes=np.zeros((2, 2), "u1"))),
        "q.h5",
    ),
    case(
        "search-codes-float-store",
        FILE,
        lambda w, t: search_codes(w, h5(t, "q.h5", {"bits": BITS}, codes=np.full((2, 2), 0.5))),
        "q.h5",
    ),
    case(
        "search-out-over-the-index",
        FILE,
        lambda w, t: ["search", own(w, t).index, "--codes", w.npy, "--out", own(w, t).index],
    ),
    case(
        "search-nflip-beyond-the-hash-bits-hangs",
        FILE,
        lambda w, t: ["search", multihash_index(w, t), "--codes", w.npy, "--nflip", "100"],
        process=True,
    ),
    case(
        "build-index-factory-bhnsw1-crashes",
        FILE,
        lambda w, t: ["build-index", w.store, t / "o.faiss", "--factory", "BHNSW1"],
        process=True,
    ),
    case(
        "build-index-nflip-beyond-the-hash-bits",
        FILE,
        lambda w, t: ["build-index", w.store, t / "mh.faiss", "--type", "multihash", "--nflip", 99],
        "nflip 99",
    ),
    case(
        "build-index-factory-bivf0",
        FILE,
        lambda w, t: ["build-index", w.store, t / "o.faiss", "--factory", "BIVF0"],
        "at least 1 list",
    ),
    case(
        "build-index-store-float-codes",
        FILE,
        lambda w, t: build_from_store(t, {"bits": 16}, codes=np.full((3, 2), 0.5)),
        "c.h5",
    ),
    case(
        "build-index-store-bits-0",
        FILE,
        lambda w, t: build_from_store(t, {"bits": 0}, codes=np.zeros((3, 0), np.uint8)),
        "c.h5",
    ),
    case(
        "build-index-store-ids-strings",
        FILE,
        lambda w, t: build_from_store(
            t, {"bits": 16}, codes=np.zeros((3, 2), np.uint8), ids=np.array([b"a", b"b", b"c"])
        ),
        "c.h5",
    ),
    case(
        "build-index-store-duplicate-ids",
        FILE,
        lambda w, t: build_from_store(
            t, {"bits": 16}, codes=np.zeros((3, 2), np.uint8), ids=np.zeros(3, np.int64)
        ),
        "c.h5",
    ),
    case(
        "build-index-out-is-the-store",
        FILE,
        lambda w, t: ["build-index", own(w, t).store, own(w, t).store],
    ),
    case(
        "build-index-codes-over-the-model",
        FILE,
        lambda w, t: [
            "build-index",
            w.images,
            t / "o.faiss",
            "--model",
            own(w, t).model,
            "--codes",
            own(w, t).model,
        ],
    ),
    case(
        "encode-over-the-model",
        FILE,
        lambda w, t: ["encode", "--model", own(w, t).model, w.images, own(w, t).model],
    ),
    case(
        "encode-non-utf8-image-name",
        (OK, FILE),
        lambda w, t: ["encode", "--model", w.model, non_utf8_images(w, t), t / "c.h5"],
    ),
    case(
        "info-index-with-a-non-utf8-name",
        OK,
        lambda w, t: ["info", own(w, t, index_name=NON_UTF8 + ".faiss").index],
    ),
    case(
        "eval-labels-n-by-1",
        OK,  # N x 1 labels are class indices (docs/formats.md)
        lambda w, t: [
            "eval",
            labelled(t, "q.h5", np.zeros((6, 1))),
            labelled(t, "b.h5", np.ones((6, 1))),
        ],
    ),
    case(
        "eval-labels-nan",
        FILE,
        lambda w, t: ["eval", labelled(t, "q.h5", np.full(6, np.nan)), w.db],
    ),
    case(
        "eval-labels-strings",
        FILE,
        lambda w, t: ["eval", labelled(t, "q.h5", np.array([b"a"] * 6)), w.db],
    ),
    case(
        "eval-codes-dirty-padding",
        FILE,
        lambda w, t: [
            "eval",
            h5(
                t,
                "q.h5",
                {"bits": BITS},
                codes=np.full((6, 2), 255, np.uint8),
                labels=np.zeros(6, np.int64),
            ),
            w.db,
        ],
        "q.h5",
    ),
]


def save_npy(t: Path, array: np.ndarray) -> Path:
    path = t / "q.npy"
    np.save(path, array, allow_pickle=True)
    return path


def fifo(t: Path) -> Path:
    path = t / "out.fifo"
    os.mkfifo(path)
    return path


def other_bits_model(t: Path) -> Path:
    config = NetworkConfig(bits=16, input_size=16, channels=3, mean=[0.5] * 3, std=[0.5] * 3)
    save_bundle(Bundle(config, HashNet(config).state_dict(), np.eye(16)), t / "m16.pt")
    return t / "m16.pt"


def non_utf8_images(w, t: Path) -> Path:
    folder = t / "imgs"
    folder.mkdir()
    put(folder, NON_UTF8 + ".png", w.image.read_bytes())
    return folder


def own(w, t: Path, index_name: str = "index.faiss") -> SimpleNamespace:
    """The case's own copies of the world's model, store and index (for cases that may
    overwrite them), made once per case."""
    folder = t / "own"
    if not folder.is_dir():
        folder.mkdir()
        for name in ("model.pt", "codes.h5", "index.faiss", "index.faiss.json"):
            target = name.replace("index.faiss", index_name)
            (folder / target).write_bytes((w.root / name).read_bytes())
    return SimpleNamespace(
        model=folder / "model.pt", store=folder / "codes.h5", index=folder / index_name
    )


def index_of_ids(t: Path, ids: list[int]) -> Path:
    """An index of a store (of no model) whose codes have ``ids``."""
    n = len(ids)
    paths = np.array([f"/elsewhere/{i}.png".encode() for i in range(n)])
    attrs = {"bits": BITS, "bit_order": "little"}
    store = h5(t, "c.h5", attrs, codes=np.zeros((n, 2), np.uint8), ids=np.array(ids), paths=paths)
    result = invoke("build-index", store, t / "o.faiss", "-q")
    assert result.exit_code == 0, result.output
    return t / "o.faiss"


def own_images(w, t: Path) -> Path:
    """The case's own copy of the world's image folder (for cases that may overwrite an
    image), made once per case."""
    folder = t / "imgs"
    if not folder.is_dir():
        for image in w.images.rglob("*.png"):
            target = folder / image.relative_to(w.images)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(image.read_bytes())
    return folder


def multihash_index(w, t: Path) -> Path:
    result = invoke("build-index", w.store, t / "mh.faiss", "--type", "multihash", "-q")
    assert result.exit_code == 0, result.output
    return t / "mh.faiss"


def snapshot(*folders: Path) -> dict[str, str]:
    """Every file below ``folders`` with the sha256 of its bytes."""
    out = {}
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def run_in_a_process(args) -> SimpleNamespace:
    """``hashkit ARGS`` in a child process, killed after 30 s (a hang is a failure)."""
    command = [sys.executable, "-m", "hashkit.cli.main", *map(str, args)]
    try:
        done = subprocess.run(command, capture_output=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"hashkit {' '.join(map(str, args))} still ran after 30 s")
    stderr = done.stderr.decode("utf-8", "replace")
    return SimpleNamespace(exit_code=done.returncode, stderr=stderr, output=stderr, exception=None)


def check_case(w, tmp_path, make_args, expected, words, absent, process):
    case_dir = tmp_path / "case"
    case_dir.mkdir()
    args = make_args(w, case_dir)
    before = snapshot(w.root, case_dir)
    result = run_in_a_process(args) if process else invoke(*args)
    after = snapshot(w.root, case_dir)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        trace = "".join(traceback.format_exception(*result.exc_info))
        pytest.fail(f"hashkit {' '.join(map(str, args))} raised:\n{trace}")
    accepted = expected if isinstance(expected, tuple) else (expected,)
    assert result.exit_code in accepted, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    if result.exit_code == FILE:
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("hashkit: error: "), result.stderr
        assert lines[0].isprintable(), lines[0]
    elif result.exit_code == USAGE:
        assert lines[0].startswith("Usage: hashkit "), result.stderr
        assert lines[-1].startswith("Error: "), result.stderr
    for word in words:  # an accepted odd input may say what is odd anywhere in its output
        assert word in (result.output if result.exit_code == OK else lines[-1]), (word, result)
    for word in absent:
        assert word not in result.stderr, (word, result.stderr)
    if result.exit_code != OK:
        assert after == before, "the command changed, removed or left files"


def params(cases):
    return pytest.mark.parametrize("make_args,expected,words,absent,process", cases)


@params(CASES)
def test_bad_invocation_fails_by_the_rule_and_leaves_files_alone(
    w, tmp_path, make_args, expected, words, absent, process
):
    check_case(w, tmp_path, make_args, expected, words, absent, process)


@params(NEEDS_LIBRARY_FIX)
def test_bad_input_needing_library_validation_fails_by_the_rule(
    w, tmp_path, make_args, expected, words, absent, process
):
    check_case(w, tmp_path, make_args, expected, words, absent, process)


# -- the mechanism: which exceptions become one line ------------------------------------------


def raising(exc):
    def describe(path):
        raise exc

    return describe


@pytest.mark.parametrize(
    "exc,line",
    [
        (
            OSError(errno.ENOSPC, "No space left on device", "/data/out.h5"),
            "hashkit: error: No space left on device: /data/out.h5",
        ),
        (
            PermissionError(errno.EACCES, "Permission denied", "/data/model.pt"),
            "hashkit: error: Permission denied: /data/model.pt",
        ),
        (
            OSError(errno.EXDEV, "Invalid cross-device link", "/a/x.tmp", "/b/x"),
            None,
        ),
        (DataError("store x.h5 holds no codes"), "hashkit: error: store x.h5 holds no codes"),
        (DataError("bad path a\nb.png"), "hashkit: error: bad path a\\nb.png"),
    ],
)
def test_hashkit_errors_and_user_os_errors_are_one_line(monkeypatch, tmp_path, exc, line):
    monkeypatch.setattr("hashkit.cli.info.describe", raising(exc))
    result = invoke("info", put(tmp_path, "x.pt"))
    if line is None:  # an errno that says nothing about the user's files: a bug, kept whole
        assert result.exception is exc
        return
    assert result.exit_code == 1
    assert result.stderr == line + "\n"


@pytest.mark.parametrize(
    "exc", [OSError("Unable to open object (h5py's own OSError)"), RuntimeError("a bug")]
)
def test_other_exceptions_are_bugs_and_keep_their_traceback(monkeypatch, tmp_path, exc):
    monkeypatch.setattr("hashkit.cli.info.describe", raising(exc))
    result = invoke("info", put(tmp_path, "x.pt"))
    assert result.exception is exc


def test_ctrl_c_is_one_line_and_exit_130(monkeypatch, tmp_path):
    monkeypatch.setattr("hashkit.cli.info.describe", raising(KeyboardInterrupt()))
    result = invoke("info", put(tmp_path, "x.pt"))
    assert result.exit_code == 130
    assert result.stderr == "hashkit: interrupted; existing files were left as they were\n"


def test_a_librarys_warning_is_one_stderr_line(w, monkeypatch, capsys):
    """A warning a library raises while a command runs (PIL warns of images over 89 million
    pixels) prints as one hashkit line, not Python's two with a line of the library's code;
    the command goes on."""
    import warnings

    import hashkit.store
    from hashkit.cli.main import main

    describe = hashkit.store.describe_store

    def warn_then_describe(path):
        warnings.warn("Image size (144000000 pixels) exceeds limit", UserWarning, stacklevel=1)
        return describe(path)

    monkeypatch.setattr(hashkit.store, "describe_store", warn_then_describe)
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # restored after
    monkeypatch.setattr(sys, "argv", ["hashkit", "info", str(w.store)])
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        with pytest.raises(SystemExit) as done:
            main()
    assert done.value.code == 0
    err = capsys.readouterr().err.splitlines()
    assert err == ["hashkit: warning: UserWarning: Image size (144000000 pixels) exceeds limit"]


def test_one_line_escapes_line_breaks_and_other_control_characters():
    assert one_line("plain/path.png") == "plain/path.png"
    assert one_line("a\nb\r\tc\x1b[31m" + NON_UTF8) == "a\\nb\\r\\tc\\x1b[31mcaf\\udce9"


def test_a_real_process_prints_one_line_for_a_path_with_a_newline_and_non_utf8_bytes(tmp_path):
    name = os.fsencode(tmp_path) + b"/caf\xe9\nmodel.pt"
    with open(name, "wb"):
        pass
    done = subprocess.run(
        [sys.executable, "-m", "hashkit.cli.main", "info", name], capture_output=True, timeout=120
    )
    assert done.returncode == 1
    assert done.stdout == b""
    assert done.stderr.count(b"\n") == 1 and done.stderr.startswith(b"hashkit: error: ")
    assert b"caf\\udce9\\nmodel.pt" in done.stderr
